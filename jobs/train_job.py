"""`listcon train`: fine-tune the head (stage 1) or encoder + head (stage 2) on mined lists.

Runs the one training loop in-process (``num_workers=0``) or on Ray Train's TorchTrainer
(one worker per GPU with DDP under ``use_gpu``; CPU workers otherwise). Extra labelled
collections (each its own workdir) add training lists; validation uses the main split's
held-out queries. Both ways end in the same ``TrainResult``.
"""

from __future__ import annotations

import functools
import json
import logging
import shutil
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from listcon.jobs.config import Config
from listcon.jobs.placement import cluster_nodes, cpus_per_actor, describe
from listcon.jobs.runtime import log_config, start_ray
from listcon.model import PruneSchedule
from listcon.pipeline.store.atomic import write_text
from listcon.pipeline.store.ranked_lists import read_provenance
from listcon.pipeline.store.workdir import Workdir
from listcon.pipeline.training.checkpoints import latest_state
from listcon.pipeline.training.data import Source, load_training
from listcon.pipeline.training.loop import FitResult, TrainSettings, ddp_unused_parameters, fit
from listcon.schemas import build, to_dict

log = logging.getLogger(__name__)

RESULT_FILE = "train_result.json"


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
    """Ray Train's per-worker loop: load the data in the worker, then the shared fit()."""
    import ray.train
    import ray.train.torch
    import torch

    torch.set_num_threads(config["threads"])
    settings = build(TrainSettings, config["settings"])
    device = ray.train.torch.get_device()
    data = load_training(Source(**config["main"]), [Source(**e) for e in config["extras"]], settings, str(device),
                         config["validate_on"])
    wrap = functools.partial(ray.train.torch.prepare_model,
                             parallel_strategy_kwargs={"find_unused_parameters": ddp_unused_parameters(settings)})
    fit(data.lists, data.validation, data.features, settings, config["out"],
        schedule=build(PruneSchedule, config["schedule"]), encoder_info=data.encoder_info, device=device,
        wrap=wrap, on_epoch=ray.train.report)


def in_process_device(use_gpu: bool) -> str:
    """Training without Ray Train: on the GPU when asked for (and there is one), else the CPU."""
    if not use_gpu:
        return "cpu"
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError("use_gpu is set, but this machine has no CUDA device; train on the CPU (no --use-gpu) "
                           "or on a Ray cluster with GPU workers (--num-workers N --ray-address ...)")
    return "cuda"


def train(config: Config) -> TrainResult:
    """Train into the configured output directory (best checkpoint + checkpoints/ for resume)."""
    options, settings = config.train, config.train.settings
    out = config.train_out
    main = Source("", config.need_data(), config.workdir, options.split).resolved()
    extras = [Source(e.name, e.data, e.workdir, e.split, e.validate_only).resolved() for e in options.extra]
    provenance = {"settings": to_dict(settings), "schedule": to_dict(config.schedule), "main": asdict(main),
                  "extras": [asdict(e) for e in extras],
                  "training": [read_provenance(Workdir(Path(s.workdir)).training(s.split)) for s in [main, *extras]],
                  "num_workers": options.num_workers, "validate_on": options.validate_on}
    log_config("train", {**provenance, "out": out, "use_gpu": options.use_gpu, "ray": config.ray})
    if None in provenance["training"]:
        raise FileNotFoundError("no training lists for a source; run `listcon mine` on it first")
    result_path = Path(out) / RESULT_FILE
    if result_path.is_file():
        saved = json.loads(result_path.read_text())
        if saved.get("provenance") == provenance:
            log.info("train: %s already holds this training's result; nothing to do", out)
            return TrainResult(out, **{f.name: saved[f.name] for f in fields(FitResult)}, up_to_date=True)
    Path(out).mkdir(parents=True, exist_ok=True)
    marker = Path(out) / "checkpoints" / "provenance.json"
    if marker.is_file() and json.loads(marker.read_text()) != provenance:
        log.warning("train: %s holds checkpoints of another configuration; starting over", out)
        shutil.rmtree(marker.parent)
    marker.parent.mkdir(parents=True, exist_ok=True)
    write_text(marker, json.dumps(provenance, indent=2) + "\n")
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
                       "extras": [asdict(e) for e in extras], "out": str(Path(out).resolve()), "threads": threads,
                       "validate_on": options.validate_on}
        trainer = TorchTrainer(_worker, train_loop_config=loop_config,
                               scaling_config=ScalingConfig(num_workers=options.num_workers, use_gpu=options.use_gpu,
                                                            resources_per_worker={"CPU": threads}),
                               run_config=RunConfig(name="listcon-train", storage_path=str(Path(out).resolve() / "ray")))
        trainer.fit()
        result = FitResult.from_state(latest_state(Path(out)))
    write_text(result_path, json.dumps({"provenance": provenance, **asdict(result)}, indent=2) + "\n")
    log.info("train: best %.4f at epoch %d -> %s", result.best_metric, result.best_epoch, out)
    return TrainResult(out, **asdict(result))
