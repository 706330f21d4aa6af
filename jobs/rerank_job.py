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

from tqdm.auto import tqdm

from listcon.jobs.config import Config
from listcon.jobs.lock import locked
from listcon.jobs.plans import cuda_devices, missing_output, rankings_keys, rankings_provenance, rankings_uri
from listcon.jobs.placement import cluster_nodes, cpus_per_actor, describe, this_node
from listcon.jobs.runtime import gpus_in_cluster, log_config, start_ray
from listcon.model import ListConRanker
from listcon.pipeline.data.readers import judged_queries
from listcon.pipeline.heads.features import check_head_features
from listcon.pipeline.rerank.cached import check_dim
from listcon.pipeline.rerank.shard import RerankShard
from listcon.pipeline.retrieval.signals import SIGNAL_SOURCE, with_signals
from listcon.pipeline.store.corpus_state import check_corpus_current
from listcon.pipeline.store.embedding_cache import EmbeddingCache
from listcon.pipeline.store.query_provenance import QUERY_KEYS, plan
from listcon.pipeline.store.ranked_lists import (
    added_lines,
    iter_lists,
    read_provenance,
    update_ranked,
    update_trec,
    write_ranked,
    write_trec,
)
from listcon.pipeline.store.shards import ShardStore
from listcon.pipeline.store.workdir import user_run_name
from listcon.pipeline.heads.directory import check_finished
from listcon.pipeline.heads.rule import rerank_rule
from listcon.schemas import RANKINGS

log = logging.getLogger(__name__)



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
    computed: int = 0  # queries reranked by this run (the others' rows were up to date)
    removed: int = 0  # queries that left the split, their rows deleted


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
    passages = EmbeddingCache(work.passages)  # checked here, not as a dead actor after Ray started
    check_dim(head, passages)
    check_head_features(model_dir, passages)
    rule = rerank_rule(head.config, model_dir, work, settings.outside_domain, source)
    fallback, fusion = rule.fallback, (rule.fusion or {}).get("dense_weight")
    if fallback:
        log.info("rerank: the candidates come from an external run; the fallback ranks by %s over every first stage",
                 fallback)
    query_ids = list(dict.fromkeys(judged_queries(config.need_data(), split)[0]["id"].to_pylist()))
    device = _worker_device(config, settings)
    # the arithmetic is in the provenance: CPU fp32 and GPU bf16 results are never mixed on resume
    provenance = rankings_provenance(config, split, run_name, settings, model_dir, rule, device, source)
    arithmetic = provenance["arithmetic"]
    keys = rankings_keys(query_ids, source)
    uri, run_path = rankings_uri(work, split, run_name), work.run(split, run_name)
    old = read_provenance(uri)
    todo = plan(old, provenance, keys, "changed candidates", missing_output([run_path]))
    log.info("%s", todo.describe("rerank"))
    if todo.nothing:
        return RerankResult(uri, run_path, len(query_ids), 0, 0, {}, True)

    work_ids = todo.todo
    n_shards = -(-len(work_ids) // options.shard_size)
    # the shards of this very work (its queries and their keys): a killed run resumes them, other work discards them
    store = ShardStore(work.shards(split, run_name), {**provenance, "queries": len(query_ids),
                                                     QUERY_KEYS: {q: keys[q] for q in work_ids}})
    store.discard_others()
    done_before = sum(1 for i in range(n_shards) if store.done(i))
    log.info("rerank: %d queries in %d shards, %d already done", len(work_ids), n_shards, done_before)
    skipped, empty, seconds = 0, 0, {"take": 0.0, "model": 0.0, "write": 0.0}
    # Shards are cut from a stream of the candidates table, with at most two per worker in
    # flight, so the driver holds a few shards' lists however many queries there are.
    lists = iter_lists(candidates_uri, work_ids)
    if head.config.signals or fusion is not None:  # each list with its signal matrix
        lists = with_signals(iter_lists(candidates_uri, work_ids, rows=SIGNAL_SOURCE), source["k"])
    shards = _shards(lists, options.shard_size)
    # one shard of work left (and no cluster named): Ray's start costs more than the work, which runs here
    here = n_shards - done_before <= (0 if config.ray.address else 1)
    with tqdm(total=len(work_ids), desc=f"rerank {split}", unit="query", disable=not progress) as bar:
        if here:
            for index, lists in enumerate(shards):
                empty += sum(1 for item in lists if not item[1])
                if not store.done(index):
                    worker = RerankShard(model_dir, work.passages, work.queries, replace(settings, device=device),
                                         config.schedule, store, None, fallback, fusion)
                    _, missing, spent = worker.run(index, lists)
                    skipped += missing
                    seconds = {k: seconds[k] + spent[k] for k in seconds}
                bar.update(len(lists))
        else:
            skipped, empty, seconds = _on_ray(config, model_dir, settings, device, arithmetic, store, shards, fallback,
                                              fusion, bar)
    if n_shards > done_before:
        log.info("rerank: time in take %.1fs, model %.1fs, write %.1fs", *seconds.values())
    if skipped:
        log.warning("rerank: skipped %d candidate(s) missing from the passage cache (skip_missing)", skipped)
    done = {**provenance, "queries": len(query_ids), QUERY_KEYS: keys}
    if todo.incremental:
        replaced = [*work_ids, *todo.drop]
        version = update_ranked(store.reader(n_shards, RANKINGS), uri, done, replaced)
        added = added_lines(run_path)
        write_trec(store.reader(n_shards, RANKINGS), added, tag=f"listcon-{run_name}")
        update_trec(run_path, f"listcon-{run_name}", replaced, added)
    else:
        version = write_ranked(store.reader(n_shards, RANKINGS), uri, done)
        write_trec(store.reader(n_shards, RANKINGS), run_path, tag=f"listcon-{run_name}")
    store.clear()
    log.info("rerank: %d of %d queries (%d with no candidates) -> %s (version %d) and %s", len(work_ids),
             len(query_ids), empty, uri, version, run_path)
    return RerankResult(uri, run_path, len(query_ids), empty, skipped, seconds, False, len(work_ids), len(todo.drop))


def _on_ray(config: Config, model_dir: str, settings, device: str, arithmetic: dict, store: ShardStore,
            shards: Iterator[list], fallback: dict | None, fusion: float | None, bar: tqdm) -> tuple[int, int, dict[str, float]]:
    """Rerank ``shards`` (those not done in ``store``) on a pool of Ray actors; returns (skipped, empty, seconds)."""
    skipped, empty, seconds = 0, 0, {"take": 0.0, "model": 0.0, "write": 0.0}
    workers = config.rerank.workers
    start_ray(config.ray.address, object_store_mb=config.ray.object_store_mb)
    import ray
    from ray.util import ActorPool

    nodes = cluster_nodes()
    gpus = 1 if arithmetic["device"] == "cuda" else 0
    threads = int(cpus_per_actor(nodes, "rerank workers", workers, gpus))
    on = replace(settings, device=device)  # what Ray reserves, not what an actor happens to see
    log.info("rerank: %d workers x (%d CPU, %d GPU); nodes: %s", workers, threads, gpus, describe(nodes))
    actor = ray.remote(num_cpus=threads, num_gpus=gpus)(NodeRerankShard)
    pool = ActorPool([actor.remote(model_dir, config.work.passages, config.work.queries, on, config.schedule, store,
                                   threads, fallback, fusion) for _ in range(workers)])
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
    log.info("rerank: queries per node: %s", dict(sorted(per_node.items())))
    return skipped, empty, seconds


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
        gpus = cuda_devices()
    return "cuda" if gpus >= config.rerank.workers else "cpu"


def _shards(lists: Iterator[tuple[str, list[str]]], size: int) -> Iterator[list[tuple[str, list[str]]]]:
    while shard := list(islice(lists, size)):
        yield shard
