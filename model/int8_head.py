"""An int8 copy of the head for CPU reranking (``--precision int8``).

The head's matmuls are nearly all Linear layers over ``N + 1`` list positions (Q/K/V and
output projections, the 384 x 2048 feed-forward pair, the score branches); int8 weights run
them faster than fp32 on CPUs without fast fp32 matrix units (``bench/cpu_speed.py``
measures the ratio on the machine at hand).

The activations are quantized per call with one scale (the input's range), so a row's output
depends on every row in the call: ``ListScorer`` therefore calls the int8 head on one list's
live candidates at a time, and a list's scores never depend on what it is batched with. The
attention scores, softmax, LayerNorm, the final score layer and the prior
stay in fp32, so the int8 head reorders only candidates whose scores were already close.

It runs on torch's fbgemm quantized kernels: weights quantized per output channel,
activations quantized per call with ``reduce_range`` (7-bit), which keeps the AVX2 int8
multiply-add from saturating. Torch marks its quantized-tensor API deprecated in favour of
torchao; an ONNX Runtime export of the head measured only 1.28x, so these kernels stay
until torchao offers a CPU dynamic-int8 linear that is as fast.
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import nn

from listcon.model.ranker import ListConRanker, SelfAttention


class Int8Linear(nn.Module):
    """``nn.Linear``'s forward with int8 weights (per output channel) and dynamically quantized inputs (one
    activation scale per call: see the module docstring)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        w = weight.detach().to("cpu", torch.float32)
        scale = (w.abs().amax(dim=1).clamp(min=1e-8) / 127.0).double()
        with warnings.catch_warnings():  # the quantized-tensor deprecation note (see the module docstring)
            warnings.simplefilter("ignore")
            q = torch.quantize_per_channel(w, scale, torch.zeros(len(scale), dtype=torch.long), 0, torch.qint8)
            self._packed = torch.ops.quantized.linear_prepack(
                q, None if bias is None else bias.detach().to("cpu", torch.float32))
        self.in_features, self.out_features = w.shape[1], w.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        out = torch.ops.quantized.linear_dynamic(x.reshape(-1, shape[-1]).float().contiguous(), self._packed, True)
        return out.reshape(*shape[:-1], self.out_features)

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> "Int8Linear":
        return cls(linear.weight, linear.bias)


class Int8SelfAttention(SelfAttention):
    """:class:`SelfAttention` with int8 Q/K/V and output projections (same forward)."""

    def __init__(self, source: SelfAttention) -> None:
        nn.Module.__init__(self)
        self.num_heads, self.dropout = source.num_heads, source.dropout
        self.in_proj = Int8Linear(source.in_proj_weight, source.in_proj_bias)
        self.out_proj = Int8Linear.from_linear(source.out_proj)

    def in_projection(self, x: torch.Tensor) -> torch.Tensor:
        return self.in_proj(x)


def quantize_head(head: ListConRanker) -> ListConRanker:
    """An inference-only CPU copy of ``head`` whose large matmuls run in int8; ``head`` is untouched."""
    quantized = copy.deepcopy(head).to("cpu").eval()
    for layer in quantized.layers:
        layer.self_attn = Int8SelfAttention(layer.self_attn)
        layer.linear1, layer.linear2 = Int8Linear.from_linear(layer.linear1), Int8Linear.from_linear(layer.linear2)
    for name in ("linear_in_embedding", "score_original", "score_list"):
        module = getattr(quantized, name, None)
        if isinstance(module, nn.Linear):
            setattr(quantized, name, Int8Linear.from_linear(module))
    for parameter in quantized.parameters():
        parameter.requires_grad_(False)
    return quantized.eval()  # the new attention modules start in training mode (dropout on)
