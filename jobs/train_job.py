"""`listcon train`: fine-tune the head (stage 1) or encoder + head (stage 2) on mined lists.

Runs the one training loop in-process (``num_workers=0``) or on Ray Train's TorchTrainer
(one worker per GPU with DDP under ``use_gpu``; CPU workers otherwise). Extra labelled
collections (each its own workdir) add training lists; validation uses the main split's
held-out queries.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow.compute as pc

from listcon.jobs.runtime import log_config, start_ray
from listcon.model import TextEncoder
from listcon.pipeline.atomic import write_text
from listcon.pipeline.embedding_cache import EmbeddingCache
from listcon.pipeline.ranked_lists import read_provenance, read_ranked
from listcon.pipeline.readers import read_corpus, read_qrels, read_queries
from listcon.pipeline.rerank import candidate_lists
from listcon.pipeline.train import (
    CachedFeatures,
    EncodedFeatures,
    Lists,
    TrainSettings,
    Validation,
    candidate_features,
    fit,
)
from listcon.pipeline.workdir import Workdir

log = logging.getLogger(__name__)

RESULT_FILE = "train_result.json"


@dataclass(frozen=True)
class Source:
    """A labelled collection to train on: its data dir, workdir and split (name prefixes its ids)."""

    name: str
    data: str
    workdir: str
    split: str

    def resolved(self) -> "Source":
        """Absolute paths: Ray Train workers run in another working directory."""
        return Source(self.name, str(Path(self.data).resolve()), str(Path(self.workdir).resolve()), self.split)


def load_training(main: Source, extras: list[Source], settings: TrainSettings):
    """Training lists, validation (main split's held-out queries) and the features to train on."""
    table = read_ranked(Workdir(Path(main.workdir)).training(main.split))
    held = table.filter(pc.field("holdout"))
    lists = Lists.from_table(table.filter(~pc.field("holdout")))
    candidates = read_ranked(Workdir(Path(main.workdir)).candidates(main.split))
    held_ids = held["query_id"].to_pylist()
    qrels = read_qrels(main.data, main.split)
    validation = Validation(candidate_lists(candidates, held_ids), qrels.filter(pc.is_in(qrels["query_id"], value_set=held.column("query_id"))))
    work = Workdir(Path(main.workdir))
    if settings.stage == 2:
        if extras:
            raise ValueError("stage 2 (end to end) trains on the main collection only; drop the extra sources")
        corpus = read_corpus(main.data, empty="skip")
        passage_texts = dict(zip(corpus.table["id"].to_pylist(), corpus.texts()))
        queries = read_queries(main.data)
        encoder = TextEncoder(EmbeddingCache(work.passages).metadata["model"], **_encoder_options(work))
        features = EncodedFeatures(encoder, passage_texts, dict(zip(queries["id"].to_pylist(), queries["text"].to_pylist())))
        return lists, validation, features
    parts = {"": candidate_features(EmbeddingCache(work.passages), EmbeddingCache(work.queries), lists, validation,
                                    settings.val_depth)}
    for extra in extras:
        extra_lists = Lists.from_table(read_ranked(Workdir(Path(extra.workdir)).training(extra.split)))
        extra_work = Workdir(Path(extra.workdir))
        parts[extra.name] = candidate_features(EmbeddingCache(extra_work.passages), EmbeddingCache(extra_work.queries),
                                               extra_lists, None, 0)
        lists = lists + Lists.from_table(read_ranked(Workdir(Path(extra.workdir)).training(extra.split)), prefix=extra.name)
    return lists, validation, CachedFeatures.combine(parts)


def _encoder_options(work: Workdir) -> dict:
    meta = EmbeddingCache(work.passages).metadata
    return {"pooling": meta["pooling"], "normalize": meta["normalize"], "max_length": meta["max_length"]}


def _worker(config: dict) -> None:
    """Ray Train's per-worker loop: load the data in the worker, then the shared fit()."""
    import ray.train
    import ray.train.torch
    import torch

    torch.set_num_threads(config["threads"])
    settings = TrainSettings(**config["settings"])
    lists, validation, features = load_training(Source(**config["main"]), [Source(**e) for e in config["extras"]], settings)
    fit(lists, validation, features, settings, config["out"], device=ray.train.torch.get_device(),
        wrap=ray.train.torch.prepare_model, on_epoch=ray.train.report, progress=False)


def run_train(main: Source, out: str, settings: TrainSettings = TrainSettings(), *, extras: list[Source] = (),
              num_workers: int = 0, use_gpu: bool = False, ray_address: str | None = None) -> dict:
    """Train into ``out`` (best checkpoint + checkpoints/ for resume); returns the result record."""
    main, extras = main.resolved(), [e.resolved() for e in extras]
    provenance = {"settings": asdict(settings), "main": asdict(main), "extras": [asdict(e) for e in extras],
                  "training": [read_provenance(Workdir(Path(s.workdir)).training(s.split)) for s in [main, *extras]],
                  "num_workers": num_workers}
    log_config("train", {**provenance, "out": out, "use_gpu": use_gpu, "ray_address": ray_address})
    if None in provenance["training"]:
        raise FileNotFoundError("no training lists for a source; run `listcon mine` on it first")
    result_path = Path(out) / RESULT_FILE
    if result_path.is_file() and json.loads(result_path.read_text()).get("provenance") == provenance:
        log.info("train: %s already holds this training's result; nothing to do", out)
        return json.loads(result_path.read_text())
    Path(out).mkdir(parents=True, exist_ok=True)
    marker = Path(out) / "checkpoints" / "provenance.json"
    if marker.is_file() and json.loads(marker.read_text()) != provenance:
        log.warning("train: %s holds checkpoints of another configuration; starting over", out)
        shutil.rmtree(marker.parent)
    marker.parent.mkdir(parents=True, exist_ok=True)
    write_text(marker, json.dumps(provenance, indent=2) + "\n")
    if num_workers == 0:
        lists, validation, features = load_training(main, extras, settings)
        result = asdict(fit(lists, validation, features, settings, out))
    else:
        start_ray(ray_address)
        from ray.train import RunConfig, ScalingConfig
        from ray.train.torch import TorchTrainer

        threads = max(1, (os.cpu_count() or 1) // num_workers) if not use_gpu else 2
        config = {"settings": asdict(settings), "main": asdict(main), "extras": [asdict(e) for e in extras],
                  "out": str(Path(out).resolve()), "threads": threads}
        trainer = TorchTrainer(_worker, train_loop_config=config,
                               scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu,
                                                            resources_per_worker={"CPU": threads}),
                               run_config=RunConfig(name="listcon-train", storage_path=str(Path(out).resolve() / "ray")))
        trainer.fit()
        state = json.loads(sorted((Path(out) / "checkpoints").glob("epoch-*"))[-1].joinpath("state.json").read_text())
        result = {"best_metric": state["best_metric"], "best_epoch": state["best_epoch"], "epochs_run": state["epoch"],
                  "history": state["history"]}
    write_text(result_path, json.dumps({"provenance": provenance, **result}, indent=2) + "\n")
    log.info("train: best validation nDCG@10 %.4f at epoch %d -> %s", result["best_metric"], result["best_epoch"], out)
    return {"provenance": provenance, **result}
