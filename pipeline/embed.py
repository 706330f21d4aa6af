"""The embed step: encode what is new or changed into the cache, as a Ray Data job.

Incremental: texts are keyed by id + content hash; unchanged ones are skipped. Resumable:
output is committed to Lance every ``chunk_rows`` rows, so a killed job loses at most the
chunk in flight, and the rerun plans again from what was committed.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
from tqdm.auto import tqdm

from listcon.pipeline.atomic import swap_dir
from listcon.pipeline.embedding_cache import EmbeddingCache, content_hash, is_local
from listcon.pipeline.encode_batch import EncodeBatch, EncoderSettings
from listcon.schemas import ENCODER_FIELDS, embedding_schema, vectors_table

log = logging.getLogger(__name__)

COMPACT_ABOVE_FRAGMENTS = 32


@dataclass(frozen=True)
class EmbedReport:
    """What an embed run did."""

    encoded: int
    skipped: int
    stale: int
    version: int | None
    seconds: float


@dataclass(frozen=True)
class RayOptions:
    """How the encoder actors are placed."""

    concurrency: int = 1  # encoder actors
    cpus_per_actor: float | None = None  # None: the cluster's CPUs split across the actors
    gpus_per_actor: float = 0.0
    chunk_rows: int = 1024  # rows per Lance commit (the most a killed job can lose)


def embed_texts(
    ids: list[str],
    texts: list[str],
    uri: str | Path,
    settings: EncoderSettings,
    connect: Callable[[], RayOptions] = RayOptions,
    rebuild: bool = False,
    prune: bool = False,
    progress: bool = True,
    what: str = "passages",
) -> EmbedReport:
    """Bring the embedding table at ``uri`` up to date with ``ids``/``texts``.

    ``connect`` starts or attaches Ray and says how to place the encoder actors; it is
    called only when something needs encoding, so a no-op rerun never starts Ray.
    """
    start = time.perf_counter()
    uri = str(uri)
    encoder = settings.load(device="cpu")
    expected = settings.expected_metadata(encoder)
    target = uri
    if rebuild and EmbeddingCache(uri).exists:
        if not is_local(uri):
            raise ValueError(f"--rebuild replaces {uri} in place, which needs a local path; write the new cache to another --workdir")
        target = uri + ".rebuild"
        staged = EmbeddingCache(target)
        if staged.exists and any(staged.metadata.get(k) != expected.get(k) for k in ENCODER_FIELDS):
            shutil.rmtree(target)  # a staged rebuild for other settings: start it over
    cache = EmbeddingCache(target)
    cache.check_encoder(expected)

    hashes = [content_hash(t) for t in texts]
    have = cache.hashes()
    todo = [i for i, (pid, h) in enumerate(zip(ids, hashes)) if have.get(pid) != h]
    stale = sorted(set(have) - set(ids))
    log.info("%s: %d to encode, %d unchanged (skipped), %d cached but not in the input%s",
             what, len(todo), len(ids) - len(todo), len(stale), " (pruning)" if prune and stale else "")
    if todo:
        schema = embedding_schema(encoder.dim, settings.dtype, {k: v for k, v in expected.items() if k not in ("dim", "dtype")})
        todo.sort(key=lambda i: -len(texts[i]))  # similar lengths share batches: less padding
        work = pa.table({"id": [ids[i] for i in todo], "text": [texts[i] for i in todo], "content_hash": [hashes[i] for i in todo]})
        options = connect()
        pending: list[dict] = []
        with tqdm(total=len(todo), desc=f"embed {what}", unit="text", disable=not progress) as bar:
            for batch in _encode_stream(work, settings, options):
                pending.append(batch)
                bar.update(len(batch["id"]))
                if sum(len(b["id"]) for b in pending) >= options.chunk_rows:
                    cache.upsert(_chunk_table(pending, schema))
                    pending = []
            cache.upsert(_chunk_table(pending, schema))
        if len(cache.dataset.get_fragments()) > COMPACT_ABOVE_FRAGMENTS:
            cache.compact()
    if prune and stale:
        cache.delete(stale)
    if target != uri:
        swap_dir(target, uri)
    version = EmbeddingCache(uri).version
    return EmbedReport(len(todo), len(ids) - len(todo), 0 if prune else len(stale), version, time.perf_counter() - start)


def _chunk_table(batches: list[dict], schema: pa.Schema) -> pa.Table:
    """One Lance commit's worth of encoder output batches."""
    if not batches:
        return schema.empty_table()
    return vectors_table([i for b in batches for i in b["id"]], [h for b in batches for h in b["content_hash"]],
                         np.concatenate([b["vector"] for b in batches]), schema)


def _encode_stream(work: pa.Table, settings: EncoderSettings, options: RayOptions):
    """Yield the encoder actors' output batches (numpy dicts) as they complete."""
    import ray

    blocks = [work.slice(i, options.chunk_rows) for i in range(0, work.num_rows, options.chunk_rows)]
    cpus = options.cpus_per_actor or max(1.0, ray.cluster_resources().get("CPU", 1.0) // options.concurrency)
    dataset = ray.data.from_arrow(blocks).map_batches(
        EncodeBatch,
        fn_constructor_kwargs={"settings": settings, "threads": max(1, int(cpus))},
        batch_size=settings.batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=options.concurrency),
        num_cpus=cpus,
        num_gpus=options.gpus_per_actor or None,
    )
    yield from dataset.iter_batches(batch_size=None, batch_format="numpy")
