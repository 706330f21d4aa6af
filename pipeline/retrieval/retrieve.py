"""First-stage retrieval: top-K passages per query from the FAISS index."""

from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa
from tqdm.auto import tqdm

from listcon.pipeline.retrieval import faiss_index
from listcon.pipeline.retrieval.faiss_index import IndexSpec
from listcon.schemas import CANDIDATES

log = logging.getLogger(__name__)


def clamp_k(k: int, count: int) -> int:
    """K larger than the corpus is clamped to the corpus size, with a warning."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if k > count:
        log.warning("k=%d is larger than the %d indexed passages; clamped to %d", k, count, count)
        return count
    return k


def retrieve(index, passage_ids: list[str], query_ids: list[str], query_vectors: np.ndarray, k: int,
             spec: IndexSpec, batch: int = 256, progress: bool = True) -> pa.Table:
    """Candidates table (query_id, passage_id, rank, score), queries in the order given."""
    k = clamp_k(k, len(passage_ids))
    searcher = faiss_index.for_search(index, spec)
    ids = np.asarray(passage_ids, dtype=object)
    parts = []
    for start in tqdm(range(0, len(query_ids), batch), desc="retrieve", unit="batch", disable=not progress):
        scores, positions = faiss_index.search(searcher, query_vectors[start : start + batch], k, spec.metric, batch)
        for row, qid in enumerate(query_ids[start : start + batch]):
            found = positions[row] >= 0  # approximate indexes may return fewer than k
            n = int(found.sum())
            parts.append(pa.table({
                "query_id": pa.array([qid] * n, pa.string()),
                "passage_id": pa.array(ids[positions[row][found]].tolist(), pa.string()),
                "rank": pa.array(np.arange(1, n + 1, dtype=np.int32)),
                "score": pa.array(scores[row][found]),
            }, schema=CANDIDATES))
    return pa.concat_tables(parts) if parts else CANDIDATES.empty_table()
