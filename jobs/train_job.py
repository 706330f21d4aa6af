"""`listcon train`: fine-tune the head (stage 1) or encoder + head (stage 2) on mined lists.

Runs the one training loop in-process (``num_workers=0``) or on Ray Train's TorchTrainer
(one worker per GPU with DDP under ``use_gpu``; CPU workers otherwise). Extra labelled
collections (each its own workdir) add training lists; validation uses the main split's
held-out queries. Both ways end in the same ``TrainResult``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from listcon.jobs.config import Config
from listcon.jobs.lock import locked
from listcon.jobs.placement import cluster_nodes, cpus_per_actor, describe
from listcon.jobs.runtime import log_config, start_ray
from listcon.model import PruneSchedule
from listcon.pipeline.store.atomic import write_text
from listcon.pipeline.store.query_provenance import condensed
from listcon.pipeline.store.ranked_lists import read_provenance
from listcon.pipeline.heads.directory import CHECKPOINTS, MARKER_FILE, RESULT_FILE
from listcon.pipeline.training.checkpoints import discard_failed, latest_state
from listcon.pipeline.training.data import Source, load_training
from listcon.pipeline.training.settings import settings_as_now
from listcon.pipeline.heads.domain import DOMAIN_FILE, corpus_digest, write_domain
from listcon.pipeline.training.loop import (FitResult, TrainSettings, ddp_unused_parameters, domain_verdicts, fit,
                                            records_domain)
from listcon.schemas import build, to_dict

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class TrainResult:
    """Where the best head went and how training went (the same in-process and on Ray Train)."""

    out: str
    best_metric: float
    best_epoch: int
    epochs_run: int
    history: list[dict]
    examples_per_s: float
    up_to_date: bool = False


def _worker(config: dict) -> None:
    """Ray Train's per-worker loop: load the data in the worker, then the shared fit().

    Each worker trains into a directory on its own node. Rank 0 reports that directory (the
    best head so far and the latest epoch checkpoint) to Ray Train every epoch, which persists
    it under the run's storage path (shared by every node: NFS or the object store on a real
    cluster); a restarted run starts from the latest reported checkpoint on every rank.
    """
    import ray.train
    import ray.train.torch
    import torch

    torch.set_num_threads(config["threads"])
    settings = build(TrainSettings, config["settings"])
    device = ray.train.torch.get_device()
    local = Path(tempfile.mkdtemp(prefix="listcon-train-"))
    restored = ray.train.get_checkpoint()
    if restored is not None:
        restored.to_directory(str(local))
    rank = ray.train.get_context().get_world_rank()

    def report(record: dict) -> None:
        if rank == 0:
            ray.train.report(record, checkpoint=ray.train.Checkpoint.from_directory(str(local)))
        else:
            ray.train.report(record)

    data = load_training(Source(**config["main"]), [Source(**e) for e in config["extras"]], settings, str(device),
                         config["validate_on"])
    wrap = functools.partial(ray.train.torch.prepare_model,
                             parallel_strategy_kwargs={"find_unused_parameters": ddp_unused_parameters(settings)})
    try:
        fit(data.lists, data.validation, data.features, settings, local,
            schedule=build(PruneSchedule, config["schedule"]), encoder_info=data.encoder_info, device=device,
            wrap=wrap, on_epoch=report)
    finally:
        shutil.rmtree(local, ignore_errors=True)


def _take_checkpoint(checkpoint, out: Path) -> None:
    """Copy the run's latest reported checkpoint into ``out`` (file by file, each replaced atomically)."""
    staged = out / ".from-ray"
    shutil.rmtree(staged, ignore_errors=True)
    checkpoint.to_directory(str(staged))
    kept = {p.name for p in (staged / CHECKPOINTS).glob("epoch-*")}
    for old in (out / CHECKPOINTS).glob("epoch-*"):
        if old.name not in kept:
            shutil.rmtree(old)
    for source in sorted(staged.rglob("*")):
        if source.is_file():
            target = out / source.relative_to(staged)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(source, target)
    shutil.rmtree(staged)


def in_process_device(use_gpu: bool) -> str:
    """Training without Ray Train: on the GPU when asked for (and there is one), else the CPU."""
    if not use_gpu:
        return "cpu"
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError("use_gpu is set, but this machine has no CUDA device; train on the CPU (no --use-gpu) "
                           "or on a Ray cluster with GPU workers (--num-workers N --ray-address ...)")
    return "cuda"


def _described(source: Source) -> dict:
    """A source in the provenance (``lance_root`` only where set, so local workdirs keep their keys)."""
    return {k: v for k, v in asdict(source).items() if k != "lance_root" or v}


def _record_domain(out: Path, result: FitResult, settings: TrainSettings, main: Source, extras: list[Source]) -> None:
    """domain.json: for each validated collection, whether the best epoch beat the anchor there (paired test)."""
    verdicts = domain_verdicts(result.history, result.best_epoch, settings.domain_alpha)
    corpora = {corpus_digest(source.work): {"name": source.name or "main", **verdicts[source.name or "main"]}
               for source in [main, *extras] if (source.name or "main") in verdicts}
    write_domain(out, corpora)
    log.info("train: the learned part helps on %s; elsewhere the head ranks by its anchor",
             sorted(c["name"] for c in corpora.values() if c["learned_helps"]) or "no collection")


def check_extras(extras) -> None:
    """Every ``[[train.extra]]`` names a data directory that exists (checked before any work)."""
    for extra in extras:
        if not Path(extra.data).exists():
            raise FileNotFoundError(f"[[train.extra]] {extra.name!r}: its data {extra.data} does not exist "
                                    "(a BEIR directory: corpus.jsonl, queries.jsonl, qrels/)")


@locked("train")
def train(config: Config) -> TrainResult:
    """Train into the configured output directory (best checkpoint + checkpoints/ for resume)."""
    options, settings = config.train, config.train.settings
    out = config.train_out
    check_extras(options.extra)
    main = Source("", config.need_data(), config.workdir, options.split, lance_root=config.lance_root).resolved()
    extras = [Source(e.name, e.data, e.workdir, e.split, e.validate_only).resolved() for e in options.extra]
    provenance = {"settings": to_dict(settings), "schedule": to_dict(config.schedule), "main": _described(main),
                  "extras": [_described(e) for e in extras],
                  "training": [read_provenance(s.work.training(s.split)) for s in [main, *extras]],
                  "num_workers": options.num_workers, "validate_on": options.validate_on}
    log_config("train", {**condensed(provenance), "out": out, "use_gpu": options.use_gpu, "ray": config.ray})
    for source, lists in zip([main, *extras], provenance["training"]):
        if lists is None:
            what = f"[[train.extra]] {source.name!r}" if source.name else "the main collection"
            raise FileNotFoundError(f"no training lists for {what} at {source.work.training(source.split)}; run "
                                    f"`listcon mine {source.data} --workdir {source.workdir} --split {source.split}` first")
    result_path = Path(out) / RESULT_FILE
    if result_path.is_file():
        saved = json.loads(result_path.read_text())
        recorded = saved.get("provenance") or {}
        if {**recorded, "settings": settings_as_now(recorded.get("settings") or {})} == provenance:
            log.info("train: %s already holds this training's result; nothing to do", out)
            return TrainResult(out, **{f.name: saved[f.name] for f in fields(FitResult)}, up_to_date=True)
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / DOMAIN_FILE).unlink(missing_ok=True)  # a previous training's verdicts say nothing of this one
    marker = Path(out) / CHECKPOINTS / MARKER_FILE
    result_path.unlink(missing_ok=True)  # until this training ends, the directory is unfinished (check_finished)
    if marker.is_file() and json.loads(marker.read_text()) != provenance:
        log.warning("train: %s holds checkpoints of another configuration; starting over", out)
        shutil.rmtree(marker.parent)
    marker.parent.mkdir(parents=True, exist_ok=True)
    write_text(marker, json.dumps(provenance, indent=2) + "\n")
    try:
        result = _fit(config, main, extras, provenance, out)
    except Exception as err:
        # A failure (bad data, a NaN) leaves no head behind. An interrupt (KeyboardInterrupt) and a lost Ray
        # node keep their epoch checkpoints: the rerun resumes from them.
        if not type(err).__module__.startswith("ray"):
            discard_failed(Path(out))
        raise
    if records_domain(settings, result.history):
        _record_domain(Path(out), result, settings, main, extras)
    write_text(result_path, json.dumps({"provenance": provenance, **asdict(result)}, indent=2) + "\n")
    log.info("train: best %.4f at epoch %d -> %s", result.best_metric, result.best_epoch, out)
    return TrainResult(out, **asdict(result))


def _fit(config: Config, main: Source, extras: list[Source], provenance: dict, out: str) -> FitResult:
    """Train in-process, or on Ray Train workers, into ``out``."""
    options, settings = config.train, config.train.settings
    if options.num_workers == 0:
        device = in_process_device(options.use_gpu)
        data = load_training(main, extras, settings, device, validate_on=options.validate_on)
        result = fit(data.lists, data.validation, data.features, settings, out, schedule=config.schedule,
                     encoder_info=data.encoder_info, device=device)
    else:
        start_ray(config.ray.address, object_store_mb=config.ray.object_store_mb)
        from ray.train import RunConfig, ScalingConfig
        from ray.train.torch import TorchTrainer

        nodes = cluster_nodes()
        threads = int(cpus_per_actor(nodes, "Ray Train workers", options.num_workers, 1.0 if options.use_gpu else 0.0))
        log.info("train: %d Ray Train workers x (%d CPU, %d GPU); nodes: %s", options.num_workers, threads,
                 int(options.use_gpu), describe(nodes))
        loop_config = {"settings": to_dict(settings), "schedule": to_dict(config.schedule), "main": asdict(main),
                       "extras": [asdict(e) for e in extras], "threads": threads, "validate_on": options.validate_on}
        # One run name per configuration: a rerun of the same training resumes its latest checkpoint
        # from the storage path; another configuration starts its own run.
        name = "listcon-train-" + hashlib.sha256(json.dumps(provenance, sort_keys=True).encode()).hexdigest()[:12]
        storage = options.storage or str(Path(out).resolve() / "ray")
        trainer = TorchTrainer(_worker, train_loop_config=loop_config,
                               scaling_config=ScalingConfig(num_workers=options.num_workers, use_gpu=options.use_gpu,
                                                            resources_per_worker={"CPU": threads}),
                               run_config=RunConfig(name=name, storage_path=storage))
        finished = trainer.fit()
        if finished.checkpoint is None:
            raise RuntimeError(f"Ray Train run {name} under {storage} reported no checkpoint")
        _take_checkpoint(finished.checkpoint, Path(out))
        result = FitResult.from_state(latest_state(Path(out)))
    return result
