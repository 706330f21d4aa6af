"""First-stage retrieval: dense (FAISS), lexical (BM25), their fusion, or an external run as
the candidate source, with every signal computed exactly for every candidate.

Per query: the dense top-k and the lexical top-k are retrieved; the candidates are one
side's list, the fused union (``rrf``: sum of 1/(60 + rank) over the sides that found it;
``convex``: w * minmax(dense) + (1 - w) * minmax(lexical) over the union), or an external
run's list. Whichever side found a candidate, its dense score (cosine of the cached
vectors) and its BM25 score are computed, never left null; a side's rank is the candidate's
rank in that side's top-k, or k + 1 when it is below it.

An external run is either a ranking (its order and scores are a first stage beside the other two)
or a *pool* (``run_order = "pool"``: it only says which passages a query may get, as answer-selection
candidate lists do): a pool is retrieved from exactly as the whole corpus is, each side ranking the
pool alone, so the run's order and scores carry no weight anywhere.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
from tqdm.auto import tqdm

from listcon.pipeline.retrieval import faiss_index
from listcon.pipeline.retrieval.faiss_index import IndexSpec
from listcon.pipeline.retrieval.lexical import LexicalIndex
from listcon.pipeline.store.embedding_cache import EmbeddingCache, MissingPassagesError
from listcon.pipeline.store.workdir import COMPARISON_RUNS
from listcon.schemas import CANDIDATES, check_choices, check_ranges, choice, option

log = logging.getLogger(__name__)

METHODS = ("hybrid", "dense", "lexical")
FUSIONS = ("convex", "rrf")
COMPARISONS = COMPARISON_RUNS  # first-stage runs written beside the candidates


@dataclass(frozen=True)
class RetrieveOptions:
    """Where candidates come from and how many."""

    k: int = option(1000, "candidates per query", at_least=1)
    method: str = choice("hybrid", METHODS, "candidate source: fused dense + BM25, or one side")
    fusion: str = choice("convex", FUSIONS, "hybrid fusion: min-max convex combination, or reciprocal rank fusion")
    convex_weight: float = option(0.5, "weight of the dense side in convex fusion", at_least=0, at_most=1)
    rrf_k: int = option(60, "RRF constant", at_least=0)
    from_run: str | None = option(None, "take candidates from this external run (TREC, or Parquet/Lance with "
                                        "query_id, passage_id, score) instead of retrieving them")
    run_order: str = choice("ranked", ("ranked", "pool"), "the external run's order: ranked (a first stage of its own, "
                            "fused with the dense and lexical sides) or pool (an unordered candidate pool per query, "
                            "ranked by the dense and lexical sides alone, its scores ignored)")
    missing_queries: str = choice("error", ("error", "empty"), "a split query the external run lacks: refuse the "
                                  "run (error), or give that query no candidates (empty; counted in the log)")

    def __post_init__(self) -> None:
        check_ranges(self)
        check_choices(self)
        if self.run_order == "pool" and not self.from_run:
            raise ValueError("run_order = 'pool' needs from_run: the run that gives each query's candidate pool")

    @property
    def pool(self) -> bool:
        """Whether the candidates are an external run's unordered pools."""
        return bool(self.from_run) and self.run_order == "pool"


def clamp_k(k: int, count: int) -> int:
    """K larger than the corpus is clamped to the corpus size: every passage is then a candidate, which
    needs no one's attention (a small corpus under the default k=1,000), so it is said at INFO."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if k > count:
        log.info("k=%d is above the %d indexed passages: every passage is a candidate", k, count)
        return count
    return k


def dense_scores(query: np.ndarray, passages: np.ndarray, metric: str, prepared: bool = False) -> np.ndarray:
    """The dense signal: cosine (or inner product) of a query vector and passage vectors, float32
    (``prepared``: the passages are already as the index holds them, see ``faiss_index.prepare``).

    Each passage's score is its own dot product, bit for bit whichever other passages are scored with it
    (a matrix product's kernel sums differently by the number of rows, so a pool of 30 and one of 1,000
    gave the same pair different last bits)."""
    q = faiss_index.prepare(query[None], metric)[0]
    return np.einsum("ij,j->i", passages if prepared else faiss_index.prepare(passages, metric), q)


def minmax(values: np.ndarray) -> np.ndarray:
    span = values.max() - values.min() if len(values) else 0.0
    return (values - values.min()) / span if span > 0 else np.zeros_like(values)


@dataclass
class Sides:
    """One query's per-side top-k (passage id -> 1-based rank) and how to score any passage."""

    dense: dict[str, int]
    lexical: dict[str, int]
    k: int


class FirstStage:
    """Retrieves and scores candidates; ``run(...)`` yields one query's tables at a time."""

    def __init__(self, index, passage_ids: list[str], spec: IndexSpec, lexical: LexicalIndex, passages: EmbeddingCache,
                 options: RetrieveOptions) -> None:
        self.k = clamp_k(options.k, len(passage_ids))
        self.searcher = faiss_index.for_search(index, spec, self.k)
        self.passage_ids = np.asarray(passage_ids, dtype=object)
        self.rows = pd.Index(passage_ids)
        self.stored = faiss_index.stored_vectors(index, spec)  # exact dense scores from memory, not table reads
        self.spec, self.lexical, self.passages, self.options = spec, lexical, passages, options

    def run(self, query_ids: list[str], query_texts: list[str],
            query_vectors: np.ndarray | Callable[[list[str]], np.ndarray],
            external: dict[str, list[tuple[str, float]]] | None = None, batch: int = 256,
            progress: bool = True) -> Iterator[tuple[pa.Table, dict[str, pa.Table]]]:
        """Per query batch: (candidates, {comparison run name: its rows}) in CANDIDATES' schema.

        ``query_vectors`` is the queries' matrix, or a function from a batch's ids to its rows
        (so the driver holds one batch of query vectors, not all of them).
        """
        k, pooled = self.k, self.options.pool and external is not None
        for start in tqdm(range(0, len(query_ids), batch), desc="retrieve", unit="batch", disable=not progress):
            qids, texts = query_ids[start : start + batch], query_texts[start : start + batch]
            vectors = query_vectors(qids) if callable(query_vectors) else query_vectors[start : start + batch]
            if not pooled:
                _, positions = faiss_index.search(self.searcher, vectors, k, self.spec.metric, batch)
            lex_tokens = self.lexical.tokens(texts)
            candidates, comparisons = [], {name: [] for name in COMPARISONS}
            for row, qid in enumerate(qids):
                bm25 = self.lexical.full_scores(lex_tokens[row])
                if pooled:  # each side ranks the pool alone (ties by passage id: the run's order is no evidence)
                    members = sorted(p for p, _ in external.get(qid, []))
                    scores = self._scores(vectors[row], bm25, members)
                    dense, lexical = (sorted(members, key=lambda p: (-scores[side][p], p))[:k]
                                      for side in ("dense_score", "lexical_score"))
                    pool = list(dict.fromkeys([*dense, *lexical]))
                else:
                    dense = [self.passage_ids[p] for p in positions[row] if p >= 0]
                    lexical = [self.lexical.ids[i] for i in self.lexical.top(bm25, k)]
                    pool = list(dict.fromkeys([*dense, *lexical, *(p for p, _ in (external or {}).get(qid, []))]))
                    scores = self._scores(vectors[row], bm25, pool)
                sides = Sides({p: i + 1 for i, p in enumerate(dense)}, {p: i + 1 for i, p in enumerate(lexical)}, k)
                signals = {**scores, "dense_rank": {p: sides.dense.get(p, k + 1) for p in pool},
                           "lexical_rank": {p: sides.lexical.get(p, k + 1) for p in pool}}
                for name, ordered in self._orders(pool, signals, sides).items():
                    comparisons[name].append(_rows(qid, ordered, signals, None))
                if external is not None and not pooled:
                    ranked = [p for p, _ in external.get(qid, [])][:k]
                    given = dict(external.get(qid, []))
                    candidates.append(_rows(qid, ranked, signals, given))
                else:
                    candidates.append(comparisons[self._source()][-1])
            yield _concat(candidates), {name: _concat(parts) for name, parts in comparisons.items()}

    def _source(self) -> str:
        method = self.options.method
        return f"hybrid-{self.options.fusion}" if method == "hybrid" else method

    def _scores(self, query_vector: np.ndarray, bm25: np.ndarray, pool: list[str]) -> dict[str, dict]:
        """Every pool passage's exact dense and BM25 scores."""
        rows = self.rows.get_indexer(pool)
        if (rows < 0).any():
            raise MissingPassagesError(self.passages.uri, [p for p, r in zip(pool, rows) if r < 0])
        vectors = self.stored(rows) if pool else np.zeros((0, len(query_vector)), np.float32)
        dense = dense_scores(query_vector, vectors, self.spec.metric, prepared=True)
        lexical = np.array([bm25[self.lexical.position[p]] if p in self.lexical.position else 0.0 for p in pool],
                           dtype=np.float32)
        return {"dense_score": dict(zip(pool, dense.tolist())), "lexical_score": dict(zip(pool, lexical.tolist()))}

    def _orders(self, pool: list[str], signals: dict[str, dict], sides: Sides) -> dict[str, list[tuple[str, float]]]:
        """Each comparison run's top-k as (passage, score), best first."""
        k, options = sides.k, self.options
        # Each side ordered by the exact score it carries (so TREC readers see the same order), ties by its rank.
        dense = sorted(sides.dense, key=lambda p: (-signals["dense_score"][p], sides.dense[p]))
        lexical = sorted(sides.lexical, key=lambda p: (-signals["lexical_score"][p], sides.lexical[p]))
        rrf = {p: sum(1.0 / (options.rrf_k + r[p]) for r in (sides.dense, sides.lexical) if p in r) for p in pool}
        d = minmax(np.array([signals["dense_score"][p] for p in pool], dtype=np.float64))
        x = minmax(np.array([signals["lexical_score"][p] for p in pool], dtype=np.float64))
        convex = dict(zip(pool, (options.convex_weight * d + (1 - options.convex_weight) * x).tolist()))
        tie = lambda p: (sides.dense.get(p, k + 1), sides.lexical.get(p, k + 1), p)  # noqa: E731
        return {
            "dense": [(p, signals["dense_score"][p]) for p in dense],
            "lexical": [(p, signals["lexical_score"][p]) for p in lexical],
            "hybrid-rrf": [(p, rrf[p]) for p in sorted(pool, key=lambda p: (-rrf[p], *tie(p)))[:k]],
            "hybrid-convex": [(p, convex[p]) for p in sorted(pool, key=lambda p: (-convex[p], *tie(p)))[:k]],
        }


def _rows(qid: str, ordered, signals: dict[str, dict], external: dict[str, float] | None) -> pa.Table:
    """CANDIDATES rows for one query: ``ordered`` is [(passage, score)] (or [passage] with ``external``)."""
    if external is not None:
        ids = list(ordered)
        scores = [external[p] for p in ids]
        ext_score, ext_rank = scores, list(range(1, len(ids) + 1))
    else:
        ids = [p for p, _ in ordered]
        scores = [s for _, s in ordered]
        ext_score = ext_rank = [None] * len(ids)
    return pa.table({
        "query_id": [qid] * len(ids), "passage_id": ids, "rank": np.arange(1, len(ids) + 1, dtype=np.int32),
        "score": np.asarray(scores, dtype=np.float32),
        **{name: [signals[name][p] for p in ids] for name in ("dense_score", "dense_rank", "lexical_score", "lexical_rank")},
        "external_score": pa.array(ext_score, pa.float32()), "external_rank": pa.array(ext_rank, pa.int32()),
    }, schema=CANDIDATES)


def _concat(parts: list[pa.Table]) -> pa.Table:
    return pa.concat_tables(parts) if parts else CANDIDATES.empty_table()
