"""`listcon retrieve`: embed a split's queries through the cache, retrieve (dense, lexical, fused
or from an external run), and write the candidates with every signal + the TREC runs."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow as pa

from listcon.jobs.config import Config
from listcon.jobs.lock import locked
from listcon.jobs.embed_job import ray_encoder
from listcon.jobs.runtime import log_config, ray_running, release_freed_memory, stop_ray_started_since
from listcon.pipeline.data.readers import judged_queries, read_corpus, read_queries
from listcon.pipeline.data.runs import read_run
from listcon.pipeline.encoding.embed import embed_texts
from listcon.pipeline.retrieval import faiss_index
from listcon.pipeline.retrieval.faiss_index import IndexSpec
from listcon.pipeline.retrieval.lexical import LexicalIndex, read_manifest
from listcon.pipeline.retrieval.retrieve import COMPARISONS, FirstStage
from listcon.pipeline.store.corpus_state import check_corpus_current
from listcon.pipeline.store.embedding_cache import CacheMismatchError, EmbeddingCache
from listcon.pipeline.store.ranked_lists import TrecWriter, read_provenance, write_ranked
from listcon.pipeline.store.workdir import FIRST_STAGE_RUN
from listcon.schemas import CANDIDATES, to_dict

log = logging.getLogger(__name__)

FIRST_STAGE = FIRST_STAGE_RUN


@dataclass(frozen=True)
class RetrieveResult:
    """Where a split's candidates went."""

    uri: str
    run_path: Path
    queries: int
    k: int
    up_to_date: bool


def _file_digest(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@locked("retrieve")
def retrieve(config: Config, split: str | None = None, k: int | None = None, progress: bool = True) -> RetrieveResult:
    """Candidates for every judged query of ``split``; a rerun with the same inputs changes nothing."""
    split, options = split or config.split, config.retrieve
    k = k or options.k
    work, settings = config.work, config.encoder_settings
    corpus = read_corpus(config.need_data(), empty="skip" if config.embed.skip_empty else "error")
    check_corpus_current(work, config.data, config.inputs.stale_corpus, "retrieve")
    queries, _ = judged_queries(config.data, split, corpus.ids(), config.inputs.unknown_passages)
    passages = EmbeddingCache(work.passages)
    if not passages.exists:
        raise FileNotFoundError(f"no passage cache at {work.passages}; run `listcon embed {config.data} --workdir "
                                f"{config.workdir}` and then `listcon index --workdir {config.workdir}` first")
    index, passage_ids, manifest = faiss_index.load(work.index)
    if not manifest.covers(passages.version, passages.metadata):
        raise RuntimeError(f"the index at {work.index} covers passages version {manifest.table_version}, "
                           f"but the cache is at version {passages.version} (or was rebuilt); run `listcon index` first")
    lexical_manifest = read_manifest(work.lexical)
    if lexical_manifest is None:
        raise FileNotFoundError(f"no lexical index at {work.lexical}; run `listcon index` first")
    # search-time options may change; how the index was built may not
    spec = IndexSpec(**{**manifest.spec, **{f: getattr(config.index, f) for f in ("nprobe", "ef_search", "use_gpu")}})
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
        external = read_run(options.from_run, set(query_ids), corpus.ids(), known, options.missing_queries)
        if len(external) < len(query_ids):
            lacking = sorted(set(query_ids) - external.keys())
            log.warning("retrieve: the external run lacks %d of the split's %d queries (e.g. %s): they get no "
                        "candidates (--missing-queries empty)", len(lacking), len(query_ids), lacking[:3])
    ray_was_running = ray_running()
    embed_texts(query_ids, query_texts, work.queries, settings, ray_encoder(config.ray), progress=progress, what="queries")
    stop_ray_started_since(ray_was_running)  # retrieval itself needs no Ray
    query_cache = EmbeddingCache(work.queries)

    provenance = {"split": split, "k": min(k, manifest.count), "passages_version": passages.version,
                  "query_vectors": query_cache.digest(query_ids), "encoder": passages.metadata["fingerprint"],
                  "index": {f: v for f, v in asdict(spec).items() if f != "use_gpu"}, "lexical": lexical_manifest,
                  "retrieve": {**to_dict(options), "k": min(k, manifest.count),
                               "from_run": _file_digest(options.from_run) if options.from_run else None},
                  "queries": len(query_ids)}
    uri, run_path = work.candidates(split), work.run(split, FIRST_STAGE)
    if read_provenance(uri) == provenance and run_path.is_file():
        log.info("retrieve: candidates for %s are up to date (%s); nothing to do", split, uri)
        return RetrieveResult(uri, run_path, len(query_ids), provenance["k"], True)
    stage = FirstStage(index, passage_ids, spec, LexicalIndex.load(work.lexical), passages, options)
    with ExitStack() as stack:
        runs = {FIRST_STAGE: stack.enter_context(TrecWriter(run_path, "listcon-first-stage")),
                **{name: stack.enter_context(TrecWriter(work.run(split, name), f"listcon-{name}")) for name in COMPARISONS}}

        def stream() -> Iterator[pa.RecordBatch]:
            """Query batches' candidates, written to the runs as they pass; memory holds one batch."""
            for candidates, comparisons in stage.run(query_ids, query_texts, query_cache.take, external,
                                                      progress=progress):
                runs[FIRST_STAGE].write(candidates)
                for name in COMPARISONS:
                    runs[name].write(comparisons[name])
                yield from candidates.to_batches()
                del candidates, comparisons
                release_freed_memory()  # each batch frees what it allocated: keep resident memory flat
            # the runs land before the table commits its provenance: a kill in between makes a rerun redo both
            for run in runs.values():
                run.commit()

        version = write_ranked(pa.RecordBatchReader.from_batches(CANDIDATES, stream()), uri, provenance)
    source = f"external run {options.from_run}" if options.from_run else options.method
    log.info("retrieve: %d queries x top-%d (%s) -> %s (version %d) and %s", len(query_ids), provenance["k"], source, uri,
             version, run_path)
    return RetrieveResult(uri, run_path, len(query_ids), provenance["k"], False)
