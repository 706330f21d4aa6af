"""The embed step: encode what is new or changed into the cache.

Incremental: texts are keyed by id + content hash; unchanged ones are skipped. Resumable:
output is committed to Lance every ``chunk_rows`` rows, so a killed job loses at most the
chunk in flight, and the rerun plans again from what was committed.

Where the encoding runs is the caller's choice: ``encode`` turns the table of texts to
encode into a stream of encoded batches. By default that happens in this process
(``encode_here``); the embed job passes a Ray Data pipeline of encoder actors. It is
called only when something needs encoding, so a no-op rerun never starts Ray.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
from tqdm.auto import tqdm

from listcon.pipeline.encoding.encode_batch import EncodeBatch, EncoderSettings
from listcon.pipeline.store.atomic import swap_dir
from listcon.pipeline.store.embedding_cache import CacheMismatchError, EmbeddingCache, content_hash, is_local
from listcon.schemas import ENCODER_FIELDS, DataError, embedding_schema, encoder_field, vectors_table

log = logging.getLogger(__name__)

COMPACT_ABOVE_FRAGMENTS = 32

EncodeStream = Callable[[pa.Table, EncoderSettings], Iterator[dict]]


@dataclass(frozen=True)
class EmbedReport:
    """What an embed run did."""

    encoded: int
    skipped: int
    stale: int
    version: int | None
    seconds: float


def encode_here(work: pa.Table, settings: EncoderSettings) -> Iterator[dict]:
    """Encode ``work`` (id, text, content_hash) in this process, one encoder batch at a time."""
    encode = EncodeBatch(settings)
    for batch in work.to_batches(max_chunksize=encode.encoder.batch_size):
        yield encode({name: batch[name].to_numpy(zero_copy_only=False) for name in ("id", "text", "content_hash")})


def embed_texts(
    ids: list[str],
    texts: list[str],
    uri: str | Path,
    settings: EncoderSettings,
    encode: EncodeStream = encode_here,
    rebuild: bool = False,
    prune: bool = False,
    prune_limit: float | None = None,
    chunk_rows: int = 1024,
    progress: bool = True,
    what: str = "passages",
) -> EmbedReport:
    """Bring the embedding table at ``uri`` up to date with ``ids``/``texts``. With ``prune``, cached ids
    not given are deleted, refused above ``prune_limit`` of the cache (a partial input is the usual cause)."""
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
        if staged.exists and any(encoder_field(staged.metadata, k) != encoder_field(expected, k) for k in ENCODER_FIELDS):
            shutil.rmtree(target)  # a staged rebuild for other settings: start it over
    cache = EmbeddingCache(target)
    cache.check_encoder(expected)

    hashes = [content_hash(t) for t in texts]
    have = cache.hashes()
    todo = [i for i, (pid, h) in enumerate(zip(ids, hashes)) if have.get(pid) != h]
    stale = sorted(set(have) - set(ids))
    if prune and stale and prune_limit is not None and len(stale) > prune_limit * len(have):
        raise ValueError(f"prune would delete {len(stale)} of the {len(have)} cached {what} ({len(stale) / len(have):.0%}, "
                         f"more than prune_limit {prune_limit:.0%}): is the input complete? Confirm with "
                         "--confirm-prune, or run without --prune")
    log.info("%s: %d to encode, %d unchanged (skipped), %d cached but not in the input%s",
             what, len(todo), len(ids) - len(todo), len(stale), " (pruning)" if prune and stale else "")
    if todo:
        # the arithmetic is the workers' (a GPU actor under auto computes in bf16), known from their output
        recorded = encoder_field(cache.metadata, "precision") if cache.exists else None
        schema = None
        todo.sort(key=lambda i: -len(texts[i]))  # similar lengths share batches: less padding
        work = pa.table({"id": [ids[i] for i in todo], "text": [texts[i] for i in todo], "content_hash": [hashes[i] for i in todo]})
        pending: list[dict] = []
        rows = 0
        with tqdm(total=len(todo), desc=f"embed {what}", unit="text", disable=not progress) as bar:
            for batch in encode(work, settings):
                used = str(batch["precision"][0]) if "precision" in batch else expected["precision"]
                if recorded is not None and used != recorded:
                    raise CacheMismatchError(
                        f"the embedding cache at {uri} holds vectors computed in {recorded}, but this run's encoder "
                        f"workers compute in {used}; set [encoder] precision = \"{recorded}\" (or encode where "
                        f"{recorded} runs), or re-encode everything with --rebuild")
                recorded = used
                if schema is None:
                    meta = {k: v for k, v in expected.items() if k not in ("dim", "dtype")}
                    schema = embedding_schema(encoder.dim, settings.dtype, {**meta, "precision": used})
                pending.append(batch)
                rows += len(batch["id"])
                bar.update(len(batch["id"]))  # moves per encoder batch, not per commit
                if rows >= chunk_rows:
                    cache.upsert(_chunk_table(pending, schema))
                    pending, rows = [], 0
            if pending:
                cache.upsert(_chunk_table(pending, schema))
        if cache.exists and len(cache.dataset.get_fragments()) > COMPACT_ABOVE_FRAGMENTS:
            cache.compact()
    if prune and stale:
        cache.delete(stale)
    if target != uri:
        swap_dir(target, uri)
    final = EmbeddingCache(uri)
    if todo or (prune and stale):  # after a write: one row per id, whatever happened around us
        duplicates = len(final) - len(final.hashes())
        if duplicates:
            raise DataError(uri, f"{duplicates} duplicate id row(s) after this commit: another writer interleaved "
                                 "(each job locks its workdir; was this table shared?). Rebuild it with --rebuild")
    version = final.version
    return EmbedReport(len(todo), len(ids) - len(todo), 0 if prune else len(stale), version, time.perf_counter() - start)


def _chunk_table(batches: list[dict], schema: pa.Schema) -> pa.Table:
    """One Lance commit's worth of encoder output batches."""
    if not batches:
        return schema.empty_table()
    return vectors_table([i for b in batches for i in b["id"]], [h for b in batches for h in b["content_hash"]],
                         np.concatenate([b["vector"] for b in batches]), schema)
