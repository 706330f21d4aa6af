"""`listcon run CONFIG`: the whole job from one TOML file, resumable step by step.

embed -> index -> retrieve -> (mine + train, unless a checkpoint is given) -> rerank -> evaluate.
Every step is idempotent on its inputs, so a rerun resumes where the last one stopped and
a finished run redoes nothing. Relative paths are taken from the current directory.
"""

from __future__ import annotations

import logging
import tomllib
from dataclasses import fields, replace
from pathlib import Path

import torch

from listcon.jobs.embed_job import run_embed
from listcon.jobs.evaluate_job import run_evaluate
from listcon.jobs.index_job import run_index
from listcon.jobs.mine_job import run_mine
from listcon.jobs.rerank_job import run_rerank
from listcon.jobs.retrieve_job import run_retrieve
from listcon.jobs.runtime import log_config
from listcon.jobs.train_job import Source, run_train
from listcon.model import ListConRanker
from listcon.pipeline.encode_batch import EncoderSettings
from listcon.pipeline.evaluate import DEFAULT_MEASURES
from listcon.pipeline.faiss_index import IndexSpec
from listcon.pipeline.mining import MiningSettings
from listcon.pipeline.rerank import RerankSettings
from listcon.pipeline.train import TrainSettings, head_config
from listcon.pipeline.workdir import Workdir

log = logging.getLogger(__name__)


def _pick(cls, section: dict, where: str):
    """Build dataclass ``cls`` from a config section, refusing keys it does not have."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(section) - known)
    if unknown:
        raise ValueError(f"config [{where}] has unknown keys {unknown}; known: {sorted(known)}")
    return cls(**section)


def load_config(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    try:
        config = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"{path} is not valid TOML: {err}") from None
    for key in ("data", "workdir"):
        if key not in config:
            raise ValueError(f"{path} must name `{key}`")
    return config


def run_config(path: str | Path) -> dict:
    """Run every step the config asks for; returns the evaluation summary."""
    config = load_config(path)
    log_config("run", config)
    plan = _plan(config)  # every section checked before any work starts
    data, work, split = plan["data"], plan["work"], plan["split"]
    _prepare(data, work, split, plan, plan["k"])
    checkpoint = _train(plan)
    address, workers, settings = config.get("ray_address"), plan["workers"], plan["rerank"]
    run_rerank(data, work, split, checkpoint, settings, workers=workers, ray_address=address)
    for depth in plan["depths"]:
        run_rerank(data, work, split, checkpoint, replace(settings, depth=depth), run_name=f"listcon-top{depth}",
                   workers=workers, ray_address=address)
    if plan["untrained"]:
        baseline = work.root / "untrained-head"
        if not (baseline / "model.safetensors").is_file():
            torch.manual_seed(0)
            trained = ListConRanker.from_pretrained(checkpoint).config
            shape = {"attention": trained.attention, "features": trained.features}
            ListConRanker(head_config(TrainSettings(head=shape), trained.embed_dim)).save_pretrained(baseline)
        run_rerank(data, work, split, str(baseline), settings, run_name="untrained", workers=workers, ray_address=address)
    return run_evaluate(data, work, split, plan["measures"])


def _plan(config: dict) -> dict:
    """The resolved settings of every step (unknown keys are errors)."""
    rerank = dict(config.get("rerank", {}))
    train = dict(config.get("train", {}))
    plan = {
        "config": config,
        "data": config["data"],
        "work": Workdir(Path(config["workdir"]), config.get("lance_root")),
        "split": config.get("split", "test"),
        "encoder": _pick(EncoderSettings, config.get("encoder", {}), "encoder"),
        "index": _pick(IndexSpec, config.get("index", {}), "index"),
        "empty": "skip" if config.get("skip_empty", False) else "error",
        "k": config.get("retrieve", {}).get("k", 1000),
        "chunk_rows": config.get("embed", {}).get("chunk_rows", 1024),
        "depths": rerank.pop("depths", []),
        "untrained": rerank.pop("untrained_baseline", False),
        "workers": rerank.pop("workers", 1),
        "train": train,
        "mining": _pick(MiningSettings, train.get("mining", {}), "train.mining"),
        "train_settings": _pick(TrainSettings, train.get("settings", {}), "train.settings"),
        "measures": tuple(config.get("evaluate", {}).get("measures", DEFAULT_MEASURES)),
    }
    plan["rerank"] = _pick(RerankSettings, rerank, "rerank")
    return plan


def _prepare(data: str, work: Workdir, split: str, plan: dict, k: int, empty: str | None = None) -> None:
    """embed -> index -> retrieve for one collection and split."""
    address, empty = plan["config"].get("ray_address"), empty or plan["empty"]
    run_embed(data, work, plan["encoder"], empty=empty, chunk_rows=plan["chunk_rows"], ray_address=address)
    run_index(work, plan["index"])
    run_retrieve(data, work, split, plan["encoder"], k=k, spec=plan["index"], empty=empty, ray_address=address)


def _train(plan: dict) -> str:
    """The checkpoint to rerank with: the configured one, or one trained here (stage 1)."""
    train, data, work = plan["train"], plan["data"], plan["work"]
    if train.get("checkpoint"):
        return str(train["checkpoint"])
    split, mining = train.get("split", "train"), plan["mining"]
    k = train.get("k", mining.depth)
    _prepare(data, work, split, plan, k)
    run_mine(data, work, split, mining)
    extras = []
    for extra in train.get("extra", []):
        extra_work, extra_split = Workdir(Path(extra["workdir"])), extra.get("split", "test")
        _prepare(extra["data"], extra_work, extra_split, plan, k, empty="skip")
        run_mine(extra["data"], extra_work, extra_split, replace(mining, holdout_fraction=0.0))
        extras.append(Source(extra["name"], extra["data"], str(extra_work.root), extra_split))
    out = str(train.get("out", work.root / "head"))
    run_train(Source("", data, str(work.root), split), out, plan["train_settings"], extras=extras,
              num_workers=train.get("num_workers", 0), use_gpu=train.get("use_gpu", False),
              ray_address=plan["config"].get("ray_address"))
    return out
