"""Encoding texts into the embedding cache: the encoder settings, the batch callable Ray runs, and the incremental plan and write."""
