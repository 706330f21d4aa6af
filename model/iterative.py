"""Iterative inference (Algorithm 1 of ListConRanker), batched across queries.

While more than ``theta`` passages remain, the remaining set is scored together, and the
lowest ``max(ceil(beta * n), min_drop)`` are fixed at the bottom of the remaining ranks in
score order; the last <= ``theta`` are ordered by their final-round score. Each round is one
``score_fn`` call for every query still pruning, over a compacted, padded batch.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

from listcon.model.schedule import PruneSchedule  # noqa: F401  (re-exported)

ScoreFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def iterative_rerank(
    score_fn: ScoreFn,
    query: torch.Tensor,
    passages: torch.Tensor,
    mask: torch.Tensor,
    theta: int = 20,
    beta: float = 0.2,
    min_drop: int = 10,
    return_rounds: bool = False,
) -> tuple[torch.Tensor, torch.Tensor] | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rank each query's candidates by iterative pruning.

    Args:
        score_fn: ``(query [B,E], passages [B,n,E], mask [B,n]) -> scores [B,n]``, higher is
            better (the model itself qualifies).
        query, passages, mask: ``[B,E]``, ``[B,N,E]``, ``[B,N]`` (True = real candidate).
        theta, beta, min_drop: stop size, pruning fraction, minimum pruned per round.
        return_rounds: also return the round in which each ranked passage was fixed.

    Returns:
        ``order [B,N]`` int64: candidate indices best first, then -1 for padding;
        ``scores [B,N]`` float64 aligned with ``order``: round + score, strictly decreasing
        over real entries, -inf for padding; with ``return_rounds``, ``rounds [B,N]`` int64
        (-1 for padding). Ties are broken by candidate index (lower ranks higher).
    """
    if theta < 1 or not 0.0 < beta <= 1.0 or min_drop < 1:
        raise ValueError(f"need theta >= 1, 0 < beta <= 1, min_drop >= 1; got {theta}, {beta}, {min_drop}")
    mask = mask.bool()
    batch, n_total = mask.shape
    device = passages.device
    alive = mask.clone()
    order = torch.full((batch, n_total), -1, dtype=torch.long, device=device)
    combined = torch.full((batch, n_total), -math.inf, dtype=torch.float64, device=device)
    rounds = torch.full((batch, n_total), -1, dtype=torch.long, device=device)
    round_index = torch.zeros(batch, dtype=torch.long, device=device)
    active = alive.sum(dim=1) > 0

    while active.any():
        rows = active.nonzero().squeeze(1)
        n_alive = alive[rows].sum(dim=1)
        width = int(n_alive.max())
        # Compact the surviving candidates to the left, keeping candidate-index order.
        cols = torch.argsort((~alive[rows]).to(torch.int8), dim=1, stable=True)[:, :width]
        sub_mask = torch.arange(width, device=device)[None, :] < n_alive[:, None]
        sub_passages = passages[rows[:, None], cols]
        scores = score_fn(query[rows], sub_passages, sub_mask)
        if scores.shape != sub_mask.shape:
            raise ValueError(f"score_fn returned shape {tuple(scores.shape)}, expected {tuple(sub_mask.shape)}")
        scores = scores.detach().to(torch.float64)
        if torch.isnan(scores[sub_mask]).any():
            raise ValueError("score_fn returned NaN for a real candidate")
        # Rank the survivors best first; ties keep the lower candidate index first.
        ranked = torch.argsort(-scores.masked_fill(~sub_mask, -math.inf), dim=1, stable=True)
        ranked_scores = scores.gather(1, ranked)
        ranked_cols = cols.gather(1, ranked)

        final = n_alive <= theta
        drop = torch.where(
            final, n_alive,
            torch.clamp(torch.maximum(torch.ceil(beta * n_alive.double()).long(),
                                      torch.full_like(n_alive, min_drop)), max=n_alive),
        )
        # Survivors hold ranks [0, n_alive); the worst `drop` of them are fixed in place there.
        pos = torch.arange(width, device=device)[None, :]
        fixed = (pos >= (n_alive - drop)[:, None]) & (pos < n_alive[:, None])
        r_idx, t_idx = fixed.nonzero(as_tuple=True)
        q_idx, p_idx = rows[r_idx], t_idx
        order[q_idx, t_idx] = ranked_cols[r_idx, p_idx]
        combined[q_idx, t_idx] = round_index[q_idx].double() + ranked_scores[r_idx, p_idx]
        rounds[q_idx, t_idx] = round_index[q_idx]
        alive[q_idx, ranked_cols[r_idx, p_idx]] = False
        round_index[rows] += 1
        active = alive.sum(dim=1) > 0

    combined = _strictly_decreasing(combined)
    if return_rounds:
        return order, combined, rounds
    return order, combined


def _strictly_decreasing(scores: torch.Tensor) -> torch.Tensor:
    """Nudge ties (equal or saturated scores) down by one ulp so exported order is unambiguous."""
    values = scores.cpu().numpy().copy()
    for k in range(1, values.shape[1]):
        np.minimum(values[:, k], np.nextafter(values[:, k - 1], -np.inf), out=values[:, k])
    return torch.from_numpy(values).to(scores.device)
