"""Circle Loss (Sun et al., CVPR 2020), as ListConRanker trains with it.

Per query: ``L = softplus(LSE_j gamma*a_n^j*(s_n^j - d_n) + LSE_i -gamma*a_p^i*(s_p^i - d_p))``
with ``d_n = m, d_p = 1 - m, a_n = [s_n + m]_+, a_p = [1 + m - s_p]_+`` (a detached).
ListConRanker uses gamma=10, m=-0.2 with a frozen encoder (stage 1), m=0.1 end-to-end.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from listcon.model.losses.lists import MASKED, mean_over, split_lists


def circle_loss(
    scores: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor, gamma: float = 10.0, m: float = -0.2
) -> torch.Tensor:
    """Mean Circle Loss over queries having at least one positive and one negative."""
    s, positive, negative, _ = split_lists(scores, labels, mask)
    alpha_p = torch.clamp_min(1.0 + m - s.detach(), 0.0)
    alpha_n = torch.clamp_min(s.detach() + m, 0.0)
    logit_p = (-gamma * alpha_p * (s - (1.0 - m))).masked_fill(~positive, MASKED)
    logit_n = (gamma * alpha_n * (s - m)).masked_fill(~negative, MASKED)
    per_query = F.softplus(torch.logsumexp(logit_n, dim=1) + torch.logsumexp(logit_p, dim=1))
    return mean_over(per_query, positive.any(dim=1) & negative.any(dim=1))
