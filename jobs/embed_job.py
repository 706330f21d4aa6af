"""`listcon embed`: bring the passage cache up to date with a corpus."""

from __future__ import annotations

import logging
from dataclasses import asdict
from typing import Callable

from listcon.jobs.runtime import gpus_in_cluster, log_config, start_ray
from listcon.pipeline.embed import EmbedReport, RayOptions, embed_texts
from listcon.pipeline.encode_batch import EncoderSettings
from listcon.pipeline.readers import read_corpus
from listcon.pipeline.workdir import Workdir

log = logging.getLogger(__name__)


def ray_connector(ray_address: str | None = None, concurrency: int | None = None, gpus_per_actor: float | None = None,
                  cpus_per_actor: float | None = None, chunk_rows: int = 1024) -> Callable[[], RayOptions]:
    """Start/attach Ray on demand; one encoder actor per GPU where the cluster has GPUs, else one CPU actor."""

    def connect() -> RayOptions:
        start_ray(ray_address)
        options = _placement(concurrency, gpus_per_actor, cpus_per_actor, chunk_rows)
        log.info("encoder actors: %s", asdict(options))
        return options

    return connect


def _placement(concurrency: int | None, gpus_per_actor: float | None, cpus_per_actor: float | None,
               chunk_rows: int) -> RayOptions:
    gpus = gpus_in_cluster()
    if gpus_per_actor is None:
        gpus_per_actor = 1.0 if gpus else 0.0
    if concurrency is None:
        concurrency = max(1, gpus) if gpus_per_actor else 1
    return RayOptions(concurrency=concurrency, cpus_per_actor=cpus_per_actor, gpus_per_actor=gpus_per_actor,
                      chunk_rows=chunk_rows)


def run_embed(data: str, workdir: Workdir, settings: EncoderSettings, *, limit: int | None = None,
              empty: str = "error", rebuild: bool = False, prune: bool = False, ray_address: str | None = None,
              concurrency: int | None = None, gpus_per_actor: float | None = None,
              cpus_per_actor: float | None = None, chunk_rows: int = 1024, progress: bool = True) -> EmbedReport:
    log_config("embed", {"data": data, "workdir": str(workdir.root), "passages": workdir.passages,
                         "encoder": asdict(settings), "limit": limit, "empty": empty, "rebuild": rebuild,
                         "prune": prune, "ray_address": ray_address, "concurrency": concurrency,
                         "gpus_per_actor": gpus_per_actor, "cpus_per_actor": cpus_per_actor, "chunk_rows": chunk_rows})
    corpus = read_corpus(data, empty=empty, limit=limit)
    connect = ray_connector(ray_address, concurrency, gpus_per_actor, cpus_per_actor, chunk_rows)
    report = embed_texts(corpus.table["id"].to_pylist(), corpus.texts(), workdir.passages, settings, connect,
                         rebuild=rebuild, prune=prune, progress=progress)
    log.info("embed: encoded %d passages, skipped %d unchanged (%d empty skipped); table version %s; %.1fs",
             report.encoded, report.skipped, len(corpus.skipped_empty), report.version, report.seconds)
    return report
