"""The one training loop: stage 1 (frozen encoder, cached features) and stage 2 (end to end).

- Lists come from hard-negative mining; the loss is Circle Loss by default (gamma=10,
  m=-0.2 in stage 1, m=0.1 in stage 2) or one of the ablation losses.
- Each epoch ends with validation: the held-out queries' top-``val_depth`` candidates are
  ranked through the one scoring path (``ListScorer``: iterative inference under the
  training precision) and scored by nDCG@10. Without held-out queries the epoch with the
  lowest training loss counts as best. The best epoch is saved in ``save_pretrained`` form;
  training stops after ``patience`` epochs without gain.
- Every epoch is checkpointed atomically. A killed run resumes from the last checkpoint;
  the shuffle and dropout RNGs are seeded per epoch inside a forked RNG state (the caller's
  global RNG is left as it was), so on CPU a resumed run ends with the same weights.
- Runs alone or inside Ray Train: when torch.distributed is initialised, each rank trains on
  its share of the lists and ``wrap`` (e.g. ray.train.torch.prepare_model) adds DDP.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist
from torch import nn

from listcon.model import (
    EndToEnd,
    ListConRanker,
    ListScorer,
    PruneSchedule,
    autocast,
    resolve_precision,
)
from listcon.pipeline.evaluation.evaluate import aggregate, paired_test, per_query
from listcon.pipeline.training.checkpoints import resume, save_best, save_epoch
from listcon.pipeline.training.features import Lists, Validation
from listcon.pipeline.training.settings import TrainSettings  # noqa: F401  (re-exported)
from listcon.schemas import to_dict

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class FitResult:
    """What a training run reached; the same record in-process and on Ray Train."""

    best_metric: float
    best_epoch: int
    epochs_run: int
    history: list[dict]
    examples_per_s: float

    @classmethod
    def from_state(cls, state: dict) -> "FitResult":
        """Rebuild from the counters every epoch checkpoint stores."""
        rate = state["examples"] / state["busy_seconds"] if state["busy_seconds"] else 0.0
        return cls(state["best_metric"], state["best_epoch"], state["epoch"], state["history"], rate)


@torch.no_grad()
def rank_lists(scorer: ListScorer, features, lists: list[tuple[str, list[str]]], depth: int) -> dict[str, dict[str, float]]:
    """``{query: {passage: score}}`` for each query's top-``depth`` candidates, through the scoring path."""
    lists = [(q, c[:depth]) for q, c in lists if c]
    run: dict[str, dict[str, float]] = {}
    for part in scorer.batches([len(c) for _, c in lists]):
        chunk = lists[part]
        q, blocks = features.lists([x for x, _ in chunk], [c for _, c in chunk])
        order, scores, _ = scorer.rank(q, blocks)
        for i, (query, candidates) in enumerate(chunk):
            n = len(candidates)
            run[query] = {candidates[j]: float(s) for j, s in zip(order[i, :n].tolist(), scores[i, :n].tolist())}
    return run


def validate_by_collection(scorer: ListScorer, features, validation: Validation, depth: int) -> dict[str, dict[str, float]]:
    """Each held-out query's nDCG@10 from reranking its top-``depth`` candidates, per collection
    (``{"main": {...}}`` without groups)."""
    run = rank_lists(scorer, features, validation.lists, depth)
    values = per_query(validation.qrels, run, ["nDCG@10"])["nDCG@10"]
    groups: dict[str, dict[str, float]] = {}
    for query, value in values.items():
        groups.setdefault(validation.group.get(query, "") if validation.group else "main", {})[query] = value
    if validation.group:
        log.info("validation nDCG@10 by collection: %s",
                 {k: f"{v:.4f} ({len(groups[k])} q)" for k, v in means(groups).items()})
    return groups


def means(by_collection: dict[str, dict[str, float]]) -> dict[str, float]:
    """Each collection's mean over its held-out queries."""
    return {name: aggregate({"v": values})["v"] for name, values in by_collection.items()}


def validate(scorer: ListScorer, features, validation: Validation, depth: int) -> float:
    """The mean over collections of :func:`validate_by_collection` (each collection counts alike)."""
    by_collection = means(validate_by_collection(scorer, features, validation, depth))
    return sum(by_collection.values()) / len(by_collection)


def gated(by_collection: dict[str, float], anchor: dict[str, float] | None,
          weights: dict[str, int] | None = None) -> float:
    """An epoch's validation score when the learned part is kept only where it helps: per collection
    the better of the head and the anchor (epoch 0; without an anchor, the head's), averaged with
    ``weights`` (e.g. held-out queries per collection; None: each collection alike)."""
    kept = {name: v if anchor is None else max(v, anchor[name]) for name, v in by_collection.items()}
    weight = {name: 1 if weights is None else weights[name] for name in kept}
    return sum(weight[name] * v for name, v in kept.items()) / sum(weight.values())


def domain_verdicts(history: list[dict], best_epoch: int, alpha: float = 0.05) -> dict[str, dict]:
    """Per validated collection: ``{"learned_helps", "anchor", "head", "p"}``. The learned part helps
    where the best epoch's head beat the anchor (epoch 0, or the anchor a fine-tuning ranked apart) on that
    collection's held-out queries, by a one-sided paired t-test with ``p < alpha`` (a mean gain has p < 0.5,
    so 1 takes any gain); ``head`` and ``p`` are None where the best epoch was not validated."""
    by_epoch = {r["epoch"]: r.get("val_queries") or {} for r in history}
    apart = anchor_apart(history)
    anchor, best = apart if apart is not None else by_epoch.get(0, {}), by_epoch.get(best_epoch, {})
    anchor_means, best_means = means(anchor), means(best)
    verdicts = {}
    for name, values in anchor.items():
        head = best.get(name)
        helps, p = beats(head, values, alpha) if head is not None else (False, None)
        verdicts[name] = {"learned_helps": (best_epoch > 0 or apart is not None) and helps, "anchor": anchor_means[name],
                          "head": best_means.get(name), "p": p}
    return verdicts


def beats(head: dict[str, float], anchor: dict[str, float], alpha: float) -> tuple[bool, float]:
    """Whether per-query values ``head`` beat ``anchor`` (a higher mean, and a one-sided paired t-test with
    ``p < alpha``), and that p."""
    p = paired_test(head, anchor, alternative="greater")
    return sum(head.values()) / len(head) > sum(anchor.values()) / len(anchor) and p < alpha, p


def starts_as_anchor(settings: TrainSettings) -> bool:
    """Whether the untrained head ranks exactly like its anchor fusion (a prior, no init checkpoint):
    then epoch 0 is the anchor, validation is gated against it, and the head has a domain."""
    return not settings.init and settings.head.has_prior


def anchor_apart(history: list[dict]) -> dict[str, dict[str, float]] | None:
    """The anchor's held-out values a fine-tuning ranked apart (epoch 0's ``anchor_queries``), None for a training
    whose epoch 0 is the anchor itself or that had no prior."""
    return next((r["anchor_queries"] for r in history if r["epoch"] == 0 and "anchor_queries" in r), None)


def records_domain(settings: TrainSettings, history: list[dict]) -> bool:
    """Whether a training's head gets a domain: it started as its anchor, or it was fine-tuned from a head with a
    prior (whose anchor was then ranked on the held-out queries apart)."""
    return starts_as_anchor(settings) or anchor_apart(history) is not None


def ddp_unused_parameters(settings: TrainSettings) -> bool:
    """Whether DDP must look for parameters the loss never reaches: stage 2's encoder pooler and a
    head without the list branch (``features="original"``) have some, and DDP's reducer otherwise
    waits for their gradients ("Expected to have finished reduction") at the second step."""
    return settings.stage == 2 or settings.head.features == "original"


def fit(lists: Lists, validation: Validation | None, features, settings: TrainSettings, out_dir: str | Path, *,
        schedule: PruneSchedule = PruneSchedule(), encoder_info: dict | None = None,
        device: torch.device | str = "cpu", wrap: Callable[[nn.Module], nn.Module] = lambda m: m,
        on_epoch: Callable[[dict], None] | None = None) -> FitResult:
    """Train a head (stage 1) or encoder + head (stage 2); the best epoch ends up in ``out_dir``."""
    device = torch.device(device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        return _fit(lists, validation, features, settings, Path(out_dir), schedule, encoder_info or {}, device, wrap,
                    on_epoch)


def _fit(lists: Lists, validation: Validation | None, features, settings: TrainSettings, out_dir: Path,
         schedule: PruneSchedule, encoder_info: dict, device: torch.device, wrap, on_epoch) -> FitResult:
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    precision = resolve_precision(settings.precision, device)
    torch.manual_seed(settings.seed)
    if settings.init:
        head = ListConRanker.from_pretrained(settings.init).train()
    else:
        head = ListConRanker(replace(settings.head, embed_dim=features.dim))
    encoder = features.encoder if settings.stage == 2 else None
    module: nn.Module = head if encoder is None else EndToEnd(head, encoder)
    module.to(device)
    groups = [{"params": list(head.parameters()), "lr": settings.lr}]
    if encoder is not None:
        trained_part = encoder.top_layers(settings.encoder_layers) if settings.encoder_layers else None
        if trained_part is not None:  # the rest gets no gradient: the backward pass stops at the lowest trained layer
            kept = {id(p) for p in trained_part}
            for parameter in encoder.model.parameters():
                parameter.requires_grad_(id(parameter) in kept)
        groups.append({"params": trained_part or list(encoder.model.parameters()), "lr": settings.encoder_lr})
    optimizer = torch.optim.AdamW(groups, weight_decay=settings.weight_decay)
    state = {"epoch": 0, "best_metric": None, "best_epoch": -1, "bad_epochs": 0, "history": [], "examples": 0,
             "busy_seconds": 0.0}
    resumed = resume(out_dir, module, optimizer)
    if resumed:
        state = resumed
        log.info("train: resuming after epoch %d (best %.4f at epoch %d)", state["epoch"], state["best_metric"],
                 state["best_epoch"])
    trained = wrap(module)
    loss_fn = settings.loss_fn()
    scorer = ListScorer(head, schedule, precision, device)
    # With a prior (and no init checkpoint) epoch 0 is exactly the anchor fusion: an epoch's score then
    # counts, per collection, the better of the head and the anchor, since the head's learned part is
    # applied only on the collections where it beat the anchor (the head's domain, see domain_verdicts).
    anchored = starts_as_anchor(settings)
    weights = validation.sizes() if validation and settings.val_weighting == "queries" else None
    if not resumed and validation and validation.lists:
        # Epoch 0: the head before training (with a prior, it ranks like the first stage). Training has
        # to beat it on validation to replace it, so a run that does not generalise keeps the prior.
        module.eval()
        per_query_values = validate_by_collection(scorer, features, validation, settings.val_depth)
        by_collection = means(per_query_values)
        state.update(best_metric=gated(by_collection, None, weights), best_epoch=0)
        state["history"].append({"epoch": 0, "loss": None, "val_ndcg@10": state["best_metric"],
                                 "val_by_collection": by_collection, "val_queries": per_query_values, "steps": 0,
                                 "train_seconds": 0.0, "seconds": 0.0})
        if settings.init and head.config.has_prior:
            # fine-tuning a head: epoch 0 is that head, so its anchor, the yardstick of the domain, is ranked apart
            yardstick = ListScorer(head.anchored(), schedule, precision, device)
            state["history"][0]["anchor_queries"] = validate_by_collection(yardstick, features, validation,
                                                                           settings.val_depth)
        if rank == 0:
            save_best(out_dir, head, encoder, to_dict(settings), encoder_info)
        log.info("train: before training, validation %.4f", state["best_metric"])
    for epoch in range(state["epoch"], settings.epochs):
        if state["bad_epochs"] >= settings.patience:
            break
        order = torch.randperm(len(lists), generator=torch.Generator().manual_seed(settings.seed * 7919 + epoch))
        # every rank gets the same number of lists, hence of batches and all-reduces: with uneven
        # shares one rank would wait in an all-reduce the others never join (up to world - 1 lists
        # sit out an epoch; the shuffle changes which)
        mine = order[: len(order) // world * world][rank::world].tolist()
        torch.manual_seed(settings.seed * 104729 + epoch * world + rank)  # dropout
        trained.train()
        started = time.perf_counter()
        steps, total = 0, 0.0
        batches = [mine[i : i + settings.batch_size] for i in range(0, len(mine), settings.batch_size)]
        if settings.max_steps_per_epoch:
            batches = batches[: settings.max_steps_per_epoch * settings.grad_accum]
        for index, batch in enumerate(batches):
            inputs = features.inputs([lists.query_ids[i] for i in batch], [lists.passages[i] for i in batch], device)
            labels = torch.zeros(inputs["mask"].shape, dtype=torch.float32, device=device)
            for row, i in enumerate(batch):
                labels[row, : len(lists.labels[i])] = torch.tensor(lists.labels[i], dtype=torch.float32)
            step_now = (index + 1) % settings.grad_accum == 0 or index + 1 == len(batches)
            # DDP: only the micro-batch that ends an accumulation all-reduces its gradients
            sync = trained.no_sync() if not step_now and hasattr(trained, "no_sync") else contextlib.nullcontext()
            with sync:
                with autocast(precision, device):
                    probs = trained(**inputs)
                loss = loss_fn(probs.float(), labels, inputs["mask"]) / settings.grad_accum
                loss.backward()
            total += loss.item() * settings.grad_accum
            if step_now:
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                steps += 1
            state["examples"] += len(batch) * world
        trained_for = time.perf_counter() - started
        state["busy_seconds"] += trained_for
        module.eval()  # the encoder too, in stage 2: no dropout while validating
        loss_mean = total / max(len(batches), 1)
        by_collection = per_query_values = None
        if validation and validation.lists:
            per_query_values = validate_by_collection(scorer, features, validation, settings.val_depth)
            by_collection = means(per_query_values)
            # stage 2 moves the encoder, so the anchor the head falls back to is no longer epoch 0's: no gating
            anchor = state["history"][0].get("val_by_collection") if anchored and settings.stage == 1 else None
            metric = gated(by_collection, anchor, weights)
        else:
            metric = -loss_mean  # no held-out queries: the lowest training loss is the best epoch
        improved = state["best_metric"] is None or metric > state["best_metric"]
        if improved and anchored and settings.stage == 2 and per_query_values:
            # ... and the tuned encoder replaces the start only where the learned part beats it by the domain's
            # test: a head whose learned part is off must fall back to the anchor validation measured (epoch 0's)
            start = state["history"][0]["val_queries"]
            improved = all(beats(per_query_values[name], start[name], settings.domain_alpha)[0] for name in start)
        record = {"epoch": epoch + 1, "loss": loss_mean, "val_ndcg@10": metric if validation and validation.lists else None,
                  "val_by_collection": by_collection, "val_queries": per_query_values, "steps": steps, "train_seconds": trained_for,
                  "seconds": time.perf_counter() - started}
        state["history"].append(record)
        if improved:
            state.update(best_metric=metric, best_epoch=epoch + 1, bad_epochs=0)
            if rank == 0:
                save_best(out_dir, head, encoder, to_dict(settings), encoder_info)
        else:
            state["bad_epochs"] += 1
        state["epoch"] = epoch + 1
        if rank == 0:
            save_epoch(out_dir, module, optimizer, state)
        if world > 1:
            dist.barrier()
        log.info("train: epoch %d loss %.4f validation %.4f (best %.4f @ %d) %.1fs", epoch + 1, record["loss"],
                 metric, state["best_metric"], state["best_epoch"], record["seconds"])
        if on_epoch:
            on_epoch(record)
    return FitResult.from_state(state)
