"""Everything that decides the trained weights: the ``[train.settings]`` config section, without
torch (the loss function is imported when ``loss_fn()`` is called)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from listcon.model.choices import LOSS_NAMES, PRECISIONS
from listcon.model.head_config import CheckpointError, ListConRankerConfig, head_as_now
from listcon.schemas import build, check_choices, check_ranges, choice, option, to_dict

if TYPE_CHECKING:
    import torch

STAGE_MARGINS = {1: -0.2, 2: 0.1}


@dataclass(frozen=True)
class TrainSettings:
    """Everything that decides the trained weights (stored beside the checkpoint)."""

    stage: int = option(1, "1: head on cached features; 2: encoder + head end to end", choices=(1, 2))
    loss: str = choice("circle", LOSS_NAMES, "training loss (circle is the paper's)")
    gamma: float = option(10.0, "Circle Loss scale", above=0)
    margin: float | None = option(None, "Circle Loss m (default: -0.2 in stage 1, 0.1 in stage 2)")
    lr: float = option(1e-3, "head learning rate (AdamW; 0 keeps the initial weights)", at_least=0)
    encoder_lr: float = option(2e-5, "encoder learning rate (stage 2)", at_least=0)
    # The paper's stage 2 at a scale a CPU affords: the backward pass stops at the lowest trained layer,
    # and a token limit on the training passages bounds the forward pass.
    encoder_layers: int | None = option(None, "stage 2: train only the encoder's top N transformer layers (the rest, "
                                        "embeddings included, stay as they are); unset: every layer", at_least=1)
    passage_tokens: int | None = option(None, "stage 2: cut training passages to this many tokens (validation and "
                                        "the saved encoder keep the cache's limit); unset: the cache's", at_least=1)
    weight_decay: float = option(0.01, "AdamW weight decay", at_least=0)
    epochs: int = option(10, "most epochs", at_least=1)
    batch_size: int = option(16, "lists per optimizer step (before accumulation)", at_least=1)
    grad_accum: int = option(1, "micro-batches per optimizer step", at_least=1)
    max_steps_per_epoch: int | None = option(None, "cap on optimizer steps per epoch (a short budget)", at_least=1)
    patience: int = option(3, "stop after this many epochs without a better validation score", at_least=1)
    # A collection with 5 held-out queries moves its mean by 0.1 with one query: weighted alike with
    # scifact's 77, such noise picked the demo's epoch (scifact held-out 0.740 at epoch 4 over 0.758 at 8).
    val_weighting: str = choice("queries", ("queries", "collections"),
                                "validation's mean over collections: each held-out query counts alike, or each collection")
    # A verdict from 5 held-out queries is noise (medline: 0.888 -> 0.891 at the demo's epoch, p=0.43):
    # the head's domain takes a collection only on evidence.
    domain_alpha: float = option(0.05, "the learned part joins the head's domain on a collection only where it beats "
                                 "the anchor there by a one-sided paired t-test, p below this (1: any gain in the mean)",
                                 above=0, at_most=1)
    queries_per_source: int | None = option(None, "train on at most this many queries of each collection (a draw "
                                            "by seed), so that no single collection decides the head", at_least=1)
    val_depth: int = option(100, "candidates of each held-out query reranked for validation", at_least=1)
    seed: int = option(0, "seed of the initial weights, shuffling and dropout", at_least=0)
    precision: str = choice("auto", PRECISIONS, "auto: bf16 autocast on CUDA, fp32 on CPU")
    head: ListConRankerConfig = option(ListConRankerConfig(), "the head's shape (embed_dim comes from the features)",
                                       flag=False)
    init: str | None = option(None, "start from this head checkpoint (stage 2 from stage 1); its config wins over head")

    def __post_init__(self) -> None:
        check_ranges(self)
        check_choices(self)
        if self.stage == 1:
            for name in ("encoder_layers", "passage_tokens"):
                if getattr(self, name) is not None:
                    raise ValueError(f"{name} = {getattr(self, name)} applies to stage 2 (the encoder is trained); "
                                     "stage 1 trains the head on cached features: set stage = 2 or drop it")

    def loss_fn(self) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
        from listcon.model.losses import LOSSES

        fn = LOSSES[self.loss]
        if self.loss == "circle":
            margin = STAGE_MARGINS[self.stage] if self.margin is None else self.margin
            return lambda s, y, m: fn(s, y, m, gamma=self.gamma, m=margin)
        return fn


def settings_as_now(saved: dict) -> dict:
    """A training's settings (``to_dict`` form) an earlier version recorded, as this one writes them: an option
    added since takes its default and a retired one that changed nothing is dropped (``head_as_now``), so neither
    makes a rerun train again; where the head relied on a retired one, they stay as recorded, unequal to any
    settings now."""
    if not isinstance(saved.get("head"), dict):
        return saved
    try:
        return to_dict(build(TrainSettings, {**saved, "head": head_as_now(saved["head"])}))
    except (CheckpointError, ValueError):
        return saved
