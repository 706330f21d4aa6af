"""Which fusion of the two first stages to rank by on a corpus, chosen on its pseudo-queries.

What a ranker trained elsewhere gets wrong on a new corpus is mostly how far to trust the dense side
against BM25 (it differs by collection: dense alone wins on question-answer sets, BM25 on scientific
claims). Pseudo-queries measure it without labels: each candidate fusion is scored by where it ranks
the pseudo-query's source passage (nDCG@10 with that one passage relevant). The candidates are the
default anchor (convex + 0.5 RRF) and the z-score fusions ``z_fusion`` at ``DENSE_WEIGHTS``: every one keeps
both sides (a fifth at least), since a choice made at the grid's edge, one side alone, is where a noisy best
on pseudo-queries overshoots what real queries want (docs/transfer.md measures it with the edges in). Two rules:

- ``significant``: the best replaces the anchor where it is better on the pseudo-queries with paired
  p < ``SIGNIFICANCE``;
- ``one-se`` (the one-standard-error rule of model selection): the candidate nearest the default (the
  anchor, then the z-fusions by distance of their weight from 0.5) whose mean is within one standard
  error of the paired difference from the best. Pseudo-queries are not the corpus's real queries, so a
  small edge on them is not trusted to carry over.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from listcon.pipeline.adaptation.settings import RULES
from listcon.pipeline.evaluation.evaluate import paired_test
from listcon.pipeline.retrieval.signals import ANCHOR, QuerySignals, weigh, z_fusion_of
from listcon.pipeline.store.ranked_lists import rows_by_query

DENSE_WEIGHTS = (0.2, 0.35, 0.5, 0.65, 0.8)
DEFAULT = "anchor"
SIGNIFICANCE = 0.05
CUTOFF = 10


def fusion_name(dense_weight: float) -> str:
    return f"z{dense_weight:g}"


@dataclass(frozen=True)
class FusionChoice:
    """The fusion chosen (``DEFAULT`` or a z-fusion with ``dense_weight``) and the evidence: each candidate's
    mean pseudo-query nDCG@10, the best one's paired p against the default, and how many pseudo-queries."""

    rule: str
    chosen: str
    dense_weight: float | None
    gains: dict[str, float]
    best: str
    p: float
    queries: int

    def to_dict(self) -> dict:
        return {"rule": self.rule, "chosen": self.chosen, "dense_weight": self.dense_weight, "best": self.best,
                "p": self.p, "queries": self.queries, "pseudo_ndcg@10": self.gains}


def fusion_scores(rows: pa.Table, k: int, weights: tuple[float, ...] = DENSE_WEIGHTS) -> dict[str, np.ndarray]:
    """Every candidate fusion's scores for one query's candidate rows (in rank order)."""
    matrix = QuerySignals(rows, k).matrix(rows["passage_id"].to_pylist())  # as rerank computes it
    scores = {DEFAULT: weigh(matrix.astype(np.float64), ANCHOR)}
    for weight in weights:
        scores[fusion_name(weight)] = z_fusion_of(matrix, weight)
    return scores


def _gain(scores: np.ndarray, row: int | None) -> float:
    """nDCG@10 of a list with one relevant passage at ``row`` (0 when the list lacks it); ties count against it."""
    if row is None:
        return 0.0
    rank = int((scores >= scores[row]).sum())
    return 1.0 / np.log2(rank + 1) if rank <= CUTOFF else 0.0


def pseudo_gains(candidates: pa.Table, sources: dict[str, str],
                 weights: tuple[float, ...] = DENSE_WEIGHTS) -> dict[str, dict[str, float]]:
    """{pseudo query id: {fusion: nDCG@10 of its source passage}} from the pseudo-queries' ``candidates``, for the
    anchor and the z-fusions at ``weights``."""
    k = int(pc.max(candidates["rank"]).as_py()) if candidates.num_rows else 0
    names = (DEFAULT, *map(fusion_name, weights))
    lists = rows_by_query(candidates)
    per_query: dict[str, dict[str, float]] = {}
    for qid, source in sources.items():
        rows = lists.get(qid)
        if rows is None or not rows.num_rows:
            per_query[qid] = dict.fromkeys(names, 0.0)
            continue
        where = rows["passage_id"].to_pylist()
        row = where.index(source) if source in where else None
        per_query[qid] = {name: _gain(s, row) for name, s in fusion_scores(rows, k, weights).items()}
    return per_query


def choose_fusion(per_query: dict[str, dict[str, float]], rule: str = "one-se",
                  weights: tuple[float, ...] = DENSE_WEIGHTS) -> FusionChoice:
    """The fusion to rank a corpus by under ``rule``, among the anchor and the z-fusions at ``weights``, from
    ``pseudo_gains`` of its pseudo-queries (which may hold more fusions than are chosen from)."""
    if rule not in RULES:
        raise ValueError(f"fusion rule {rule!r}: expected one of {', '.join(RULES)}")
    weight_of = {fusion_name(w): w for w in weights}
    names = [DEFAULT, *weight_of]
    table = np.array([[g[n] for n in names] for g in per_query.values()], dtype=np.float64).reshape(-1, len(names))
    gains = {n: float(table[:, j].mean()) if len(table) else 0.0 for j, n in enumerate(names)}
    best = max(names, key=lambda n: (gains[n], n == DEFAULT))
    column = lambda n: dict(zip(per_query, table[:, names.index(n)]))  # noqa: E731
    p = paired_test(column(best), column(DEFAULT))
    if rule == "significant":
        chosen = best if best != DEFAULT and p < SIGNIFICANCE else DEFAULT
    else:
        b = table[:, names.index(best)]
        close = [n for j, n in enumerate(names) if len(table) < 2 or
                 b.mean() - table[:, j].mean() <= (b - table[:, j]).std(ddof=1) / np.sqrt(len(table))]
        # nearest the default: the anchor, then the weights by their distance from 0.5
        chosen = min(close, key=lambda n: (-1.0 if n == DEFAULT else abs(weight_of[n] - 0.5), -gains[n]))
    return FusionChoice(rule, chosen, weight_of.get(chosen), gains, best, p, len(per_query))
