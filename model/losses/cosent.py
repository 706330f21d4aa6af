"""CoSENT loss (Su, 2022): ``log(1 + sum_{y_i > y_j} exp(lam * (s_j - s_i)))`` per query.

Graded labels are respected: every pair whose labels differ is ordered by them.
"""

from __future__ import annotations

import torch

from listcon.model.losses.lists import MASKED, mean_over, split_lists


def cosent_loss(
    scores: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor, scale: float = 20.0
) -> torch.Tensor:
    """Mean CoSENT loss over queries that have at least one ordered pair."""
    s, _, _, real = split_lists(scores, labels, mask)
    y = labels.float()
    pairs = (y[:, :, None] > y[:, None, :]) & real[:, :, None] & real[:, None, :]
    logits = (scale * (s[:, None, :] - s[:, :, None])).masked_fill(~pairs, MASKED)
    flat = torch.cat([torch.zeros(s.shape[0], 1, device=s.device), logits.flatten(1)], dim=1)
    per_query = torch.logsumexp(flat, dim=1)
    return mean_over(per_query, pairs.flatten(1).any(dim=1))
