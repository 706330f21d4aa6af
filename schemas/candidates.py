"""Ranked lists: first-stage candidates and reranked rankings, one row per (query, passage)."""

from __future__ import annotations

import pyarrow as pa

CANDIDATES = pa.schema(
    [
        ("query_id", pa.string(), False),
        ("passage_id", pa.string(), False),
        ("rank", pa.int32(), False),  # 1-based, as in TREC runs
        ("score", pa.float32(), False),
    ]
)

RANKINGS = pa.schema(
    [
        ("query_id", pa.string(), False),
        ("passage_id", pa.string(), False),
        ("rank", pa.int32(), False),  # 1-based
        ("score", pa.float64(), False),  # round + probability: strictly decreasing along rank
        ("round", pa.int32(), False),  # iterative-inference round in which the passage was fixed
    ]
)

TRAINING_LISTS = pa.schema(
    [
        ("query_id", pa.string(), False),
        ("passage_ids", pa.list_(pa.string()), False),  # positives first, then mined negatives
        ("labels", pa.list_(pa.int32()), False),  # qrels relevance (> 0 positive), 0 for negatives
        ("holdout", pa.bool_(), False),  # validation query: trained on never, reranked each epoch
    ]
)
