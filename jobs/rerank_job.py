"""`listcon rerank`: rerank a split's candidates with the head, as Ray actors over query shards.

Resumable per shard: finished shards are kept on disk under the rankings table's
provenance; a killed job reruns only the unfinished ones and ends with the same table.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import asdict
from itertools import islice

from tqdm.auto import tqdm

from listcon.jobs.runtime import log_config, start_ray
from listcon.model import ListConRanker
from listcon.pipeline.embedding_cache import EmbeddingCache
from listcon.pipeline.ranked_lists import iter_lists, read_provenance, write_ranked, write_trec
from listcon.pipeline.rerank import RerankSettings, checkpoint_fingerprint
from listcon.pipeline.readers import judged_queries
from listcon.pipeline.rerank_shard import RerankShard
from listcon.pipeline.shards import ShardStore
from listcon.pipeline.workdir import Workdir
from listcon.schemas import RANKINGS

log = logging.getLogger(__name__)

RERANKED = "listcon"


def run_rerank(data: str, workdir: Workdir, split: str, model_dir: str, settings: RerankSettings = RerankSettings(), *,
               run_name: str = RERANKED, shard_size: int = 32, workers: int = 1, ray_address: str | None = None,
               progress: bool = True) -> str:
    """Rerank W/candidates/<split> into W/rankings (+ a TREC run); returns the rankings URI."""
    log_config("rerank", {"data": data, "workdir": str(workdir.root), "split": split, "model_dir": model_dir, "run": run_name,
                          "settings": asdict(settings), "shard_size": shard_size, "workers": workers,
                          "ray_address": ray_address})
    ListConRanker.from_pretrained(model_dir)  # fail fast on a bad checkpoint, before any Ray work
    candidates_uri = workdir.candidates(split)
    source = read_provenance(candidates_uri)
    if source is None:
        raise FileNotFoundError(f"no candidates at {candidates_uri}; run `listcon retrieve --split {split}` first")
    passages, queries = EmbeddingCache(workdir.passages), EmbeddingCache(workdir.queries)
    query_ids = list(dict.fromkeys(judged_queries(data, split)[0]["id"].to_pylist()))  # every judged query, even one with no candidates
    provenance = {"split": split, "run": run_name, "checkpoint": checkpoint_fingerprint(model_dir),
                  "candidates": source, "passages_version": passages.version, "query_vectors": queries.digest(query_ids),
                  "settings": {k: v for k, v in asdict(settings).items() if k not in ("device", "memory_budget_mb")}}
    uri = workdir.rankings(split) if run_name == RERANKED else workdir.rankings(f"{split}.{run_name}")
    run_path = workdir.run(split, run_name)
    if read_provenance(uri) == provenance and run_path.is_file():
        log.info("rerank: %s is up to date; nothing to do", uri)
        return uri

    n_shards = -(-len(query_ids) // shard_size)
    store = ShardStore(workdir.root / "rankings" / f".{split}.{run_name}.shards", provenance)
    todo = sum(1 for i in range(n_shards) if not store.done(i))
    log.info("rerank: %d queries in %d shards, %d already done", len(query_ids), n_shards, n_shards - todo)
    skipped, empty, seconds = 0, 0, {"take": 0.0, "model": 0.0, "write": 0.0}
    # Shards are cut from a stream of the candidates table, with at most two per worker in
    # flight, so the driver holds a few shards' lists however many queries there are.
    shards = _shards(iter_lists(candidates_uri, query_ids), shard_size)
    with tqdm(total=len(query_ids), desc=f"rerank {split}", unit="query", disable=not progress) as bar:
        if todo:
            start_ray(ray_address)
            import ray
            from ray.util import ActorPool

            threads = max(1, (os.cpu_count() or 1) // workers)
            gpus = 1 if int(ray.cluster_resources().get("GPU", 0)) >= workers else 0
            actor = ray.remote(num_cpus=threads, num_gpus=gpus)(RerankShard)
            pool = ActorPool([actor.remote(model_dir, workdir.passages, workdir.queries, settings, store, threads)
                              for _ in range(workers)])
        sizes: dict[int, int] = {}

        def collect() -> None:
            nonlocal skipped, seconds
            shard, missing, spent = pool.get_next_unordered()
            skipped += missing
            seconds = {k: seconds[k] + spent[k] for k in seconds}
            bar.update(sizes.pop(shard))

        for index, lists in enumerate(shards):
            empty += sum(1 for _, c in lists if not c)
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
        log.info("rerank: worker time in take %.1fs, model %.1fs, write %.1fs", *seconds.values())
    if skipped:
        log.warning("rerank: skipped %d candidate(s) missing from the passage cache (--skip-missing)", skipped)
    version = write_ranked(store.reader(n_shards, RANKINGS), uri, provenance)
    write_trec(store.reader(n_shards, RANKINGS), run_path, tag=f"listcon-{run_name}")
    store.clear()
    log.info("rerank: %d queries (%d with no candidates) -> %s (version %d) and %s", len(query_ids), empty, uri, version, run_path)
    return uri


def _shards(lists: Iterator[tuple[str, list[str]]], size: int) -> Iterator[list[tuple[str, list[str]]]]:
    while shard := list(islice(lists, size)):
        yield shard
