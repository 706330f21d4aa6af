"""Triplet (margin ranking) loss over every positive/negative pair of a query's list."""

from __future__ import annotations

import torch

from listcon.model.losses.lists import mean_over, split_lists


def triplet_loss(
    scores: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor, margin: float = 0.1
) -> torch.Tensor:
    """Per query, mean of ``[margin - (s_p - s_n)]_+`` over its (positive, negative) pairs."""
    s, positive, negative, _ = split_lists(scores, labels, mask)
    pairs = positive[:, :, None] & negative[:, None, :]
    hinge = torch.clamp_min(margin - (s[:, :, None] - s[:, None, :]), 0.0)
    count = pairs.sum(dim=(1, 2))
    per_query = (hinge * pairs).sum(dim=(1, 2)) / count.clamp(min=1)
    return mean_over(per_query, count > 0)
