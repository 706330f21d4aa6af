"""`listcon rerank`: rerank a split's candidates with the head, as Ray actors over query shards.

Resumable per shard: finished shards are kept on disk under the rankings table's
provenance; a killed job reruns only the unfinished ones and ends with the same table.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, replace
from itertools import islice
from pathlib import Path

import torch
from tqdm.auto import tqdm

from listcon.jobs.config import Config
from listcon.jobs.lock import locked
from listcon.jobs.placement import cluster_nodes, cpus_per_actor, describe, this_node
from listcon.jobs.runtime import gpus_in_cluster, log_config, start_ray
from listcon.model import ListConRanker, resolve_precision
from listcon.model.precision import HEAD_PRECISIONS
from listcon.pipeline.data.readers import judged_queries
from listcon.pipeline.rerank.cached import check_dim, checkpoint_fingerprint
from listcon.pipeline.rerank.shard import RerankShard
from listcon.pipeline.store.corpus_state import check_corpus_current
from listcon.pipeline.store.embedding_cache import EmbeddingCache
from listcon.pipeline.store.ranked_lists import iter_lists, read_provenance, write_ranked, write_trec
from listcon.pipeline.store.shards import ShardStore
from listcon.pipeline.store.workdir import user_run_name
from listcon.pipeline.training.checkpoints import check_finished
from listcon.pipeline.training.domain import fallback_anchor, learned_part_here
from listcon.schemas import RANKINGS, to_dict

log = logging.getLogger(__name__)

RERANKED = "listcon"
PROVENANCE_EXCLUDES = ("device", "memory_budget_mb")  # how it ran, not what it computed


@dataclass(frozen=True)
class RerankResult:
    """Where a split's rankings went and what the run did."""

    uri: str
    run_path: Path
    queries: int
    without_candidates: int
    skipped_missing: int
    seconds: dict[str, float]
    up_to_date: bool


@locked("rerank")
def rerank(config: Config, split: str | None = None, depth: int | None = None, run_name: str | None = None,
           progress: bool = True) -> RerankResult:
    """Rerank W/candidates/<split> into W/rankings (+ a TREC run); ``depth`` reranks only each query's top-N."""
    split, options, work = split or config.split, config.rerank, config.work
    settings = replace(options.settings, depth=depth) if depth is not None else options.settings
    if run_name is not None and depth is None:  # a name from the caller: the same rule as --run-name
        user_run_name(run_name)
    run_name = run_name or options.run_name
    model_dir = config.head_dir
    log_config("rerank", {"data": config.data, "workdir": config.workdir, "split": split, "model_dir": model_dir,
                          "run": run_name, "settings": settings, "schedule": config.schedule,
                          "shard_size": options.shard_size, "workers": options.workers, "ray": config.ray})
    check_finished(model_dir)
    head = ListConRanker.from_pretrained(model_dir)  # fail fast on a bad checkpoint, before any Ray work
    check_corpus_current(work, config.need_data(), config.inputs.stale_corpus, "rerank")
    candidates_uri = work.candidates(split)
    source = read_provenance(candidates_uri)
    if source is None:
        raise FileNotFoundError(f"no candidates at {candidates_uri}; run `listcon retrieve --split {split}` first")
    queries = EmbeddingCache(work.queries)
    check_dim(head, EmbeddingCache(work.passages))  # here, not as a dead actor after Ray started
    learned = learned_part_here(head, model_dir, work, settings.outside_domain)
    fallback = None if learned else (fallback_anchor(head, source) or {})  # {}: the head's own anchor
    if fallback:
        log.info("rerank: the candidates come from an external run; the fallback ranks by %s over every first stage",
                 fallback)
    passages_version = EmbeddingCache(work.passages).version
    query_ids = list(dict.fromkeys(judged_queries(config.need_data(), split)[0]["id"].to_pylist()))
    device = _worker_device(config, settings)
    # the arithmetic the rankings come from: CPU fp32 and GPU bf16 results are never mixed on resume
    arithmetic = {"device": torch.device(device).type,
                  "precision": resolve_precision(settings.precision, device, HEAD_PRECISIONS)}
    provenance = {"split": split, "run": run_name, "checkpoint": checkpoint_fingerprint(model_dir),
                  "learned_part": learned, **({"fallback": fallback} if fallback else {}), "arithmetic": arithmetic,
                  "candidates": source, "passages_version": passages_version, "query_vectors": queries.digest(query_ids),
                  "settings": {k: v for k, v in to_dict(settings).items() if k not in PROVENANCE_EXCLUDES},
                  "schedule": to_dict(config.schedule)}
    uri = work.rankings(split) if run_name == RERANKED else work.rankings(f"{split}.{run_name}")
    run_path = work.run(split, run_name)
    if read_provenance(uri) == provenance and run_path.is_file():
        log.info("rerank: %s is up to date; nothing to do", uri)
        return RerankResult(uri, run_path, len(query_ids), 0, 0, {}, True)

    n_shards = -(-len(query_ids) // options.shard_size)
    store = ShardStore(work.shards(split, run_name), provenance)
    store.discard_others()  # shards of other inputs are useless now
    todo = sum(1 for i in range(n_shards) if not store.done(i))
    log.info("rerank: %d queries in %d shards, %d already done", len(query_ids), n_shards, n_shards - todo)
    skipped, empty, seconds = 0, 0, {"take": 0.0, "model": 0.0, "write": 0.0}
    # Shards are cut from a stream of the candidates table, with at most two per worker in
    # flight, so the driver holds a few shards' lists however many queries there are.
    shards = _shards(iter_lists(candidates_uri, query_ids, signals_k=source["k"] if head.config.signals else None),
                     options.shard_size)
    workers = options.workers
    with tqdm(total=len(query_ids), desc=f"rerank {split}", unit="query", disable=not progress) as bar:
        if todo:
            start_ray(config.ray.address, object_store_mb=config.ray.object_store_mb)
            import ray
            from ray.util import ActorPool

            nodes = cluster_nodes()
            gpus = 1 if arithmetic["device"] == "cuda" else 0
            threads = int(cpus_per_actor(nodes, "rerank workers", workers, gpus))
            on = replace(settings, device=device)  # what Ray reserves, not what an actor happens to see
            log.info("rerank: %d workers x (%d CPU, %d GPU); nodes: %s", workers, threads, gpus, describe(nodes))
            actor = ray.remote(num_cpus=threads, num_gpus=gpus)(NodeRerankShard)
            pool = ActorPool([actor.remote(model_dir, work.passages, work.queries, on, config.schedule, store, threads,
                                           fallback) for _ in range(workers)])
        sizes: dict[int, int] = {}

        per_node: Counter[str] = Counter()

        def collect() -> None:
            nonlocal skipped, seconds
            shard, missing, spent, node = pool.get_next_unordered()
            per_node[node] += sizes[shard]
            skipped += missing
            seconds = {k: seconds[k] + spent[k] for k in seconds}
            bar.update(sizes.pop(shard))

        for index, lists in enumerate(shards):
            empty += sum(1 for item in lists if not item[1])
            if store.done(index):
                bar.update(len(lists))
                continue
            while len(sizes) >= 2 * workers:
                collect()
            sizes[index] = len(lists)
            pool.submit(lambda a, job: a.run.remote(*job), (index, lists))
        while sizes:
            collect()
    if todo:
        log.info("rerank: worker time in take %.1fs, model %.1fs, write %.1fs; queries per node: %s",
                 *seconds.values(), dict(sorted(per_node.items())))
    if skipped:
        log.warning("rerank: skipped %d candidate(s) missing from the passage cache (skip_missing)", skipped)
    version = write_ranked(store.reader(n_shards, RANKINGS), uri, provenance)
    write_trec(store.reader(n_shards, RANKINGS), run_path, tag=f"listcon-{run_name}")
    store.clear()
    log.info("rerank: %d queries (%d with no candidates) -> %s (version %d) and %s", len(query_ids), empty, uri, version, run_path)
    return RerankResult(uri, run_path, len(query_ids), empty, skipped, seconds, False)


class NodeRerankShard(RerankShard):
    """``RerankShard`` that also says which Ray node reranked the shard (the job logs the spread)."""

    def run(self, shard: int, lists: list) -> tuple[int, int, dict[str, float], str]:
        return (*super().run(shard, lists), this_node())


def _worker_device(config: Config, settings) -> str:
    """The rerank workers' device: the configured one, else cuda when there is a GPU per worker."""
    if settings.device:
        return settings.device
    if config.ray.address:  # a remote cluster: ask it (a local one sees this machine's GPUs)
        start_ray(config.ray.address, object_store_mb=config.ray.object_store_mb)
        gpus = gpus_in_cluster()
    else:
        gpus = torch.cuda.device_count()
    return "cuda" if gpus >= config.rerank.workers else "cpu"


def _shards(lists: Iterator[tuple[str, list[str]]], size: int) -> Iterator[list[tuple[str, list[str]]]]:
    while shard := list(islice(lists, size)):
        yield shard
