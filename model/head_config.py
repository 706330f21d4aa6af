"""The head's configuration (stored in every checkpoint as config.json), without torch."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from listcon.model.choices import ATTENTIONS, FEATURES
from listcon.schemas import SIGNALS, ConfigError, build, check_choices, check_ranges, choice, option

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
FORMAT = "listcon-head/1"


def check_anchor(anchor: dict[str, float], signals: tuple[str, ...], what: str = "anchor") -> None:
    """An anchor fusion weighs signals the head takes, with non-negative weights summing above 0."""
    if set(anchor) - set(signals) or min(anchor.values()) < 0 or sum(anchor.values()) <= 0:
        raise ValueError(f"{what} weighs signals the head takes ({list(signals)}) with non-negative weights "
                         f"summing above 0; got {anchor}")


class CheckpointError(ValueError):
    """A checkpoint directory that is missing, corrupted, or does not fit the model."""


@dataclass(frozen=True)
class ListConRankerConfig:
    """Shape and variant of the listwise head; stored in every checkpoint as config.json."""

    # Options the evidence retired: a config naming one is refused with why (schemas.build reads this).
    RETIRED: ClassVar[dict[str, str]] = {
        "signal_input": "retired in 2026-12: a head's signals enter its prior only (signals also in the Transformer "
                        "input lost in and out of domain, docs/results.md); remove the key"}
    embed_dim: int = option(384, "width of the encoder features (set from the cache when training)", flag=False, at_least=1)
    hidden_size: int = option(384, "list width (a linear projection maps embed_dim to it when they differ)", at_least=1)
    num_heads: int = option(12, "attention heads of the ListTransformer", at_least=1)
    num_layers: int = option(2, "ListTransformer layers", at_least=1)
    ffn_size: int = option(2048, "feed-forward width of each layer", at_least=1)
    dropout: float = option(0.1, "dropout in the ListTransformer", at_least=0, at_most=0.9)
    attention: str = choice("list", ATTENTIONS, "list: ListAttention (the paper); bidirectional; passage")
    features: str = choice("fused", FEATURES, "fused: both score branches (the paper); list or original only")
    layer_norm_eps: float = option(1e-5, "LayerNorm epsilon", flag=False, above=0)
    # Not in the paper: score = sigmoid(a * cos(h_q, h_i) + b * head_logit) with a, b learned and
    # initialised (a=10, b=0) so the untrained head ranks exactly like the first stage.
    first_stage_prior: bool = option(False, "score = sigmoid(a*cos + b*head), starting as the first stage (not in the paper)")
    # Not in the paper: per-candidate first-stage signals (listcon.schemas.SIGNALS) the head takes beside
    # the embeddings, in a learned prior w . signals + c + a*cos + b*head, initialised (w = 4 spread over the
    # anchor's signals, c=-2) so the untrained head ranks by the anchor. (They also entered the Transformer
    # input until 2026-12, `signal_input`: see RETIRED.)
    signals: tuple[str, ...] = option((), "first-stage signals the head takes in its prior (e.g. fused lexical dense)")
    # The fixed fusion the prior starts from, and what the head falls back to where its learned part is
    # off (a corpus outside its domain): {signal: weight}; empty = the first signal alone.
    anchor: dict[str, float] = option({}, "the prior's starting fusion, {signal: weight} (default: the first signal)",
                                      flag=False)
    # Bound on the head's contribution to the logit: cap * tanh(b * head / cap), so the learned part can
    # reorder only candidates the prior scores within 2 * cap of each other (None: unbounded).
    head_cap: float | None = option(None, "bound on the learned part's logit (anchors the ranking to the prior)", above=0)

    def __post_init__(self) -> None:
        check_ranges(self)
        check_choices(self)
        unknown = [n for n in self.signals if n not in SIGNALS]
        if unknown or len(set(self.signals)) != len(self.signals):
            raise ValueError(f"signals must be distinct names from {SIGNALS}; got {list(self.signals)}")
        if self.anchor:
            check_anchor(self.anchor, self.signals)
        if self.head_cap is not None and not self.has_prior:
            raise ValueError(f"head_cap bounds the head against a prior: it needs first_stage_prior or signals; "
                             f"got {self.head_cap}")
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size={self.hidden_size} must be divisible by num_heads={self.num_heads}"
            )

    @property
    def has_prior(self) -> bool:
        """Whether the head scores through a prior (signals, or the first stage's cosine): an anchor to fall back to."""
        return bool(self.first_stage_prior or self.signals)

    @property
    def anchor_weights(self) -> dict[str, float]:
        """The fixed fusion the prior starts from and falls back to: ``anchor``, else the first signal alone."""
        return self.anchor or {self.signals[0]: 1.0}

    @classmethod
    def from_dict(cls, saved: dict) -> "ListConRankerConfig":
        """Rebuild from a saved dict, refusing keys, types or values this version does not know."""
        if not isinstance(saved, dict):
            raise CheckpointError(f"checkpoint config must be a JSON object of head settings, got {type(saved).__name__}")
        saved = head_as_now(saved)
        try:
            return build(cls, saved, "head")
        except (ConfigError, ValueError, TypeError) as err:
            raise CheckpointError(f"checkpoint config: {err}") from None


def head_as_now(saved: dict) -> dict:
    """A head config an earlier version saved, as this one writes it: a retired option dropped where it changed
    nothing (``signal_input`` off, or on a head without signals); CheckpointError where the head relied on it."""
    if "signal_input" not in saved:
        return saved
    saved = dict(saved)
    if saved.pop("signal_input") and saved.get("signals"):
        raise CheckpointError("checkpoint config: this head takes its signals as Transformer input too "
                              "(signal_input = true), which listcon no longer runs (retired in 2026-12: the "
                              "prior-only head won in and out of domain, docs/results.md); retrain it")
    return saved


def read_head_config(directory: str | Path) -> ListConRankerConfig:
    """The config of the head saved at ``directory`` (both checkpoint files must be there)."""
    directory = Path(directory)
    config_path = directory / CONFIG_FILE
    for path in (config_path, directory / WEIGHTS_FILE):
        if not path.is_file():
            raise CheckpointError(f"{directory} is not a listcon checkpoint: {path.name} is missing "
                                  f"(expected {CONFIG_FILE} + {WEIGHTS_FILE}, as written by save_pretrained)")
    try:
        saved = json.loads(config_path.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{config_path} is not valid JSON: {err}") from err
    if not isinstance(saved, dict) or saved.pop("format", None) != FORMAT:
        raise CheckpointError(f"{config_path} is not a {FORMAT} config")
    return ListConRankerConfig.from_dict(saved)


def checkpoint_fingerprint(directory: str | Path) -> str:
    """SHA-256 of a checkpoint's weights and config (part of a ranking's provenance)."""
    digest = hashlib.sha256()
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        with open(Path(directory) / name, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()
