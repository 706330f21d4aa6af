"""Attention masks of the ListTransformer: ListAttention and the paper's two ablations.

The sequence is ``[query, passage_1, ..., passage_N]``. Masks are boolean with True meaning
"may attend", shaped ``[B, 1, L, L]`` so they broadcast over heads in
``scaled_dot_product_attention``. The choice changes only this mask, never the parameters.
"""

from __future__ import annotations

import torch

from listcon.model.choices import ATTENTIONS  # noqa: E402,F401  (re-exported)


def attention_mask(kind: str, real: torch.Tensor) -> torch.Tensor:
    """Build the ``[B, 1, N+1, N+1]`` allow-mask for ``kind`` given ``real`` passages ``[B, N]``.

    - ``list`` (ListAttention): the query attends only to itself; passages attend to the
      query and to every real passage.
    - ``bidirectional``: every position attends to the query and every real passage.
    - ``passage`` (PassageAttention): the query attends to everything real; each passage
      only to itself and the query.
    Padded passages are never attended to (each padded row still sees the query, so no
    row is empty and softmax stays finite).
    """
    if kind not in ATTENTIONS:
        raise ValueError(f"attention must be one of {ATTENTIONS}, got {kind!r}")
    batch, n = real.shape
    device = real.device
    keys = torch.cat([torch.ones(batch, 1, dtype=torch.bool, device=device), real.bool()], dim=1)
    allow = keys[:, None, :].expand(batch, n + 1, n + 1).clone()  # [B, L(query rows), L(keys)]
    if kind == "list":
        allow[:, 0, 1:] = False
    elif kind == "passage":
        eye = torch.eye(n + 1, dtype=torch.bool, device=device)
        eye[:, 0] = True  # every row may see the query
        eye[0, :] = True  # the query row sees all
        allow &= eye[None]
    return allow[:, None]
