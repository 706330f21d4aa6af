"""A head's artifacts: the files training writes beside a checkpoint and reranking reads (whether the
training finished, which encoder the features come from, the domain where its learned part helped)."""
