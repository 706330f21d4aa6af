"""A model-free encoder for scale runs: each text's vector comes from its content hash.

Benchmarks of memory and throughput at millions of passages (``bench/scale.py``) measure the
pipeline around the encoder, not the encoder: this backend costs a SHA-256 per text, gives
the same unit vector to the same text on every node and every run, and carries no meaning
(retrieval quality over it is random). Its name and fingerprint mark every table it writes.
"""

from __future__ import annotations

import hashlib

import numpy as np

from listcon.model.encoder import BatchEncoder

HASH_DIM = 384  # MiniLM's width, so heads and indexes sized for the packaged encoder fit


class HashEncoder(BatchEncoder):
    """Texts -> deterministic pseudo-random unit vectors ``[n, 384]`` seeded by SHA-256 of the text."""

    backend = "hash"
    name = "hash"
    pooling = "mean"
    normalize = True
    precision = "fp32"

    def __init__(self, max_length: int | None = None, batch_size: int = 1024) -> None:
        self.max_length = max_length or 0
        self.batch_size = batch_size

    @property
    def dim(self) -> int:
        return HASH_DIM

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(f"listcon-hash-encoder-v1:{HASH_DIM}".encode()).hexdigest()

    def encode_batch(self, texts: list[str]) -> np.ndarray:
        out = np.empty((len(texts), HASH_DIM), dtype=np.float32)
        for row, text in enumerate(texts):
            seed = int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little")
            out[row] = np.random.default_rng(seed).standard_normal(HASH_DIM, dtype=np.float32)
        return out / np.linalg.norm(out, axis=1, keepdims=True)
