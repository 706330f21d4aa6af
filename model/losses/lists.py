"""Shared handling of padded, labelled lists for the ranking losses.

Every loss takes ``scores [B,N]`` (probabilities in (0,1)), ``labels [B,N]`` (bool, 0/1 or
graded; > 0 is positive) and ``mask [B,N]`` (True = real), computes in float32, and averages
over the queries that can contribute (the rest neither add loss nor dilute the mean).
"""

from __future__ import annotations

import torch

# Stands in for -inf in masked log-sum-exps: exp() of it is exactly 0 in fp32, yet sums of
# two of them stay finite, so no NaN reaches the gradient.
MASKED = -1e9


def split_lists(scores: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return fp32 scores and the positive / negative / real masks, after checking shapes."""
    if scores.shape != labels.shape or scores.shape != mask.shape or scores.dim() != 2:
        raise ValueError(
            f"scores, labels and mask must share one [B,N] shape; got {tuple(scores.shape)}, "
            f"{tuple(labels.shape)}, {tuple(mask.shape)}"
        )
    real = mask.bool()
    positive = (labels.float() > 0) & real
    negative = (labels.float() <= 0) & real
    return scores.float(), positive, negative, real


def mean_over(per_query: torch.Tensor, contributes: torch.Tensor) -> torch.Tensor:
    """Mean of ``per_query`` over contributing queries; 0 (still differentiable) if none."""
    weight = contributes.float()
    return (per_query * weight).sum() / weight.sum().clamp(min=1.0)
