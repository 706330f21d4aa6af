"""`listcon index`: the FAISS index over the passage cache and the BM25 index over the passage
texts, each rebuilt only when what it covers (or how it is built) changed."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass

from listcon.jobs.config import Config
from listcon.jobs.lock import locked
from listcon.jobs.runtime import log_config
from listcon.pipeline.retrieval import faiss_index
from listcon.pipeline.retrieval.faiss_index import Manifest
from listcon.pipeline.retrieval.lexical import LexicalIndex, read_manifest, texts_digest
from listcon.pipeline.store.embedding_cache import EmbeddingCache
from listcon.pipeline.store.text_table import TextTable

log = logging.getLogger(__name__)

BUILD_FIELDS = ("kind", "metric", "nlist", "hnsw_m")  # search-time options do not force a rebuild


@dataclass(frozen=True)
class IndexResult:
    """What the two indexes cover: the dense manifest and the lexical one."""

    dense: Manifest
    lexical: dict


@locked("index")
def index(config: Config) -> IndexResult:
    """Build (or keep) W/index/ over the passage cache and W/lexical/ over the passage texts."""
    work, spec = config.work, config.index
    log_config("index", {"workdir": config.workdir, "passages": work.passages, "index": spec, "lexical": config.lexical})
    return IndexResult(_dense(config), _lexical(config))


def _dense(config: Config) -> Manifest:
    work, spec = config.work, config.index
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


def _lexical(config: Config) -> dict:
    work, spec = config.work, config.lexical
    ids, hashes, texts = TextTable(work.texts).read()
    wanted = {"texts": texts_digest(ids, hashes), "count": len(ids), "spec": asdict(spec)}
    current = read_manifest(work.lexical)
    if current == wanted:
        log.info("index: lexical index up to date (%d passages); nothing to do", len(ids))
        return current
    start = time.perf_counter()
    LexicalIndex.build(ids, texts, spec).save(work.lexical, {k: v for k, v in wanted.items() if k != "spec"})
    log.info("index: BM25 (%s, stemmer %s) over %d passages in %.1fs", spec.method, spec.stemmer, len(ids),
             time.perf_counter() - start)
    return wanted
