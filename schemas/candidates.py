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
