"""Ranked lists: first-stage candidates and reranked rankings, one row per (query, passage)."""

from __future__ import annotations

import pyarrow as pa

CANDIDATES = pa.schema(
    [
        ("query_id", pa.string(), False),
        ("passage_id", pa.string(), False),
        ("rank", pa.int32(), False),  # 1-based, as in TREC runs: the candidate source's order
        ("score", pa.float32(), False),  # the candidate source's score (fused, dense, lexical or external)
        # Every signal for every candidate, computed exactly whichever side found it:
        ("dense_score", pa.float32(), False),  # cosine (or inner product) of the cached vectors
        ("dense_rank", pa.int32(), False),  # rank in the dense top-k; k + 1 = below it
        ("lexical_score", pa.float32(), False),  # BM25 of the passage for the query (0: no shared term)
        ("lexical_rank", pa.int32(), False),  # rank in the lexical top-k; k + 1 = below it
        ("external_score", pa.float32(), True),  # an external run's score (--from-run), else null
        ("external_rank", pa.int32(), True),
    ]
)
SIGNAL_COLUMNS = ("dense_score", "dense_rank", "lexical_score", "lexical_rank", "external_score", "external_rank")
# Per-candidate signals a listwise head may take, in this order (see listcon.pipeline.retrieval.signals):
# dense cosine; BM25 / the query's best BM25; 1/log2(1 + rank) of each side; the candidate source's
# score min-max normalised over the query's candidates; an external run's score, normalised the same way;
# reciprocal-rank fusion (k=60) of the two sides' ranks, scaled so a passage both sides rank first has 1.
SIGNALS = ("dense", "lexical", "dense_rank", "lexical_rank", "fused", "external", "rrf")

RANKINGS = pa.schema(
    [
        ("query_id", pa.string(), False),
        ("passage_id", pa.string(), False),
        ("rank", pa.int32(), False),  # 1-based
        ("score", pa.float64(), False),  # round + probability: strictly decreasing along rank
        ("round", pa.int32(), False),  # iterative-inference round in which the passage was fixed; -1: not reranked (below depth)
    ]
)

TRAINING_LISTS = pa.schema(
    [
        ("query_id", pa.string(), False),
        ("passage_ids", pa.list_(pa.string()), False),  # positives first, then mined negatives
        ("labels", pa.list_(pa.int32()), False),  # qrels relevance (> 0 positive), 0 for negatives
        ("holdout", pa.bool_(), False),  # validation query: trained on never, reranked each epoch
        ("signals", pa.list_(pa.list_(pa.float32(), len(SIGNALS))), False),  # per passage, SIGNALS order (NaN: absent)
    ]
)
