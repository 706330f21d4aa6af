"""An int8 copy of the head for CPU reranking (``--precision int8``).

The head's matmuls are nearly all Linear layers over ``N + 1`` list positions (Q/K/V and
output projections, the 384 x 2048 feed-forward pair, the score branches); int8 weights
with per-row activation scales (``Int8Linear``) run the whole head faster than fp32 on this
CPU (``bench/cpu_speed.py`` measures how much). The attention scores, softmax,
LayerNorm, the signal input, the final score layer and the prior stay in fp32, so the
int8 head reorders only candidates whose scores were already close.

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
    """``nn.Linear``'s forward with int8 weights (per output channel) and inputs quantized row by row.

    torch's dynamic int8 linear quantizes its whole input with one scale (the tensor's min and max), so
    a row's output would depend on every other row in the call: on the other queries of a batch, a
    list's padding, how long the list is. Here each row is divided by its own largest magnitude and one
    extra row spanning [-1, 1] fixes the call's range, so every row gets the same 7-bit grid scaled to
    itself: its output depends on that row alone (batched == per-query), and no row loses precision
    to a larger one. The bias is added after scaling back.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        w = weight.detach().to("cpu", torch.float32)
        scale = (w.abs().amax(dim=1).clamp(min=1e-8) / 127.0).double()
        with warnings.catch_warnings():  # the quantized-tensor deprecation note (see the module docstring)
            warnings.simplefilter("ignore")
            q = torch.quantize_per_channel(w, scale, torch.zeros(len(scale), dtype=torch.long), 0, torch.qint8)
            self._packed = torch.ops.quantized.linear_prepack(q, None)
        self.bias = None if bias is None else bias.detach().to("cpu", torch.float32)
        self.in_features, self.out_features = w.shape[1], w.shape[0]
        self._span = torch.zeros(1, self.in_features)
        self._span[0, 0], self._span[0, -1] = 1.0, -1.0  # with in_features 1, the range is [-1, 0]: still fixed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        rows = x.reshape(-1, shape[-1]).float()
        peak = rows.abs().amax(dim=1, keepdim=True).clamp(min=1e-30)
        unit = torch.cat([rows / peak, self._span]).contiguous()
        out = torch.ops.quantized.linear_dynamic(unit, self._packed, True)[:-1] * peak
        if self.bias is not None:
            out = out + self.bias
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
