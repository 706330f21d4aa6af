"""First-stage retrieval: the FAISS index and top-K search."""
