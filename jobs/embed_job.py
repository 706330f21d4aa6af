"""`listcon embed`: bring the passage cache up to date with a corpus, on Ray Data encoder actors."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator

import numpy as np
import pyarrow as pa

from listcon.jobs.config import Config, EmbedOptions, RayOptions
from listcon.jobs.lock import locked
from listcon.jobs.placement import cluster_nodes, cpus_per_actor, describe, eligible_nodes, this_node
from listcon.jobs.runtime import gpus_in_cluster, log_config, start_ray
from listcon.pipeline.data.readers import read_corpus
from listcon.pipeline.encoding.embed import EmbedReport, EncodeStream, embed_texts, encode_here
from listcon.pipeline.encoding.encode_batch import EncodeBatch, EncoderSettings
from listcon.pipeline.store.embedding_cache import content_hash
from listcon.pipeline.store.corpus_state import record_corpus
from listcon.pipeline.store.text_table import TextTable

log = logging.getLogger(__name__)


class NodeEncodeBatch(EncodeBatch):
    """``EncodeBatch`` that also says which Ray node encoded each batch (the job logs the spread)."""

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = super().__call__(batch)
        return {**out, "node": np.full(len(out["id"]), this_node())}


def ray_encoder(ray: RayOptions, embed: EmbedOptions, here_up_to: int = 0) -> EncodeStream:
    """An encode stream on Ray Data encoder actors (Ray starts when the stream does), laid out by
    ``embed``: by default one actor per GPU where the cluster has GPUs, else one CPU actor per node
    (a single machine: one). Passages and queries take the same layout, since a text's vector depends
    on its actor's torch threads (in the last bits). Without a cluster address, work of at most
    ``here_up_to`` texts is encoded in this process: starting Ray for a few new queries costs more
    than encoding them."""

    def stream(work: pa.Table, settings: EncoderSettings) -> Iterator[dict]:
        if not ray.address and work.num_rows <= here_up_to:
            yield from encode_here(work, settings)
            return
        import ray as ray_module

        start_ray(ray.address, object_store_mb=ray.object_store_mb)
        gpus = gpus_in_cluster()
        gpus_per_actor = embed.gpus_per_actor if embed.gpus_per_actor is not None else (1.0 if gpus else 0.0)
        nodes = cluster_nodes()
        concurrency = embed.concurrency or (max(1, gpus) if gpus_per_actor else max(1, len(eligible_nodes(nodes))))
        cpus = cpus_per_actor(nodes, "embed's encoder actors", concurrency, gpus_per_actor or 0.0, embed.cpus_per_actor)
        device = "cuda" if gpus_per_actor else "cpu"  # what Ray reserved, not what the actor can see
        log.info("encoder actors: %d x (%s CPU, %s GPU) on %s; nodes: %s", concurrency, cpus, gpus_per_actor,
                 device, describe(nodes))
        # One block per encoder batch, so results (and the progress bar) arrive batch by batch.
        # Every actor loaded before any block flows, so the work spreads over all of them (a pool
        # that fits was checked above, so this waits for model loading, not for resources).
        ray_module.data.DataContext.get_current().wait_for_min_actors_s = 600
        size = settings.batch_for(device)
        blocks = [work.slice(i, size) for i in range(0, work.num_rows, size)]
        dataset = ray_module.data.from_arrow(blocks).map_batches(
            NodeEncodeBatch,
            fn_constructor_kwargs={"settings": settings, "threads": max(1, int(cpus)), "device": device},
            batch_size=size,
            batch_format="numpy",
            compute=ray_module.data.ActorPoolStrategy(size=concurrency),
            num_cpus=cpus,
            num_gpus=gpus_per_actor or None,
        )
        per_node: Counter[str] = Counter()
        for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
            per_node[str(batch["node"][0])] += len(batch["id"])
            yield {k: v for k, v in batch.items() if k != "node"}
        log.info("encoder actors: texts encoded per node: %s", dict(sorted(per_node.items())))

    return stream


@locked("embed")
def embed(config: Config, progress: bool = True) -> EmbedReport:
    """Encode the corpus's new and changed passages into W/passages.lance."""
    log_config("embed", {"data": config.data, "workdir": config.workdir, "lance_root": config.lance_root,
                         "encoder": config.encoder, "embed": config.embed, "ray": config.ray})
    options = config.embed
    corpus = read_corpus(config.need_data(), empty="skip" if options.skip_empty else "error", limit=options.limit)
    report = embed_texts(corpus.table["id"].to_pylist(), corpus.texts(), config.work.passages, config.encoder,
                         ray_encoder(config.ray, options), rebuild=options.rebuild, prune=options.prune,
                         prune_limit=None if options.confirm_prune else options.prune_limit,
                         chunk_rows=options.chunk_rows, progress=progress)
    texts = corpus.texts()
    written = TextTable(config.work.texts).update(corpus.table["id"].to_pylist(), [content_hash(t) for t in texts], texts,
                                                  prune=options.prune)
    if written:
        log.info("embed: %d passage texts written to %s", written, config.work.texts)
    record_corpus(config.work, config.data, "skip" if options.skip_empty else "error", options.limit)
    log.info("embed: encoded %d passages, skipped %d unchanged (%d empty skipped); table version %s; %.1fs",
             report.encoded, report.skipped, len(corpus.skipped_empty), report.version, report.seconds)
    return report
