"""The one training loop: stage 1 (frozen encoder, cached features) and stage 2 (end to end).

- Lists come from hard-negative mining; the loss is Circle Loss by default (gamma=10,
  m=-0.2 in stage 1, m=0.1 in stage 2) or one of the ablation losses.
- Each epoch ends with validation: the held-out queries' top-``val_depth`` candidates are
  reranked by iterative inference and scored by nDCG@10 (ir-measures). The best epoch is
  saved in ``save_pretrained`` format; training stops after ``patience`` epochs without gain.
- Every epoch is checkpointed atomically (weights, optimizer, counters). A killed run resumes
  from the last checkpoint; the shuffle and dropout RNGs are re-seeded per epoch, so on CPU
  a resumed run ends with the same weights as an uninterrupted one.
- Runs alone or inside Ray Train: when torch.distributed is initialised, each rank trains on
  its share of the lists and ``wrap`` (e.g. ray.train.torch.prepare_model) adds DDP.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import pyarrow as pa
import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from torch import nn

from listcon.model import LOSSES, EndToEnd, ListConRanker, ListConRankerConfig, TextEncoder, iterative_rerank
from listcon.pipeline.embedding_cache import EmbeddingCache
from listcon.pipeline.evaluate import aggregate, per_query

log = logging.getLogger(__name__)

STAGE_MARGINS = {1: -0.2, 2: 0.1}
CHECKPOINTS = "checkpoints"


@dataclass(frozen=True)
class TrainSettings:
    """Everything that decides the trained weights (stored beside the checkpoint)."""

    stage: int = 1
    loss: str = "circle"
    gamma: float = 10.0
    margin: float | None = None  # None: -0.2 in stage 1, 0.1 in stage 2
    lr: float = 1e-3
    encoder_lr: float = 2e-5  # stage 2
    weight_decay: float = 0.01
    epochs: int = 10
    batch_size: int = 16  # lists per optimizer step (before accumulation)
    grad_accum: int = 1
    max_steps_per_epoch: int | None = None  # a short budget (stage 2 on CPU)
    patience: int = 3
    val_depth: int = 100
    theta: int = 20
    beta: float = 0.2
    min_drop: int = 10
    seed: int = 0
    mixed_precision: bool = True  # bf16 autocast on CUDA; never on CPU
    head: dict = field(default_factory=dict)  # ListConRankerConfig fields (embed_dim comes from the data)
    init: str | None = None  # start from this head checkpoint (stage 2 from stage 1); its config wins over `head`

    def __post_init__(self) -> None:
        if self.stage not in STAGE_MARGINS:
            raise ValueError(f"stage must be 1 or 2, got {self.stage}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {sorted(LOSSES)}, got {self.loss!r}")

    def loss_fn(self) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
        fn = LOSSES[self.loss]
        if self.loss == "circle":
            margin = STAGE_MARGINS[self.stage] if self.margin is None else self.margin
            return lambda s, y, m: fn(s, y, m, gamma=self.gamma, m=margin)
        return fn


@dataclass
class Lists:
    """Training lists: query ids, passage ids per list, labels per list."""

    query_ids: list[str]
    passages: list[list[str]]
    labels: list[list[int]]

    @classmethod
    def from_table(cls, table: pa.Table, prefix: str = "") -> "Lists":
        name = (lambda x: f"{prefix}/{x}") if prefix else (lambda x: x)
        return cls([name(q) for q in table["query_id"].to_pylist()],
                   [[name(p) for p in c] for c in table["passage_ids"].to_pylist()], table["labels"].to_pylist())

    def __add__(self, other: "Lists") -> "Lists":
        return Lists(self.query_ids + other.query_ids, self.passages + other.passages, self.labels + other.labels)

    def __len__(self) -> int:
        return len(self.query_ids)


@dataclass
class Validation:
    """Held-out queries: their candidate lists (best first) and qrels."""

    lists: list[tuple[str, list[str]]]
    qrels: pa.Table


class CachedFeatures:
    """Stage 1: features from the Lance caches, loaded once into memory."""

    def __init__(self, passages: EmbeddingCache, queries: EmbeddingCache, passage_ids: list[str], query_ids: list[str]) -> None:
        pids = list(dict.fromkeys(passage_ids))
        qids = list(dict.fromkeys(query_ids))
        self.p_row = {p: i for i, p in enumerate(pids)}
        self.q_row = {q: i for i, q in enumerate(qids)}
        self.p = torch.tensor(passages.take(pids))
        self.q = torch.tensor(queries.take(qids))
        self.dim = self.p.shape[1]

    @classmethod
    def combine(cls, parts: dict[str, "CachedFeatures"]) -> "CachedFeatures":
        """One feature store over several corpora; ids become ``<name>/<id>`` (ids may collide), the '' part keeps its ids."""
        combined = cls.__new__(cls)
        combined.p_row, combined.q_row, p_parts, q_parts = {}, {}, [], []
        for name, part in parts.items():
            key = (lambda k: f"{name}/{k}") if name else (lambda k: k)
            combined.p_row.update({key(k): v + sum(len(x) for x in p_parts) for k, v in part.p_row.items()})
            combined.q_row.update({key(k): v + sum(len(x) for x in q_parts) for k, v in part.q_row.items()})
            p_parts.append(part.p)
            q_parts.append(part.q)
        combined.p, combined.q = torch.cat(p_parts), torch.cat(q_parts)
        combined.dim = combined.p.shape[1]
        return combined

    def vectors(self, query_ids: list[str], lists: list[list[str]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        n = max(len(c) for c in lists)
        rows = torch.full((len(lists), n), -1, dtype=torch.long)
        for i, c in enumerate(lists):
            rows[i, : len(c)] = torch.tensor([self.p_row[p] for p in c])
        mask = rows >= 0
        passages = self.p[rows.clamp(min=0)] * mask[..., None]
        return self.q[[self.q_row[q] for q in query_ids]], passages, mask

    def inputs(self, query_ids: list[str], lists: list[list[str]], device: torch.device) -> dict[str, torch.Tensor]:
        q, p, mask = self.vectors(query_ids, lists)
        return {"query": q.to(device), "passages": p.to(device), "mask": mask.to(device)}


class EncodedFeatures:
    """Stage 2: tokens for the end-to-end module; features by the (training) encoder."""

    def __init__(self, encoder: TextEncoder, passage_texts: dict[str, str], query_texts: dict[str, str]) -> None:
        self.encoder, self.passage_texts, self.query_texts = encoder, passage_texts, query_texts
        self.dim = encoder.dim

    def inputs(self, query_ids: list[str], lists: list[list[str]], device: torch.device) -> dict[str, torch.Tensor]:
        n = max(len(c) for c in lists)
        q = self.encoder.tokenize([self.query_texts[i] for i in query_ids])
        flat = [self.passage_texts[p] for c in lists for p in c]
        p = self.encoder.tokenize(flat)
        tokens = p["input_ids"].shape[1]
        ids = torch.zeros(len(lists), n, tokens, dtype=torch.long, device=p["input_ids"].device)
        att = torch.zeros_like(ids)
        mask = torch.zeros(len(lists), n, dtype=torch.bool)
        k = 0
        for i, c in enumerate(lists):
            ids[i, : len(c)] = p["input_ids"][k : k + len(c)]
            att[i, : len(c)] = p["attention_mask"][k : k + len(c)]
            mask[i, : len(c)] = True
            k += len(c)
        return {"query_ids": q["input_ids"].to(device), "query_mask": q["attention_mask"].to(device),
                "passage_ids": ids.to(device), "passage_mask": att.to(device), "mask": mask.to(device)}

    @torch.no_grad()
    def vectors(self, query_ids: list[str], lists: list[list[str]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        n = max(len(c) for c in lists)
        q = torch.from_numpy(self.encoder.encode([self.query_texts[i] for i in query_ids]))
        flat = self.encoder.encode([self.passage_texts[p] for c in lists for p in c])
        passages = torch.zeros(len(lists), n, self.dim)
        mask = torch.zeros(len(lists), n, dtype=torch.bool)
        k = 0
        for i, c in enumerate(lists):
            passages[i, : len(c)] = torch.from_numpy(flat[k : k + len(c)])
            mask[i, : len(c)] = True
            k += len(c)
        return q, passages, mask


@dataclass
class FitResult:
    best_metric: float
    best_epoch: int
    epochs_run: int
    history: list[dict]
    examples_per_s: float


def head_config(settings: TrainSettings, embed_dim: int) -> ListConRankerConfig:
    fields = {"hidden_size": embed_dim, "num_heads": 12 if embed_dim % 12 == 0 else 8, **settings.head}
    return ListConRankerConfig(embed_dim=embed_dim, **fields)


@torch.no_grad()
def validate(head: ListConRanker, features, validation: Validation, settings: TrainSettings, device: torch.device) -> float:
    """nDCG@10 of reranking the held-out queries' top-``val_depth`` candidates."""
    head.eval()
    lists = [(q, c[: settings.val_depth]) for q, c in validation.lists if c]
    run: dict[str, dict[str, float]] = {}
    for start in range(0, len(lists), 64):
        chunk = lists[start : start + 64]
        q, p, mask = features.vectors([x for x, _ in chunk], [c for _, c in chunk])
        order, scores = iterative_rerank(head, q.to(device), p.to(device), mask.to(device),
                                         settings.theta, settings.beta, settings.min_drop)
        for i, (query, candidates) in enumerate(chunk):
            n = len(candidates)
            run[query] = {candidates[j]: float(s) for j, s in zip(order[i, :n].tolist(), scores[i, :n].tolist())}
    return aggregate(per_query(validation.qrels, run, ["nDCG@10"]))["nDCG@10"]


def fit(lists: Lists, validation: Validation | None, features, settings: TrainSettings, out_dir: str | Path, *,
        device: torch.device | str = "cpu", wrap: Callable[[nn.Module], nn.Module] = lambda m: m,
        on_epoch: Callable[[dict], None] | None = None, progress: bool = True) -> FitResult:
    """Train a head (stage 1) or encoder + head (stage 2); the best epoch ends up in ``out_dir``."""
    out_dir, device = Path(out_dir), torch.device(device)
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    torch.manual_seed(settings.seed)
    head = ListConRanker.from_pretrained(settings.init).train() if settings.init else ListConRanker(head_config(settings, features.dim))
    module: nn.Module = head if settings.stage == 1 else EndToEnd(head, features.encoder)
    module.to(device)
    groups = [{"params": list(head.parameters()), "lr": settings.lr}]
    if settings.stage == 2:
        groups.append({"params": list(features.encoder.model.parameters()), "lr": settings.encoder_lr})
    optimizer = torch.optim.AdamW(groups, weight_decay=settings.weight_decay)
    state = {"epoch": 0, "best_metric": -1.0, "best_epoch": -1, "bad_epochs": 0, "history": []}
    resumed = _resume(out_dir, module, optimizer)
    if resumed:
        state = resumed
        log.info("train: resuming after epoch %d (best nDCG@10 %.4f at epoch %d)", state["epoch"], state["best_metric"], state["best_epoch"])
    trained = wrap(module)
    loss_fn = settings.loss_fn()
    autocast = settings.mixed_precision and device.type == "cuda"
    examples, busy = 0, 0.0
    for epoch in range(state["epoch"], settings.epochs):
        if state["bad_epochs"] >= settings.patience:
            break
        order = torch.randperm(len(lists), generator=torch.Generator().manual_seed(settings.seed * 7919 + epoch))
        mine = order[rank::world].tolist()
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
            context = torch.autocast("cuda", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
            with context:
                probs = trained(**inputs)
            loss = loss_fn(probs.float(), labels, inputs["mask"]) / settings.grad_accum
            loss.backward()
            total += loss.item() * settings.grad_accum
            if (index + 1) % settings.grad_accum == 0 or index + 1 == len(batches):
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                steps += 1
            examples += len(batch)
        trained_for = time.perf_counter() - started
        busy += trained_for
        module.eval()  # the encoder too, in stage 2: no dropout while validating
        metric = validate(head, features, validation, settings, device) if validation and validation.lists else -total
        record = {"epoch": epoch + 1, "loss": total / max(len(batches), 1), "val_ndcg@10": metric, "steps": steps,
                  "train_seconds": trained_for, "seconds": time.perf_counter() - started}
        state["history"].append(record)
        if metric > state["best_metric"]:
            state.update(best_metric=metric, best_epoch=epoch + 1, bad_epochs=0)
            if rank == 0:
                _save_best(out_dir, head, features, settings)
        else:
            state["bad_epochs"] += 1
        state["epoch"] = epoch + 1
        if rank == 0:
            _checkpoint(out_dir, module, optimizer, state)
        if world > 1:
            dist.barrier()
        log.info("train: epoch %d loss %.4f val nDCG@10 %.4f (best %.4f @ %d) %.1fs", epoch + 1, record["loss"],
                 metric, state["best_metric"], state["best_epoch"], record["seconds"])
        if on_epoch:
            on_epoch(record)
    return FitResult(state["best_metric"], state["best_epoch"], state["epoch"], state["history"],
                     examples * world / busy if busy else 0.0)


def _save_best(out_dir: Path, head: ListConRanker, features, settings: TrainSettings) -> None:
    head.save_pretrained(out_dir)
    if settings.stage == 2:
        staged = out_dir / "encoder.tmp"
        shutil.rmtree(staged, ignore_errors=True)
        features.encoder.model.save_pretrained(staged)
        features.encoder.tokenizer.save_pretrained(staged)
        if (out_dir / "encoder").exists():
            shutil.rmtree(out_dir / "encoder")
        staged.rename(out_dir / "encoder")
    (out_dir / "train_settings.json").write_text(json.dumps(asdict(settings), indent=2) + "\n")


def _checkpoint(out_dir: Path, module: nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
    """``checkpoints/epoch-NNNN`` written to a temp dir and renamed; older ones removed."""
    root = out_dir / CHECKPOINTS
    target = root / f"epoch-{state['epoch']:04d}"
    staged = root / f".tmp-{state['epoch']:04d}"
    shutil.rmtree(staged, ignore_errors=True)
    staged.mkdir(parents=True)
    save_file({k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}, str(staged / "module.safetensors"))
    torch.save(optimizer.state_dict(), staged / "optimizer.pt")
    (staged / "state.json").write_text(json.dumps(state, indent=2) + "\n")
    if target.exists():  # a rerun of the same epoch after a crash between rename and cleanup
        shutil.rmtree(target)
    os.replace(staged, target)
    for old in root.glob("epoch-*"):
        if old != target:
            shutil.rmtree(old, ignore_errors=True)


def _resume(out_dir: Path, module: nn.Module, optimizer: torch.optim.Optimizer) -> dict | None:
    latest = sorted((out_dir / CHECKPOINTS).glob("epoch-*"))
    if not latest:
        return None
    module.load_state_dict(load_file(str(latest[-1] / "module.safetensors")))
    optimizer.load_state_dict(torch.load(latest[-1] / "optimizer.pt", weights_only=True))
    return json.loads((latest[-1] / "state.json").read_text())


def candidate_features(passages: EmbeddingCache, queries: EmbeddingCache, lists: Lists, validation: Validation | None,
                       val_depth: int) -> CachedFeatures:
    """Stage-1 features for every passage and query training and validation will touch."""
    pids = [p for c in lists.passages for p in c]
    qids = list(lists.query_ids)
    if validation:
        pids += [p for _, c in validation.lists for p in c[:val_depth]]
        qids += [q for q, _ in validation.lists]
    return CachedFeatures(passages, queries, pids, qids)
