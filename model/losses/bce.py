"""Pointwise binary cross-entropy on the head's probabilities (the paper's CE baseline)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from listcon.model.losses.lists import mean_over, split_lists

_EPS = 1e-7


def bce_loss(scores: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per query, the mean BCE over its real passages; then the mean over non-empty queries."""
    s, positive, _, real = split_lists(scores, labels, mask)
    per_item = F.binary_cross_entropy(s.clamp(_EPS, 1.0 - _EPS), positive.float(), reduction="none")
    count = real.sum(dim=1)
    per_query = (per_item * real).sum(dim=1) / count.clamp(min=1)
    return mean_over(per_query, count > 0)
