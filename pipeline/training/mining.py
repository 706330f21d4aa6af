"""Hard-negative mining: training lists from first-stage candidates and qrels.

For each judged training query: its positives (up to a cap) and negatives drawn from the
top of its candidate list, skipping judged positives, as the paper trains (~20 passages a
list, negatives mined by the first-stage retriever). A seeded fraction of queries is held
out for validation. Reproducible: the same inputs and seed give the same table.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pyarrow as pa

from listcon.pipeline.store.ranked_lists import candidate_lists
from listcon.schemas import SIGNALS, TRAINING_LISTS, check_choices, check_ranges, choice, option

log = logging.getLogger(__name__)

SAMPLINGS = ("top", "uniform")


@dataclass(frozen=True)
class MiningSettings:
    """How training lists are drawn (part of the mine job's config)."""

    list_size: int = option(20, "passages per training list", at_least=2)
    max_positives: int = option(4, "most positives per list", at_least=1)
    depth: int = option(100, "negatives come from the top-N candidates", at_least=1)
    sampling: str = choice("uniform", SAMPLINGS, "top: the highest-ranked negatives; uniform: a random draw from the top-N")
    holdout_fraction: float = option(0.1, "fraction of queries held out for validation", at_least=0, at_most=0.9)
    seed: int = option(0, "seed of the negative draw and the holdout", at_least=0)

    def __post_init__(self) -> None:
        check_ranges(self)
        check_choices(self)
        if not 1 <= self.max_positives < self.list_size:
            raise ValueError(f"need 1 <= max_positives < list_size, got {self.max_positives} and {self.list_size}")


def _rng(seed: int, query_id: str) -> np.random.Generator:
    """A generator per query, so one query's draw does not depend on the others."""
    return np.random.default_rng(int.from_bytes(hashlib.sha256(f"{seed}:{query_id}".encode()).digest()[:8], "little"))


SignalFn = Callable[[str, list[str]], np.ndarray]


def mine(candidates: pa.Table, qrels: pa.Table, settings: MiningSettings = MiningSettings(),
         unusable: frozenset[str] = frozenset(), signals: SignalFn | None = None) -> pa.Table:
    """Training lists for every query with at least one positive and one negative candidate.

    ``unusable`` passages (no cached features) go in no list; judged, they still never count as negatives.
    ``signals(query, passages)`` gives each list's per-passage signals (``[n, len(SIGNALS)]``;
    NaN where absent when not given), computed as reranking computes them.
    """
    judged: dict[str, dict[str, int]] = {}
    for q, p, r in zip(qrels["query_id"].to_pylist(), qrels["passage_id"].to_pylist(), qrels["relevance"].to_pylist()):
        judged.setdefault(q, {})[p] = int(r)
    rows, dropped = [], 0
    for query, ranked in candidate_lists(candidates, sorted(judged)):
        labels = judged[query]
        rng = _rng(settings.seed, query)
        positives = [p for p, r in sorted(labels.items(), key=lambda x: (-x[1], x[0])) if r > 0 and p not in unusable]
        if len(positives) > settings.max_positives:
            positives = [positives[i] for i in sorted(rng.choice(len(positives), settings.max_positives, replace=False))]
        pool = [p for p in ranked[: settings.depth] if labels.get(p, 0) <= 0 and p not in unusable]
        want = settings.list_size - len(positives)
        if settings.sampling == "top" or len(pool) <= want:
            negatives = pool[:want]
        else:
            negatives = [pool[i] for i in sorted(rng.choice(len(pool), want, replace=False))]
        if not positives or not negatives:
            dropped += 1
            continue
        holdout = _rng(settings.seed + 1, query).random() < settings.holdout_fraction
        passages = positives + negatives
        matrix = signals(query, passages) if signals else np.full((len(passages), len(SIGNALS)), np.nan, np.float32)
        rows.append({"query_id": query, "passage_ids": passages,
                     "labels": [labels[p] for p in positives] + [0] * len(negatives), "holdout": holdout,
                     "signals": matrix.tolist()})
    if dropped:
        log.info("mining: %d judged queries had no positive or no negative to train on and were left out", dropped)
    return pa.Table.from_pylist(rows, schema=TRAINING_LISTS)
