"""`listcon retrieve`: embed a split's queries through the cache, search, write candidates + TREC run."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

from listcon.jobs.config import Config
from listcon.jobs.embed_job import ray_encoder
from listcon.jobs.runtime import log_config
from listcon.pipeline.data.readers import judged_queries, read_corpus
from listcon.pipeline.encoding.embed import embed_texts
from listcon.pipeline.retrieval import faiss_index
from listcon.pipeline.retrieval.faiss_index import IndexSpec
from listcon.pipeline.retrieval.retrieve import clamp_k, retrieve as search
from listcon.pipeline.store.embedding_cache import CacheMismatchError, EmbeddingCache
from listcon.pipeline.store.ranked_lists import read_provenance, write_ranked, write_trec

log = logging.getLogger(__name__)

FIRST_STAGE = "first_stage"


@dataclass(frozen=True)
class RetrieveResult:
    """Where a split's candidates went."""

    uri: str
    run_path: Path
    queries: int
    k: int
    up_to_date: bool


def retrieve(config: Config, split: str | None = None, k: int | None = None, progress: bool = True) -> RetrieveResult:
    """Top-k candidates for every judged query of ``split``; a rerun with the same inputs changes nothing."""
    split, k = split or config.split, k or config.retrieve.k
    work, settings = config.work, config.encoder
    corpus = read_corpus(config.need_data(), empty="skip" if config.embed.skip_empty else "error")
    queries, _ = judged_queries(config.data, split, corpus.ids())
    passages = EmbeddingCache(work.passages)
    index, passage_ids, manifest = faiss_index.load(work.index)
    if not manifest.covers(passages.version, passages.metadata):
        raise RuntimeError(f"the index at {work.index} covers passages version {manifest.table_version}, "
                           f"but the cache is at version {passages.version} (or was rebuilt); run `listcon index` first")
    # search-time options may change; how the index was built may not
    spec = IndexSpec(**{**manifest.spec, **{f: getattr(config.index, f) for f in ("nprobe", "ef_search", "use_gpu")}})
    log_config("retrieve", {"data": config.data, "workdir": config.workdir, "split": split, "k": k,
                            "encoder": settings, "index": spec, "ray": config.ray})
    encoder = settings.load(device="cpu")
    try:
        passages.check_encoder(settings.expected_metadata(encoder))
    except CacheMismatchError as err:
        raise CacheMismatchError(f"queries must be encoded like the passages: {err}") from None
    query_ids = queries["id"].to_pylist()
    embed_texts(query_ids, queries["text"].to_pylist(), work.queries, settings, ray_encoder(config.ray),
                progress=progress, what="queries")
    query_cache = EmbeddingCache(work.queries)

    k = clamp_k(k, manifest.count)
    provenance = {"split": split, "k": k, "passages_version": passages.version, "query_vectors": query_cache.digest(query_ids),
                  "encoder": passages.metadata["fingerprint"],
                  "index": {f: v for f, v in asdict(spec).items() if f != "use_gpu"},
                  "queries": len(query_ids)}
    uri, run_path = work.candidates(split), work.run(split, FIRST_STAGE)
    if read_provenance(uri) == provenance and run_path.is_file():
        log.info("retrieve: candidates for %s are up to date (%s); nothing to do", split, uri)
        return RetrieveResult(uri, run_path, len(query_ids), k, True)
    table = search(index, passage_ids, query_ids, query_cache.take(query_ids), k, spec, progress=progress)
    version = write_ranked(table, uri, provenance)
    write_trec(table, run_path, tag="listcon-first-stage")
    log.info("retrieve: %d queries x top-%d -> %s (version %d) and %s", len(query_ids), k, uri, version, run_path)
    return RetrieveResult(uri, run_path, len(query_ids), k, False)
