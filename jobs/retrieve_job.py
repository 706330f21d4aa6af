"""`listcon retrieve`: embed a split's queries through the cache, search, write candidates + TREC run."""

from __future__ import annotations

import logging
from dataclasses import asdict

from listcon.jobs.embed_job import ray_connector
from listcon.jobs.runtime import log_config
from listcon.pipeline import faiss_index
from listcon.pipeline.embed import embed_texts
from listcon.pipeline.embedding_cache import CacheMismatchError, EmbeddingCache
from listcon.pipeline.encode_batch import EncoderSettings
from listcon.pipeline.faiss_index import IndexSpec
from listcon.pipeline.ranked_lists import read_provenance, write_ranked, write_trec
from listcon.pipeline.readers import judged_queries, read_corpus
from listcon.pipeline.retrieve import clamp_k, retrieve
from listcon.pipeline.workdir import Workdir

log = logging.getLogger(__name__)

FIRST_STAGE = "first_stage"


def run_retrieve(data: str, workdir: Workdir, split: str, settings: EncoderSettings, *, k: int = 1000,
                 spec: IndexSpec = IndexSpec(), empty: str = "error", ray_address: str | None = None,
                 progress: bool = True) -> str:
    """Returns the candidates table URI; a rerun with the same inputs changes nothing."""
    corpus = read_corpus(data, empty=empty)
    queries, _ = judged_queries(data, split, corpus.ids())
    passages = EmbeddingCache(workdir.passages)
    index, passage_ids, manifest = faiss_index.load(workdir.index)
    if not manifest.covers(passages.version, passages.metadata):
        raise RuntimeError(f"the index at {workdir.index} covers passages version {manifest.table_version}, "
                           f"but the cache is at version {passages.version} (or was rebuilt); run `listcon index` first")
    # search-time options may change; how the index was built may not
    spec = IndexSpec(**{**manifest.spec, **{f: getattr(spec, f) for f in ("nprobe", "ef_search", "use_gpu")}})
    log_config("retrieve", {"data": data, "workdir": str(workdir.root), "split": split, "k": k,
                            "encoder": asdict(settings), "index": asdict(spec), "ray_address": ray_address})
    encoder = settings.load(device="cpu")
    try:
        passages.check_encoder(settings.expected_metadata(encoder))
    except CacheMismatchError as err:
        raise CacheMismatchError(f"queries must be encoded like the passages: {err}") from None
    query_ids = queries["id"].to_pylist()
    embed_texts(query_ids, queries["text"].to_pylist(), workdir.queries, settings,
                ray_connector(ray_address), progress=progress, what="queries")
    query_cache = EmbeddingCache(workdir.queries)

    k = clamp_k(k, manifest.count)
    provenance = {"split": split, "k": k, "passages_version": passages.version, "query_vectors": query_cache.digest(query_ids),
                  "encoder": passages.metadata["fingerprint"],
                  "index": {f: v for f, v in asdict(spec).items() if f != "use_gpu"},
                  "queries": len(query_ids)}
    uri, run_path = workdir.candidates(split), workdir.run(split, FIRST_STAGE)
    if read_provenance(uri) == provenance and run_path.is_file():
        log.info("retrieve: candidates for %s are up to date (%s); nothing to do", split, uri)
        return uri
    table = retrieve(index, passage_ids, query_ids, query_cache.take(query_ids), k, spec, progress=progress)
    version = write_ranked(table, uri, provenance)
    write_trec(table, run_path, tag="listcon-first-stage")
    log.info("retrieve: %d queries x top-%d -> %s (version %d) and %s", len(query_ids), k, uri, version, run_path)
    return uri
