"""`listcon run CONFIG`: the whole job from one config, resumable step by step.

embed -> index -> retrieve -> (mine + train, unless a checkpoint is given) -> rerank (and
the extra depths) -> evaluate. Every step is idempotent on its inputs, so a rerun resumes
where the last one stopped and a finished run redoes nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from listcon.jobs.adapt_job import adapt
from listcon.jobs.config import Config
from listcon.jobs.lock import locked
from listcon.jobs.embed_job import embed
from listcon.jobs.evaluate_job import EvaluateResult, evaluate
from listcon.jobs.index_job import index
from listcon.jobs.mine_job import mine
from listcon.jobs.rerank_job import RerankResult, rerank
from listcon.jobs.retrieve_job import retrieve
from listcon.jobs.runtime import log_config
from listcon.jobs.train_job import TrainResult, check_extras, train
from listcon.pipeline.store.workdir import depth_run

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunResult:
    """What the whole job produced: the head, every rerank run, and the evaluation."""

    head_dir: str
    training: TrainResult | None
    reranked: dict[str, RerankResult]
    evaluation: EvaluateResult


def prepare(config: Config, split: str, k: int, progress: bool = True) -> None:
    """embed -> index -> retrieve for one collection and split."""
    embed(config, progress=progress)
    index(config)
    retrieve(config, split, k, progress=progress)


@locked("run")
def run(config: Config, progress: bool = True) -> RunResult:
    """Run every step the config asks for."""
    log_config("run", config)
    config.need_data()
    if not config.train.checkpoint:
        check_extras(config.train.extra)
    prepare(config, config.split, config.retrieve.k, progress)
    training = None
    if not config.train.checkpoint:
        options = config.train
        k = options.k or config.retrieve.k
        prepare(config, options.split, k, progress)
        mine(config)
        for extra in options.extra:  # each mined in its own workdir, with held-out queries of its own
            other = config.for_collection(extra)
            prepare(other, extra.split, k, progress)
            mine(other, extra.split)
        training = train(config)
    if config.adapt.enabled:
        adapt(config, progress=progress)
    reranked = {config.rerank.run_name: rerank(config, progress=progress)}
    for depth in config.rerank.depths:
        name = depth_run(config.rerank.run_name, depth)
        reranked[name] = rerank(config, depth=depth, run_name=name, progress=progress)
    return RunResult(config.head_dir, training, reranked, evaluate(config))
