"""The Lance embedding cache, ranked-list tables and TREC runs, shard files, atomic writes, the workdir layout."""
