"""Stage-2 model: the text encoder and the listwise head as one trainable module.

One module so that DDP synchronises the encoder's gradients with the head's. Only real
passages are encoded (padded list slots get zero features and are masked by the head).
"""

from __future__ import annotations

import torch
from torch import nn

from listcon.model.encoder import TextEncoder
from listcon.model.ranker import ListConRanker


class EndToEnd(nn.Module):
    """``probs = module(query_tokens, passage_tokens, mask)`` with the encoder unfrozen."""

    def __init__(self, head: ListConRanker, encoder: TextEncoder) -> None:
        super().__init__()
        self.head = head
        self.encoder_model = encoder.model  # registered, so it trains and syncs
        self.encoder = encoder

    def forward(self, query_ids: torch.Tensor, query_mask: torch.Tensor, passage_ids: torch.Tensor,
                passage_mask: torch.Tensor, mask: torch.Tensor, signals: torch.Tensor | None = None) -> torch.Tensor:
        """Token tensors: queries ``[B,T]``, passages ``[B,L,T]``; ``mask [B,L]`` marks real passages."""
        query = self.encoder.features(query_ids, query_mask)
        batch, length, tokens = passage_ids.shape
        real = mask.reshape(-1)
        encoded = self.encoder.features(passage_ids.reshape(-1, tokens)[real], passage_mask.reshape(-1, tokens)[real])
        passages = encoded.new_zeros(batch * length, encoded.shape[-1])
        passages[real] = encoded
        return self.head(query, passages.view(batch, length, -1), mask, signals)
