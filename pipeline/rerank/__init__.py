"""Reranking: the cached-feature reranker, its Ray worker, the re-encode baseline and the notebook-facing Reranker."""
