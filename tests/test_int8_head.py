"""The int8 head (``--precision int8``): close to fp32, CPU only, and never alters the caller's head."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from listcon.model import ListConRanker, ListConRankerConfig, ListScorer, PruneSchedule, TextEncoder
from listcon.model.int8_head import Int8Linear, quantize_head

CONFIG = ListConRankerConfig(embed_dim=48, hidden_size=64, num_heads=4, num_layers=2, ffn_size=128, dropout=0.0)


def lists(seed: int, sizes=(40, 25, 33)) -> tuple[np.ndarray, list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((len(sizes), 48)).astype(np.float32),
            [rng.standard_normal((n, 48)).astype(np.float32) for n in sizes])


def test_int8_linear_is_within_quantization_error_of_fp32():
    torch.manual_seed(0)
    linear, x = nn.Linear(64, 96).requires_grad_(False), torch.randn(3, 17, 64)
    exact, quantized = linear(x), Int8Linear.from_linear(linear)(x)
    assert quantized.shape == exact.shape
    assert float((quantized - exact).norm() / exact.norm()) < 0.03  # 8-bit weights, 7-bit activations
    weights_only = x @ _dequantized(linear.weight).T + linear.bias  # the weight rounding alone is smaller still
    assert float((weights_only - exact).norm() / exact.norm()) < 0.01


def _dequantized(weight: torch.Tensor) -> torch.Tensor:
    scale = weight.abs().amax(dim=1, keepdim=True) / 127
    return torch.round(weight / scale).clamp(-127, 127) * scale


def test_int8_scorer_ranks_like_fp32_and_leaves_the_head_alone():
    torch.manual_seed(1)
    head = ListConRanker(CONFIG).eval()
    before = {k: v.clone() for k, v in head.state_dict().items()}
    fp32 = ListScorer(head, PruneSchedule(), precision="fp32", device="cpu")
    int8 = ListScorer(head, PruneSchedule(), precision="int8", device="cpu")
    queries, blocks = lists(2)
    order32, scores32, _ = fp32.rank(queries, blocks)
    order8, scores8, _ = int8.rank(queries, blocks)
    for row, n in enumerate(len(b) for b in blocks):
        top32, top8 = set(order32[row, :10]), set(order8[row, :10])
        assert len(top32 & top8) >= 8, (row, top32, top8)
        assert sorted(order8[row, :n]) == list(range(n))  # still a permutation of the list
    assert int8.head is head and all(torch.equal(before[k], v) for k, v in head.state_dict().items())
    assert all(p.dtype == torch.float32 for p in head.parameters())
    # the quantized copy's probabilities stay close to fp32's
    passages = torch.from_numpy(np.stack([b[:25] for b in blocks]))
    mask = torch.ones(3, 25, dtype=torch.bool)
    quantized = quantize_head(head)
    assert not any(module.training for module in quantized.modules())  # inference only: no dropout
    with torch.inference_mode():
        first = quantized(torch.from_numpy(queries), passages, mask)
        assert torch.equal(first, quantized(torch.from_numpy(queries), passages, mask))
        gap = first - head(torch.from_numpy(queries), passages, mask)
    assert float(gap.abs().max()) < 0.05


def test_the_int8_scorer_ranks_a_batch_of_lists_as_it_ranks_each_alone():
    """batched == per-query in int8 too: the int8 linears take one activation scale per call, so the scorer calls
    the head on one list's live candidates at a time; a list's ranking does not depend on the other lists scored
    with it, nor on the padding their lengths give it."""
    torch.manual_seed(6)
    scorer = ListScorer(ListConRanker(CONFIG).eval(), PruneSchedule(), precision="int8", device="cpu")
    queries, blocks = lists(7, sizes=(60, 12, 35, 48))
    order, scores, rounds = scorer.rank(queries, blocks)
    for row, block in enumerate(blocks):
        alone = scorer.rank(queries[row : row + 1], [block])
        n = len(block)
        np.testing.assert_array_equal(order[row, :n], alone[0][0, :n])
        np.testing.assert_array_equal(scores[row, :n], alone[1][0, :n])


def test_a_head_whose_learned_part_is_silent_ranks_identically_in_int8():
    """The prior and the signals stay fp32: an untrained signal head (b = 0) ranks exactly like fp32."""
    head = ListConRanker(ListConRankerConfig(**{**CONFIG.__dict__, "signals": ("fused", "lexical")})).eval()
    queries, blocks = lists(3)
    rng = np.random.default_rng(4)
    with_signals = [np.hstack([b, rng.random((len(b), 2), dtype=np.float32)]) for b in blocks]
    fp32 = ListScorer(head, precision="fp32", device="cpu").rank(queries, with_signals)
    int8 = ListScorer(head, precision="int8", device="cpu").rank(queries, with_signals)
    np.testing.assert_array_equal(fp32[0], int8[0])
    np.testing.assert_allclose(fp32[1], int8[1], rtol=0, atol=1e-6)  # fp32 rounding: int8 scores list by list


def test_int8_is_for_the_head_on_cpu_only(tiny_bert_dir):
    head = ListConRanker(CONFIG)
    with pytest.raises(ValueError, match="int8 is the CPU head's arithmetic"):
        ListScorer(head, precision="int8", device="cuda")
    with pytest.raises(ValueError, match="precision must be one of"):
        TextEncoder(tiny_bert_dir, precision="int8", device="cpu")
