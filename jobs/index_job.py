"""`listcon index`: build the FAISS index over the passage cache (skipped when up to date)."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict

from listcon.jobs.config import Config
from listcon.jobs.runtime import log_config
from listcon.pipeline.retrieval import faiss_index
from listcon.pipeline.retrieval.faiss_index import Manifest
from listcon.pipeline.store.embedding_cache import EmbeddingCache

log = logging.getLogger(__name__)

BUILD_FIELDS = ("kind", "metric", "nlist", "hnsw_m")  # search-time options do not force a rebuild


def index(config: Config) -> Manifest:
    """Build (or keep) W/index/ over the passage cache; returns the manifest of what it covers."""
    work, spec = config.work, config.index
    log_config("index", {"workdir": config.workdir, "passages": work.passages, "index": spec})
    cache = EmbeddingCache(work.passages)
    current = faiss_index.read_manifest(work.index)
    wanted = {k: v for k, v in asdict(spec).items() if k in BUILD_FIELDS}
    if current and current.covers(cache.version, cache.metadata) and {k: current.spec.get(k) for k in BUILD_FIELDS} == wanted:
        log.info("index: up to date with passages version %d (%d vectors); nothing to do", current.table_version, current.count)
        return current
    start = time.perf_counter()
    ids, vectors = cache.read_all()
    built = faiss_index.build(vectors, spec)
    manifest = Manifest(table_version=cache.version, count=len(ids), dim=int(vectors.shape[1]), spec=asdict(spec),
                        encoder=cache.metadata)
    faiss_index.save(work.index, built, ids, manifest)
    log.info("index: %s over %d vectors (passages version %d) in %.1fs", spec.kind, len(ids), cache.version,
             time.perf_counter() - start)
    return manifest
