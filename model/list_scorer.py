"""The one scoring path: pad a batch of candidate lists, run the head under the chosen
precision, and rank by iterative inference (Algorithm 1).

The rerank step, training's validation and the re-encode baseline all rank through
``ListScorer``; they differ only in where each list's passage features come from.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch

from listcon.model.int8_head import quantize_head
from listcon.model.iterative import PruneSchedule, ScoreFn, iterative_rerank
from listcon.model.precision import HEAD_PRECISIONS, autocast, resolve_precision
from listcon.model.ranker import ListConRanker

Features = np.ndarray | torch.Tensor


def pad_lists(lists: Sequence[Features], dim: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``[n_i, E]`` feature blocks -> zero-padded ``[B, N, E]`` float32 and a ``[B, N]`` mask."""
    lengths = [len(x) for x in lists]
    if dim is None:
        dim = next((int(x.shape[1]) for x in lists if len(x)), 0)
    padded = torch.zeros(len(lists), max(lengths, default=0), dim, dtype=torch.float32)
    view = padded.numpy()
    for i, block in enumerate(lists):
        if isinstance(block, np.ndarray):
            view[i, : len(block)] = block  # numpy blocks are copied in place (read-only arrays included)
        elif len(block):
            padded[i, : len(block)] = block.detach().to("cpu", torch.float32)
    mask = torch.arange(padded.shape[1])[None, :] < torch.tensor(lengths, dtype=torch.long)[:, None]
    return padded, mask


def queries_per_batch(config, n_candidates: int, budget_mb: int) -> int:
    """How many lists of ``n_candidates`` fit the activation budget (at least one)."""
    per_token = 4 * (2 * config.embed_dim + 6 * config.hidden_size + config.ffn_size)  # bytes, fp32, one layer live
    per_query = (n_candidates + 1) * per_token * 2
    return max(1, int(budget_mb * 2**20 // max(per_query, 1)))


class ListScorer:
    """Ranks candidate lists with a head: ``rank(queries, lists) -> (order, scores, rounds)``."""

    def __init__(self, head: ListConRanker, schedule: PruneSchedule = PruneSchedule(), precision: str = "auto",
                 device: torch.device | str | None = None, memory_budget_mb: int = 1024) -> None:
        self.device = torch.device(device) if device is not None else next(head.parameters()).device
        self.precision = resolve_precision(precision, self.device, HEAD_PRECISIONS)
        self.head, self.schedule, self.memory_budget_mb = head, schedule, memory_budget_mb
        # int8: a quantized copy scores (made once); self.head stays the fp32 module callers own
        self._scoring_head = quantize_head(head) if self.precision == "int8" else head

    def score(self, query: torch.Tensor, passages: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The head's probabilities ``[B, N]`` in float32, under the chosen precision.

        For a head with signals, each candidate's row is its features followed by its signals
        (``[.., E + S]``), so iterative inference carries both through every round together.
        """
        e = self.head.config.embed_dim
        signals = passages[..., e:] if self.head.config.signals else None
        if self.precision == "int8":  # one list per call (int8_head: one activation scale per call)
            out = torch.zeros(mask.shape, dtype=torch.float32, device=mask.device)
            for row in range(len(mask)):
                live = mask[row].nonzero().squeeze(1)
                if len(live):
                    out[row, live] = self._scoring_head(
                        query[row : row + 1], passages[row : row + 1, live, :e], mask[row : row + 1, live],
                        None if signals is None else signals[row : row + 1, live]).float()[0]
            return out
        with autocast(self.precision, self.device):
            return self._scoring_head(query, passages[..., :e], mask, signals).float()

    def batches(self, lengths: Sequence[int]) -> Iterator[slice]:
        """Consecutive slices of lists whose activations fit the memory budget."""
        size = queries_per_batch(self.head.config, max(lengths, default=0), self.memory_budget_mb)
        return (slice(i, i + size) for i in range(0, len(lengths), size))

    @torch.inference_mode()
    def rank(self, queries: Features, lists: Sequence[Features],
             score_fn: ScoreFn | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Iterative inference over one batch of lists (``queries [B,E]``, ``lists[i] [n_i,E]``).

        A head with signals takes blocks ``[n_i, E + S]`` (features, then its signals in order).
        Returns numpy ``order [B,N]`` (candidate indices best first, -1 pads), ``scores``
        (round + probability, strictly decreasing) and ``rounds``. ``score_fn`` replaces the
        head's forward where the features are not fixed (the re-encode baseline).
        """
        self._scoring_head.eval()
        passages, mask = pad_lists(lists)
        query = (torch.from_numpy(np.array(queries, dtype=np.float32)) if isinstance(queries, np.ndarray)
                 else queries.to(torch.float32)).to(self.device)
        order, scores, rounds = iterative_rerank(
            score_fn or self.score, query, passages.to(self.device), mask.to(self.device),
            self.schedule.theta, self.schedule.beta, self.schedule.min_drop, return_rounds=True)
        return order.cpu().numpy(), scores.cpu().numpy(), rounds.cpu().numpy()
