"""Evaluation of runs against qrels through ir-measures (trec_eval underneath).

Every query in the qrels counts: a query missing from a run scores 0 on every measure
instead of silently leaving the mean.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable

import ir_measures
import pyarrow as pa

DEFAULT_MEASURES = ("nDCG@10", "AP@1000", "RR@10", "R@100", "R@1000")


def check_measures(measures: Iterable[str]) -> tuple[str, ...]:
    """The measures if ir-measures parses each, else ValueError naming the first it does not."""
    for name in measures:
        try:
            ir_measures.parse_measure(name)
        except (ValueError, NameError, SyntaxError, TypeError, AttributeError):
            raise ValueError(f"measure {name!r} is not an ir-measures name (e.g. nDCG@10, AP@1000, RR@10, "
                             "R@100, P@5)") from None
    if not measures:
        raise ValueError("measures must name at least one measure (the first is the headline)")
    return tuple(measures)


def qrels_records(qrels: pa.Table) -> list[ir_measures.Qrel]:
    return [ir_measures.Qrel(q, p, int(r)) for q, p, r in zip(qrels["query_id"].to_pylist(),
                                                               qrels["passage_id"].to_pylist(),
                                                               qrels["relevance"].to_pylist())]


def per_query(qrels: pa.Table, run: dict[str, dict[str, float]], measures: Iterable[str] = DEFAULT_MEASURES) -> dict[str, dict[str, float]]:
    """``{measure: {query_id: value}}`` over every query that has a relevant judgment."""
    parsed = [ir_measures.parse_measure(m) for m in measures]
    judged = {q for q, r in zip(qrels["query_id"].to_pylist(), qrels["relevance"].to_pylist()) if r > 0}
    # queries in sorted order, not a set's: means then sum in the same order in every process
    # (a set's order follows the per-process string hash, and moved a mean by an ulp on resume)
    values: dict[str, dict[str, float]] = {str(m): {q: 0.0 for q in sorted(judged)} for m in parsed}
    scored = [ir_measures.ScoredDoc(q, p, s) for q, docs in run.items() for p, s in docs.items()]
    for metric in ir_measures.iter_calc(parsed, qrels_records(qrels), scored):
        if metric.query_id in judged:
            values[str(metric.measure)][metric.query_id] = float(metric.value)
    return values


def without_self(run: dict[str, dict[str, float]], queries: set[str] | None = None) -> dict[str, dict[str, float]]:
    """The run without a passage whose id is its query's id (BEIR's rule for collections whose
    queries are also documents, where the query would otherwise retrieve itself), for every query
    or only those in ``queries``."""
    return {q: {p: s for p, s in docs.items() if p != q} if queries is None or q in queries else docs
            for q, docs in run.items()}


def aggregate(values: dict[str, dict[str, float]]) -> dict[str, float]:
    """Mean of each measure over its queries."""
    return {m: (sum(v.values()) / len(v) if v else 0.0) for m, v in values.items()}


def paired_test(values: dict[str, float], baseline: dict[str, float], alternative: str = "two-sided") -> float:
    """Paired t-test p-value over the queries both cover (scipy; ``alternative="greater"``: is
    ``values`` higher); 1.0 when undefined."""
    from scipy.stats import ttest_rel

    queries = sorted(values.keys() & baseline.keys())
    a = [values[q] for q in queries]
    b = [baseline[q] for q in queries]
    if len(queries) < 2 or a == b:
        return 1.0
    with warnings.catch_warnings():  # near-equal differences: scipy warns, and the NaN it returns is handled below
        warnings.simplefilter("ignore", RuntimeWarning)
        p = float(ttest_rel(a, b, alternative=alternative).pvalue)
    return p if p == p else 1.0  # NaN when every difference is equal
