"""The ListConRanker head over cached encoder features (config, module, checkpoints).

Paper: "ListConRanker: A Contrastive Text Reranker with Listwise Encoding" (ByteDance, 2024).
Inputs are pooled passage/query embeddings h from the frozen text encoder; the head projects
them to the list width, adds a learned type embedding (query vs passage) and LayerNorm, runs
a post-norm GELU Transformer under ListAttention, and fuses two scores:

    s = sigmoid(W1 [ relu(W2 [h_q; h_i]) ; relu(W3 [z_q; z_i]) ])

where h is the projected feature before the type embedding and z the Transformer output.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from listcon.model.attention import attention_mask
from listcon.model.head_config import (  # noqa: F401  (re-exported)
    CONFIG_FILE,
    FORMAT,
    WEIGHTS_FILE,
    CheckpointError,
    ListConRankerConfig,
    check_anchor,
    read_head_config,
)



class SelfAttention(nn.Module):
    """Multi-head self-attention with nn.MultiheadAttention's parameter names, run by SDPA."""

    def __init__(self, width: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.dropout = dropout
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def in_projection(self, x: torch.Tensor) -> torch.Tensor:
        """Q, K and V in one matmul (an int8 head replaces this with a quantized linear)."""
        return F.linear(x, self.in_proj_weight, self.in_proj_bias)

    def forward(self, x: torch.Tensor, allow: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        q, k, v = self.in_projection(x).chunk(3, dim=-1)
        heads = lambda t: t.view(batch, length, self.num_heads, width // self.num_heads).transpose(1, 2)  # noqa: E731
        out = F.scaled_dot_product_attention(
            heads(q), heads(k), heads(v), attn_mask=allow,
            dropout_p=self.dropout if self.training else 0.0,
        )
        return self.out_proj(out.transpose(1, 2).reshape(batch, length, width))


class EncoderLayer(nn.Module):
    """Post-norm Transformer layer (GELU), parameter-compatible with nn.TransformerEncoderLayer."""

    def __init__(self, cfg: ListConRankerConfig) -> None:
        super().__init__()
        w = cfg.hidden_size
        self.self_attn = SelfAttention(w, cfg.num_heads, cfg.dropout)
        self.linear1 = nn.Linear(w, cfg.ffn_size)
        self.linear2 = nn.Linear(cfg.ffn_size, w)
        self.norm1 = nn.LayerNorm(w, eps=cfg.layer_norm_eps)
        self.norm2 = nn.LayerNorm(w, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, allow: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x + self.dropout(self.self_attn(x, allow)))
        ffn = self.linear2(self.dropout(F.gelu(self.linear1(x))))
        return self.norm2(x + self.dropout(ffn))


class ListConRanker(nn.Module):
    """Listwise reranking head: ``probs = model(query [B,E], passages [B,N,E], mask [B,N])``."""

    def __init__(self, config: ListConRankerConfig) -> None:
        super().__init__()
        self.config = config
        self.learned_part = True  # False in an anchored() copy: the prior alone scores
        w = config.hidden_size
        self.linear_in_embedding = (
            nn.Linear(config.embed_dim, w) if config.embed_dim != w else nn.Identity()
        )
        self.type_embedding = nn.Embedding(2, w)  # row 1 = query, row 0 = passage (released layout)
        self.type_norm = nn.LayerNorm(w, eps=config.layer_norm_eps)
        self.layers = nn.ModuleList(EncoderLayer(config) for _ in range(config.num_layers))
        if config.features in ("fused", "original"):
            self.score_original = nn.Linear(2 * w, w)  # W2
        if config.features in ("fused", "list"):
            self.score_list = nn.Linear(2 * w, w)  # W3
        branches = 2 if config.features == "fused" else 1
        self.score_out = nn.Linear(branches * w, 1)  # W1
        if config.has_prior:
            # a (cosine), b (head logit); with signals the prior starts on the anchor instead of the cosine
            self.prior = nn.Parameter(self.initial_prior()[0])
        if config.signals:
            self.signal_prior = nn.Parameter(self.initial_prior()[1])  # per-signal weights, then the bias

    def logits(self, query: torch.Tensor, passages: torch.Tensor, mask: torch.Tensor,
               signals: torch.Tensor | None = None) -> torch.Tensor:
        """Pre-sigmoid scores ``[B, N]``; padded entries are 0 and carry no meaning.

        ``signals [B, N, S]`` (the config's signals, in its order) is required exactly when the head has signals.
        """
        _check_inputs(query, passages, mask, self.config.embed_dim)
        _check_signals(signals, passages, self.config.signals)
        if not self.learned_part:  # anchored: the prior alone, no Transformer to run
            return self._with_prior(torch.zeros(passages.shape[:2], dtype=passages.dtype, device=passages.device),
                                    query, passages, mask, signals)
        batch, n, _ = passages.shape
        h = self.linear_in_embedding(torch.cat([query[:, None, :], passages], dim=1))  # [B, 1+N, W]
        h_q, h_p = h[:, :1], h[:, 1:]
        branches = []
        if hasattr(self, "score_original"):
            branches.append(F.relu(self.score_original(torch.cat([h_q.expand_as(h_p), h_p], dim=-1))))
        if hasattr(self, "score_list"):
            types = torch.zeros(batch, n + 1, dtype=torch.long, device=h.device)
            types[:, 0] = 1
            z = self.type_norm(h + self.type_embedding(types))
            allow = attention_mask(self.config.attention, mask)
            for layer in self.layers:
                z = layer(z, allow)
            z_q, z_p = z[:, :1], z[:, 1:]
            branches.append(F.relu(self.score_list(torch.cat([z_q.expand_as(z_p), z_p], dim=-1))))
        # W1 as multiply-and-sum, not a [.,2W]x[2W,1] GEMM: BLAS picks its path for one output column
        # by the row count, which made a query's scores depend (by ulps) on what it was batched with.
        fused = torch.cat(branches, dim=-1)
        out = (fused * self.score_out.weight[0]).sum(dim=-1) + self.score_out.bias[0]
        return self._with_prior(out, query, passages, mask, signals)

    def _with_prior(self, out: torch.Tensor, query: torch.Tensor, passages: torch.Tensor, mask: torch.Tensor,
                    signals: torch.Tensor | None) -> torch.Tensor:
        """The head's logit ``out`` combined with the prior (if any); padding set to 0."""
        if hasattr(self, "prior"):
            head = self.prior[1] * out
            if self.config.head_cap is not None:
                head = self.config.head_cap * torch.tanh(head / self.config.head_cap)
            cosine = F.cosine_similarity(query[:, None, :], passages, dim=-1)
            out = self.prior[0] * cosine + head
            if signals is not None:
                out = out + (signals.to(out.dtype) * self.signal_prior[:-1]).sum(dim=-1) + self.signal_prior[-1]
        return out.masked_fill(~mask.bool(), 0.0)

    def initial_prior(self, anchor: dict[str, float] | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The prior's starting values: (a, b) and, with signals, the per-signal weights then the bias
        (``anchor`` overrides the config's anchor fusion).

        Signals are normalised to [0, 1]; the anchor's weights sum to 4 and the bias is -2, so the
        untrained logits lie in [-2, 2], where the sigmoid still has slope (a scale of 10 saturates
        it and stalls training). b = 0: the learned part starts silent.
        """
        config = self.config
        prior = torch.tensor([0.0 if config.signals else 10.0, 0.0])
        if not config.signals:
            return prior, None
        anchor = anchor or config.anchor_weights
        total = sum(anchor.values())
        weights = torch.zeros(len(config.signals) + 1)
        for name, weight in anchor.items():
            weights[config.signals.index(name)] = 4.0 * weight / total
        weights[-1] = -2.0
        return prior, weights

    def anchored(self, anchor: dict[str, float] | None = None) -> "ListConRanker":
        """A copy that scores by the anchor alone: the learned part off, the prior back at its start.

        What a head falls back to on a corpus outside its domain, where nothing showed that what it
        learned transfers: it then ranks exactly like the fixed first-stage fusion it was anchored to,
        or like ``anchor`` ({signal: weight} over signals it takes) where the caller names another.
        """
        if not hasattr(self, "prior"):
            raise ValueError("this head has no prior (no signals, no first_stage_prior): it has no anchor to fall back to")
        if anchor:
            check_anchor(anchor, self.config.signals, "a fallback anchor")
        copy = ListConRanker(self.config).to(self.prior.device)
        copy.load_state_dict(self.state_dict())
        prior, weights = self.initial_prior(anchor)
        with torch.no_grad():
            copy.prior.copy_(prior)
            if weights is not None:
                copy.signal_prior.copy_(weights)
        copy.learned_part = False
        return copy.train(self.training)

    def forward(self, query: torch.Tensor, passages: torch.Tensor, mask: torch.Tensor,
                signals: torch.Tensor | None = None) -> torch.Tensor:
        """Relevance probabilities ``[B, N]`` in (0, 1) for real passages, 0 for padding."""
        return torch.sigmoid(self.logits(query, passages, mask, signals)).masked_fill(~mask.bool(), 0.0)

    # -- checkpoints -------------------------------------------------------------------------

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``config.json`` + ``model.safetensors`` (no pickle) into ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        tmp_weights = directory / (WEIGHTS_FILE + ".tmp")
        save_file(state, str(tmp_weights), metadata={"format": FORMAT})
        tmp_config = directory / (CONFIG_FILE + ".tmp")
        tmp_config.write_text(json.dumps({"format": FORMAT, **asdict(self.config)}, indent=2) + "\n")
        tmp_weights.replace(directory / WEIGHTS_FILE)
        tmp_config.replace(directory / CONFIG_FILE)
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path, map_location: str | torch.device = "cpu") -> "ListConRanker":
        """Load a head saved by :meth:`save_pretrained`; never unpickles."""
        weights_path = Path(directory) / WEIGHTS_FILE
        model = cls(read_head_config(directory))
        try:
            state = load_file(str(weights_path), device=str(map_location))
        except (SafetensorError, OSError) as err:
            raise CheckpointError(f"{weights_path} is not a readable safetensors file: {err}") from err
        model.load_checked(state, str(weights_path))
        return model.eval()

    @classmethod
    def from_released(
        cls,
        list_transformer_pt: str | Path,
        linear_in_embedding_pt: str | Path | None = None,
        num_heads: int = 16,
    ) -> "ListConRanker":
        """Load the released ListConRanker head (``list_transformer.pt`` [+ ``linear_in_embedding.pt``]).

        Widths, FFN size and layer count come from tensor shapes; ``num_heads`` cannot be
        read from weights and must be given (16 for the released model).
        """
        from listcon.model.released import config_from_released, convert_released

        lt = _load_state(list_transformer_pt)
        lin = _load_state(linear_in_embedding_pt) if linear_in_embedding_pt is not None else None
        config = config_from_released(lt, lin, num_heads)
        model = cls(config)
        model.load_checked(convert_released(lt, lin), str(list_transformer_pt))
        return model.eval()

    def load_checked(self, state: dict[str, torch.Tensor], source: str) -> None:
        """Load a full state dict, naming missing/unexpected/mis-shaped keys on failure."""
        own = self.state_dict()
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        shapes = [
            f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
            for k in own.keys() & state.keys()
            if own[k].shape != state[k].shape
        ]
        if missing or unexpected or shapes:
            raise CheckpointError(
                f"{source} does not fit {self.config}: missing={missing[:5]} "
                f"unexpected={unexpected[:5]} shape mismatches={shapes[:5]}"
            )
        self.load_state_dict(state)


def _check_inputs(query: torch.Tensor, passages: torch.Tensor, mask: torch.Tensor, embed_dim: int) -> None:
    if passages.dim() != 3 or query.dim() != 2 or mask.dim() != 2:
        raise ValueError(
            f"expected query [B,E], passages [B,N,E], mask [B,N]; got {tuple(query.shape)}, "
            f"{tuple(passages.shape)}, {tuple(mask.shape)}"
        )
    if passages.shape[-1] != embed_dim or query.shape[-1] != embed_dim:
        raise ValueError(
            f"the head expects embed_dim={embed_dim} features, got query dim {query.shape[-1]} "
            f"and passage dim {passages.shape[-1]}"
        )
    if mask.shape != passages.shape[:2] or query.shape[0] != passages.shape[0]:
        raise ValueError(f"mask {tuple(mask.shape)} and query {tuple(query.shape)} do not match passages {tuple(passages.shape)}")


def _check_signals(signals: torch.Tensor | None, passages: torch.Tensor, names: tuple[str, ...]) -> None:
    if not names:
        if signals is not None:
            raise ValueError("this head takes no signals (its config names none), but signals were given")
        return
    if signals is None:
        raise ValueError(f"this head needs the signals {list(names)} for every candidate, and none were given")
    if tuple(signals.shape) != (*passages.shape[:2], len(names)):
        raise ValueError(f"signals must be [B, N, {len(names)}] ({list(names)}), got {tuple(signals.shape)}")


def _load_state(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a torch-saved state dict without unpickling arbitrary objects."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"released checkpoint file {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for bad/unsafe pickles
        raise CheckpointError(f"{path} is not a weights-only torch state dict: {err}") from err
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} does not hold a state dict of tensors")
    return state


def head_flops(config: ListConRankerConfig, batch: int, n: int) -> float:
    """Forward FLOPs of one head pass over ``batch`` lists of ``n`` passages (multiply-adds x2)."""
    w, e, f = config.hidden_size, config.embed_dim, config.ffn_size
    length = n + 1
    flops = 0.0
    if e != w:
        flops += 2 * length * e * w
    if config.features in ("fused", "list"):
        per_layer = 2 * length * w * 3 * w + 2 * length * w * w  # qkv + out projections
        per_layer += 2 * 2 * length * length * w  # QK^T and AV
        per_layer += 2 * 2 * length * w * f  # FFN
        flops += config.num_layers * per_layer + 2 * n * 2 * w * w
    if config.features in ("fused", "original"):
        flops += 2 * n * 2 * w * w
    flops += 2 * n * w * (2 if config.features == "fused" else 1)
    return batch * flops
