"""Key mapping from the released ListConRanker checkpoint to :class:`ListConRanker`.

The released head is two torch state dicts:
- ``linear_in_embedding.pt``: ``weight [W, E]``, ``bias [W]`` (1024 -> 1792 in the release);
- ``list_transformer.pt``: ``query_embedding.query_embedding.weight [2, W]`` (row 1 tags the
  query), ``query_embedding.layerNorm.*``, ``list_transformer.layers.{i}.*`` (PyTorch
  ``nn.TransformerEncoderLayer``), ``linear_score{1,2,3}.*`` and a duplicate template layer
  ``list_transformer_layer.*`` that forward never uses (dropped here).
"""

from __future__ import annotations

import re

import torch

from listcon.model.ranker import CheckpointError, ListConRankerConfig

_LAYER = re.compile(r"^list_transformer\.layers\.(\d+)\.(.+)$")
_RENAMES = {
    "query_embedding.query_embedding.weight": "type_embedding.weight",
    "query_embedding.layerNorm.weight": "type_norm.weight",
    "query_embedding.layerNorm.bias": "type_norm.bias",
    "linear_score1.weight": "score_out.weight",
    "linear_score1.bias": "score_out.bias",
    "linear_score2.weight": "score_original.weight",
    "linear_score2.bias": "score_original.bias",
    "linear_score3.weight": "score_list.weight",
    "linear_score3.bias": "score_list.bias",
}


def config_from_released(
    list_transformer: dict[str, torch.Tensor],
    linear_in_embedding: dict[str, torch.Tensor] | None,
    num_heads: int,
) -> ListConRankerConfig:
    """Infer width, FFN size, layer count and input dim from the released tensors' shapes."""
    try:
        width = list_transformer["query_embedding.query_embedding.weight"].shape[1]
        ffn = list_transformer["list_transformer.layers.0.linear1.weight"].shape[0]
    except KeyError as err:
        raise CheckpointError(
            f"not a released ListConRanker list_transformer state dict: key {err} is missing"
        ) from err
    layers = {int(m.group(1)) for k in list_transformer if (m := _LAYER.match(k))}
    embed_dim = width
    if linear_in_embedding is not None:
        if set(linear_in_embedding) != {"weight", "bias"}:
            raise CheckpointError(
                f"linear_in_embedding state dict must hold weight and bias, got {sorted(linear_in_embedding)}"
            )
        out_dim, embed_dim = linear_in_embedding["weight"].shape
        if out_dim != width:
            raise CheckpointError(
                f"linear_in_embedding maps to {out_dim} but the list transformer is {width} wide"
            )
        if embed_dim == width:
            raise CheckpointError(
                "linear_in_embedding is square; listcon keeps a projection only when widths differ"
            )
    return ListConRankerConfig(
        embed_dim=embed_dim, hidden_size=width, num_heads=num_heads, num_layers=len(layers),
        ffn_size=ffn, dropout=0.1, attention="list", features="fused",
    )


def convert_released(
    list_transformer: dict[str, torch.Tensor],
    linear_in_embedding: dict[str, torch.Tensor] | None,
) -> dict[str, torch.Tensor]:
    """Rename released keys to listcon's; drop the unused template layer."""
    state: dict[str, torch.Tensor] = {}
    for key, value in list_transformer.items():
        if key.startswith("list_transformer_layer."):
            continue
        if m := _LAYER.match(key):
            state[f"layers.{m.group(1)}.{m.group(2)}"] = value
        elif key in _RENAMES:
            state[_RENAMES[key]] = value
        else:
            raise CheckpointError(f"unexpected key {key!r} in the released list_transformer state dict")
    if linear_in_embedding is not None:
        state.update({f"linear_in_embedding.{k}": v for k, v in linear_in_embedding.items()})
    return state
