"""`listcon retrieve`: embed a split's queries through the cache, retrieve (dense, lexical, fused
or from an external run), and write the candidates with every signal + the TREC runs."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from listcon.jobs.config import Config
from listcon.jobs.lock import locked
from listcon.jobs.plans import candidates_keys, candidates_provenance, first_stage_runs, missing_output, search_spec
from listcon.jobs.embed_job import ray_encoder
from listcon.jobs.runtime import log_config, ray_running, release_freed_memory, stop_ray_started_since
from listcon.pipeline.data.readers import judged_queries, read_corpus, read_queries
from listcon.pipeline.data.runs import read_run
from listcon.pipeline.encoding.embed import embed_texts
from listcon.pipeline.retrieval import faiss_index
from listcon.pipeline.retrieval.lexical import LexicalIndex, read_manifest
from listcon.pipeline.retrieval.retrieve import FirstStage
from listcon.pipeline.store.corpus_state import check_corpus_current, unchanged_corpus_ids
from listcon.pipeline.store.embedding_cache import CacheMismatchError, EmbeddingCache
from listcon.pipeline.store.query_provenance import LIST_DIGESTS, QUERY_KEYS, list_digests, plan
from listcon.pipeline.store.ranked_lists import (
    TrecWriter,
    added_lines,
    read_provenance,
    update_ranked,
    update_trec,
    write_ranked,
)
from listcon.pipeline.store.workdir import FIRST_STAGE_RUN
from listcon.schemas import CANDIDATES

log = logging.getLogger(__name__)

FIRST_STAGE = FIRST_STAGE_RUN
TAGS = {FIRST_STAGE: "listcon-first-stage"}  # each TREC run's tag; the comparisons': listcon-<name>


@dataclass(frozen=True)
class RetrieveResult:
    """Where a split's candidates went."""

    uri: str
    run_path: Path
    queries: int
    k: int
    up_to_date: bool
    computed: int = 0  # queries retrieved by this run (the others' rows were up to date)
    removed: int = 0  # queries that left the split, their rows deleted


@locked("retrieve")
def retrieve(config: Config, split: str | None = None, k: int | None = None, progress: bool = True) -> RetrieveResult:
    """Candidates for every judged query of ``split``; a rerun with the same inputs changes nothing."""
    split, options = split or config.split, config.retrieve
    k = k or options.k
    work, settings = config.work, config.encoder
    changes = check_corpus_current(work, config.need_data(), config.inputs.stale_corpus, "retrieve")
    # a corpus unchanged since embed is not read again (at 1M passages that read was most of a small rerun)
    corpus_ids = unchanged_corpus_ids(work, changes)
    if corpus_ids is None:
        corpus_ids = read_corpus(config.data, empty="skip" if config.embed.skip_empty else "error").ids()
    queries, _ = judged_queries(config.data, split, corpus_ids, config.inputs.unknown_passages)
    passages = EmbeddingCache(work.passages)
    if not passages.exists:
        raise FileNotFoundError(f"no passage cache at {work.passages}; run `listcon embed {config.data} --workdir "
                                f"{config.workdir}` and then `listcon index --workdir {config.workdir}` first")
    manifest = faiss_index.read_manifest(work.index)
    if manifest is None:
        raise FileNotFoundError(f"no index at {work.index}; run `listcon index` first")
    if not manifest.covers(passages.version, passages.metadata):
        raise RuntimeError(f"the index at {work.index} covers passages version {manifest.table_version}, "
                           f"but the cache is at version {passages.version} (or was rebuilt); run `listcon index` first")
    lexical_manifest = read_manifest(work.lexical)
    if lexical_manifest is None:
        raise FileNotFoundError(f"no lexical index at {work.lexical}; run `listcon index` first")
    spec = search_spec(config, manifest)
    log_config("retrieve", {"data": config.data, "workdir": config.workdir, "split": split, "k": k,
                            "retrieve": options, "encoder": settings, "index": spec, "ray": config.ray})
    encoder = settings.load(device="cpu")
    try:
        passages.check_encoder(settings.expected_metadata(encoder))
    except CacheMismatchError as err:
        raise CacheMismatchError(f"queries must be encoded like the passages: {err}") from None
    query_ids, query_texts = queries["id"].to_pylist(), queries["text"].to_pylist()
    external = None
    if options.from_run:
        known = set(read_queries(config.data)["id"].to_pylist())
        external = read_run(options.from_run, set(query_ids), corpus_ids, known, options.missing_queries)
        if len(external) < len(query_ids):
            lacking = sorted(set(query_ids) - external.keys())
            log.warning("retrieve: the external run lacks %d of the split's %d queries (e.g. %s): they get no "
                        "candidates (--missing-queries empty)", len(lacking), len(query_ids), lacking[:3])
    keys = candidates_keys(query_ids, query_texts, external, options.pool)
    provenance = candidates_provenance(config, split, k, manifest, passages.version, passages.metadata["fingerprint"],
                                       lexical_manifest, external is not None)
    uri = work.candidates(split)
    run_paths = first_stage_runs(work, split)
    old = read_provenance(uri)
    todo = plan(old, provenance, keys, "changed text", missing_output(run_paths.values()))
    log.info("%s", todo.describe("retrieve"))
    if todo.nothing:
        return RetrieveResult(uri, run_paths[FIRST_STAGE], len(query_ids), provenance["k"], True)
    ray_was_running = ray_running()
    embed_texts(query_ids, query_texts, work.queries, settings,
                ray_encoder(config.ray, config.embed, here_up_to=settings.batch_for("cpu")), progress=progress, what="queries")
    stop_ray_started_since(ray_was_running)  # retrieval itself needs no Ray
    query_cache = EmbeddingCache(work.queries)
    index, passage_ids, _ = faiss_index.load(work.index)  # read only now: at 1M passages, 1.5 GB
    stage = FirstStage(index, passage_ids, spec, LexicalIndex.load(work.lexical), passages, options)
    hashes = passages.hashes()
    digests = {} if not todo.incremental else {q: d for q, d in old[LIST_DIGESTS].items() if q in keys}
    position = {q: i for i, q in enumerate(query_ids)}
    todo_texts = [query_texts[position[q]] for q in todo.todo]
    replaced = [*todo.todo, *todo.drop]
    # a full run writes each TREC run in place; an update writes the new lines beside it, then merges
    written = {name: added_lines(path) if todo.incremental else path for name, path in run_paths.items()}
    with ExitStack() as stack:
        runs = {name: stack.enter_context(TrecWriter(path, TAGS.get(name, f"listcon-{name}")))
                for name, path in written.items()}

        def stream() -> Iterator[pa.RecordBatch]:
            """Query batches' candidates, written to the runs as they pass; memory holds one batch."""
            for candidates, comparisons in stage.run(todo.todo, todo_texts, query_cache.take, external,
                                                      progress=progress):
                digests.update(list_digests(candidates, keys, hashes))
                for name, rows in {FIRST_STAGE: candidates, **comparisons}.items():
                    runs[name].write(rows)
                yield from candidates.to_batches()
                del candidates, comparisons
                release_freed_memory()  # each batch frees what it allocated: keep resident memory flat
            # the runs land before the table commits its provenance: a kill in between makes a rerun redo both
            for name, run in runs.items():
                run.commit()
                if todo.incremental:
                    update_trec(run_paths[name], run.tag, replaced, written[name])

        reader = pa.RecordBatchReader.from_batches(CANDIDATES, stream())
        done = {**provenance, "queries": len(query_ids), QUERY_KEYS: keys, LIST_DIGESTS: digests}
        if todo.incremental:
            version = update_ranked(reader, uri, done, replaced)
        else:
            version = write_ranked(reader, uri, done)
    source = (f"the pools of {options.from_run}, ranked {options.method}" if options.pool
              else f"external run {options.from_run}" if options.from_run else options.method)
    log.info("retrieve: %d of %d queries x top-%d (%s) -> %s (version %d) and %s", len(todo.todo), len(query_ids),
             provenance["k"], source, uri, version, run_paths[FIRST_STAGE])
    return RetrieveResult(uri, run_paths[FIRST_STAGE], len(query_ids), provenance["k"], False, len(todo.todo),
                          len(todo.drop))
