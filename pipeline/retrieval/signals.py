"""Per-candidate signals for the listwise head, computed one way for mining and reranking.

A query's signals are normalised over its whole first-stage candidate list (never over the
list being scored), so a passage gets the same signal vector in a 20-passage training list,
a top-100 rerank and a 1,000-candidate rerank:

- ``dense``: the dense score (cosine) as it is;
- ``lexical``: BM25 divided by the query's best candidate BM25;
- ``dense_rank`` / ``lexical_rank``: 1 / log2(1 + rank) in that side's top-k (k + 1 below it);
- ``fused``: the candidate source's score, min-max normalised over the query's candidates;
- ``external``: an external run's score, normalised the same way (NaN without one);
- ``rrf``: reciprocal-rank fusion (k=60) of every first stage's rank: dense and lexical (each in its
  top-k) and, with an external run, the external rank; times (60 + 1) / sides so that a passage every
  side ranks first has 1 (a fixed fusion to anchor to).

A passage outside the candidate list (a judged positive the first stage missed) gets its
exact dense and BM25 scores, the below-top-k ranks, and ``fused`` / ``external`` / ``rrf`` 0.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from collections.abc import Iterable, Iterator

from listcon.schemas import SIGNAL_COLUMNS, SIGNALS


def _discount(rank: np.ndarray) -> np.ndarray:
    return 1.0 / np.log2(1.0 + rank.astype(np.float64))


RRF_K = 60


def _rrf(dense_rank: np.ndarray, lexical_rank: np.ndarray, k: int, external_rank: np.ndarray | None = None) -> np.ndarray:
    """RRF of the sides' ranks, scaled so that first on every side is 1 (NaN external rank: not in that run)."""
    side = lambda rank: np.where(rank <= k, 1.0 / (RRF_K + rank), 0.0)  # noqa: E731
    total, sides = side(dense_rank) + side(lexical_rank), 2
    if external_rank is not None:
        total, sides = total + np.where(np.isnan(external_rank), 0.0, 1.0 / (RRF_K + np.nan_to_num(external_rank))), 3
    return total * (RRF_K + 1) / sides


def _minmax_params(values: np.ndarray) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if not len(finite):
        return 0.0, 0.0
    low, span = float(finite.min()), float(finite.max() - finite.min())
    return low, span


class QuerySignals:
    """Signals of one query's candidates (its rows of a candidates table) and of any other passage."""

    def __init__(self, rows: pa.Table, k: int) -> None:
        column = lambda c: rows[c].to_numpy(zero_copy_only=False).astype(np.float64)  # noqa: E731 (nulls -> NaN)
        self.k = k
        self.row = {p: i for i, p in enumerate(rows["passage_id"].to_pylist())}
        self.dense, self.lexical = column("dense_score"), column("lexical_score")
        self.dense_rank, self.lexical_rank = column("dense_rank"), column("lexical_rank")
        self.fused, self.external = column("score"), column("external_score")
        external_rank = column("external_rank")
        self.external_rank = external_rank if np.isfinite(external_rank).any() else None  # None: no external run
        self.best_lexical = float(self.lexical.max()) if len(self.lexical) and self.lexical.max() > 0 else 1.0
        self.fused_params = _minmax_params(self.fused)
        self.external_params = _minmax_params(self.external)

    def matrix(self, passage_ids: list[str], exact: dict[str, tuple[float, float]] | None = None) -> np.ndarray:
        """``[n, len(SIGNALS)]`` float32 for ``passage_ids``; ``exact`` gives (dense, BM25) of non-candidates."""
        out = np.zeros((len(passage_ids), len(SIGNALS)), dtype=np.float64)
        rows = np.array([self.row.get(p, -1) for p in passage_ids], dtype=np.int64)
        have = rows >= 0
        r = rows[have]
        out[have, 0] = self.dense[r]
        out[have, 1] = self.lexical[r] / self.best_lexical
        out[have, 2] = _discount(self.dense_rank[r])
        out[have, 3] = _discount(self.lexical_rank[r])
        low, span = self.fused_params
        out[have, 4] = (self.fused[r] - low) / span if span > 0 else 1.0
        low, span = self.external_params
        out[have, 5] = (self.external[r] - low) / span if span > 0 else np.where(np.isnan(self.external[r]), np.nan, 1.0)
        out[have, 6] = _rrf(self.dense_rank[r], self.lexical_rank[r], self.k,
                            None if self.external_rank is None else self.external_rank[r])
        missing = [i for i in np.flatnonzero(~have)]
        if missing:
            if exact is None or any(passage_ids[i] not in exact for i in missing):
                absent = [passage_ids[i] for i in missing if exact is None or passage_ids[i] not in exact]
                raise KeyError(f"no signals for {len(absent)} passage(s) outside the candidate list, e.g. {absent[:3]}")
            below = _discount(np.array([self.k + 1]))[0]
            for i in missing:
                dense, bm25 = exact[passage_ids[i]]
                out[i] = [dense, bm25 / self.best_lexical, below, below, 0.0,
                          0.0 if np.isfinite(self.external).any() else np.nan, 0.0]
        return out.astype(np.float32)


SIGNAL_SOURCE = ("passage_id", "score", *SIGNAL_COLUMNS)  # the candidate columns a list's signals come from


def with_signals(items: Iterable[tuple], k: int) -> Iterator[tuple]:
    """``(query, passage ids, signal matrix)`` for each ``(query, passage ids, rows)`` of
    ``iter_lists(..., rows=SIGNAL_SOURCE)`` over candidates retrieved at depth ``k``."""
    for query, ids, rows in items:
        yield query, ids, QuerySignals(rows, k).matrix(ids) if ids else np.zeros((0, len(SIGNALS)), np.float32)


def select(matrix: np.ndarray, names: tuple[str, ...], where: str) -> np.ndarray:
    """The columns of ``names`` (a head's signals) from a full ``[n, len(SIGNALS)]`` matrix; NaN is refused."""
    columns = [SIGNALS.index(n) for n in names]
    picked = matrix[:, columns]
    if np.isnan(picked).any():
        bad = [names[j] for j in range(len(names)) if np.isnan(picked[:, j]).any()]
        raise ValueError(f"the head needs signal(s) {bad}, but {where} does not carry them "
                         "(external: retrieve with --from-run; see `listcon retrieve --help`)")
    return picked


class ExactScores:
    """Dense and BM25 scores of any (query, passage), for passages outside a query's candidates."""

    def __init__(self, passages, queries, lexical, metric: str, query_texts: dict[str, str],
                 query_vectors: dict | None = None) -> None:
        self.passages, self.queries, self.lexical, self.metric = passages, queries, lexical, metric
        self.query_texts, self.query_vectors = query_texts, query_vectors if query_vectors is not None else {}

    def __call__(self, query_id: str, passage_ids: list[str]) -> dict[str, tuple[float, float]]:
        if not passage_ids:
            return {}
        from listcon.pipeline.retrieval.retrieve import dense_scores

        vector = self.query_vectors[query_id] if query_id in self.query_vectors else self.queries.take([query_id])[0]
        dense = dense_scores(vector, self.passages.take(passage_ids), self.metric)
        bm25 = self.lexical.scores(self.query_texts[query_id], passage_ids)
        return {p: (float(d), float(b)) for p, d, b in zip(passage_ids, dense, bm25)}


# -- list features: evidence that means the same on every corpus ---------------------------------

# Per-candidate features normalised within the query's own candidate list, plus a few per-query
# statistics, so that a ranker trained on some corpora reads the same scale on any other. No raw
# embedding coordinate enters: embeddings contribute only similarities inside the list.
LIST_FEATURES = (
    "dense_z", "lexical_z", "dense_gap", "lexical_rel", "dense_rank", "lexical_rank", "rrf", "fused",
    "anchor", "anchor_rank", "agreement", "no_term_match",
    "centroid_sim", "centroid_z", "neighbour_sim",
    "query_terms", "query_idf_mean", "query_idf_max", "dense_spread", "dense_top_gap", "lexical_top_ratio",
)
ANCHOR = {"fused": 1.0, "rrf": 0.5}  # the demo head's anchor fusion: convex + 0.5 RRF
CONTEXT_TOP = 10  # the centroid and neighbours come from the anchor's top-10


def z_scores(values: np.ndarray) -> np.ndarray:
    """``values`` standardised over themselves (one query's list): mean 0, spread 1; all zeros where they are equal."""
    spread = values.std()
    return (values - values.mean()) / spread if spread > 0 else np.zeros_like(values)


def weigh(matrix: np.ndarray, weights: dict[str, float]) -> np.ndarray:
    """A fixed fusion ({signal: weight}, e.g. a head's anchor) of a full ``[n, len(SIGNALS)]`` signal matrix."""
    return sum(weight * matrix[:, SIGNALS.index(name)].astype(np.float64) for name, weight in weights.items())


def z_fusion(dense: np.ndarray, lexical: np.ndarray, dense_weight: float, external: np.ndarray | None = None) -> np.ndarray:
    """``dense_weight`` x z(dense) + (1 - ``dense_weight``) x z(lexical side), each side's scores standardised over
    the query's candidate list, so that a weight means the same on every corpus. With an external run the
    lexical side is the mean of the BM25 and external z-scores (an external run's scale is unknown; its z is not)."""
    side = z_scores(lexical) if external is None else (z_scores(lexical) + z_scores(external)) / 2
    return dense_weight * z_scores(dense) + (1.0 - dense_weight) * side


def z_fusion_of(matrix: np.ndarray, dense_weight: float) -> np.ndarray:
    """``z_fusion`` of one query's full ``[n, len(SIGNALS)]`` signal matrix (z-scores do not see the
    signals' own normalisations: BM25 over the best, an external score's min-max)."""
    column = lambda name: matrix[:, SIGNALS.index(name)].astype(np.float64)  # noqa: E731
    external = column("external")
    return z_fusion(column("dense"), column("lexical"), dense_weight,
                    external if len(external) and np.isfinite(external).all() else None)


def query_idf(lexical, query: str) -> tuple[int, float, float]:
    """(terms, mean, max) of the query's analysed terms' IDF, log(N / df) / log(N) so that 1 is a term in
    one passage whatever the corpus size; (0, 0, 0) for a query with no indexed term."""
    tokens = lexical.tokens([query])[0]
    n = len(lexical.ids)
    idf = [np.log(n / df) / np.log(n) for df in (int((lexical.full_scores([t]) > 0).sum()) for t in tokens) if df]
    return (len(tokens), float(np.mean(idf)), float(np.max(idf))) if idf else (len(tokens), 0.0, 0.0)


def list_features(rows: pa.Table, k: int, vectors: np.ndarray, idf: tuple[int, float, float],
                  anchor: dict[str, float] = ANCHOR) -> np.ndarray:
    """``[n, len(LIST_FEATURES)]`` float32 for one query's candidates (rows in first-stage order).

    ``vectors`` are the candidates' cached passage vectors in row order (L2-normalised here); ``idf``
    is ``query_idf`` of the query; ``anchor`` the fusion that orders the list (its top-10 is the context).
    Every value depends on the whole candidate list, never on which
    subset of it is being ranked, so a passage's vector is the same in any list cut from it.
    """
    signals = QuerySignals(rows, k)
    base = signals.matrix(rows["passage_id"].to_pylist()).astype(np.float64)
    dense, lexical = signals.dense, signals.lexical
    anchor = weigh(base, anchor)
    order = np.lexsort((np.arange(len(anchor)), -anchor))
    anchor_rank = np.empty(len(anchor)); anchor_rank[order] = np.arange(1, len(anchor) + 1)
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    top = order[:CONTEXT_TOP]
    centroid = unit[top].mean(axis=0)
    centroid /= max(float(np.linalg.norm(centroid)), 1e-12)
    to_centroid = unit @ centroid
    to_top = unit @ unit[top].T
    to_top[top, np.arange(len(top))] = -np.inf  # a candidate is not its own neighbour
    sorted_dense = np.sort(dense)[::-1]
    top_lexical = np.sort(lexical)[::-1]
    per_query = [idf[0], idf[1], idf[2], dense.std(), sorted_dense[0] - sorted_dense[1] if len(dense) > 1 else 0.0,
                 top_lexical[min(9, len(lexical) - 1)] / top_lexical[0] if top_lexical[0] > 0 else 0.0]
    columns = [
        z_scores(dense), z_scores(lexical), dense - dense.max(),
        base[:, 1], base[:, 2], base[:, 3], base[:, 6], base[:, 4],
        anchor, _discount(anchor_rank), -np.abs(np.log(signals.dense_rank) - np.log(signals.lexical_rank)),
        (lexical <= 0).astype(np.float64),
        to_centroid, z_scores(to_centroid), to_top.max(axis=1) if len(top) > 1 else np.zeros(len(dense)),
        *[np.full(len(dense), value, dtype=np.float64) for value in per_query],
    ]
    return np.stack(columns, axis=1).astype(np.float32)
