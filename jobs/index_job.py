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
# A flat index is updated in place while the passages removed and added are at most this share of the
# corpus; a bigger change reads every vector anyway, and a rebuild lays them out in table order.
UPDATE_UP_TO = 0.5


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
    if dense_stale(config, cache, current) is None:
        log.info("index: up to date with passages version %d (%d vectors); nothing to do", current.table_version, current.count)
        return current
    start = time.perf_counter()
    hashes = cache.hashes()
    manifest_for = lambda count, dim: Manifest(table_version=cache.version, count=count, dim=dim,  # noqa: E731
                                               spec=asdict(spec), encoder=cache.metadata)
    if _updatable(config, cache, current):
        saved, ids, _ = faiss_index.load(work.index)
        old = faiss_index.saved_hashes(work.index)
        change = faiss_index.delta(ids, old, hashes)
        if len(change) <= UPDATE_UP_TO * len(hashes):
            ids, kept = faiss_index.update_flat(saved, ids, old, hashes, change, cache.take, spec.metric)
            manifest = manifest_for(len(ids), current.dim)
            faiss_index.save(work.index, saved, ids, manifest, kept)
            log.info("index: flat index updated in place (-%d, +%d vectors) to %d vectors (passages version %d) in %.1fs",
                     len(change.gone), len(change.added), len(ids), cache.version, time.perf_counter() - start)
            return manifest
    ids, vectors = cache.read_all()
    built = faiss_index.build(vectors, spec)
    manifest = manifest_for(len(ids), int(vectors.shape[1]))
    faiss_index.save(work.index, built, ids, manifest, [hashes[p] for p in ids])
    log.info("index: %s over %d vectors (passages version %d) built in %.1fs", spec.kind, len(ids), cache.version,
             time.perf_counter() - start)
    return manifest


def _updatable(config: Config, cache: EmbeddingCache, current: Manifest | None) -> bool:
    """A flat index of the same settings and encoder, saved with its passages' hashes, is updated in
    place (IVF's lists were trained on the old passages, HNSW cannot remove: those are rebuilt)."""
    return (current is not None and config.index.kind == "flat" and current.encoder == cache.metadata
            and {k: current.spec.get(k) for k in BUILD_FIELDS} == {k: getattr(config.index, k) for k in BUILD_FIELDS}
            and faiss_index.saved_hashes(config.work.index) is not None)


def dense_stale(config: Config, cache: EmbeddingCache, current: Manifest | None) -> str | None:
    """Why the dense index must be rebuilt, or None when it covers the cache as configured."""
    if current is None:
        return "no dense index yet"
    if not current.covers(cache.version, cache.metadata):
        return f"it covers passages version {current.table_version}, the cache is at {cache.version}"
    if {k: current.spec.get(k) for k in BUILD_FIELDS} != {k: v for k, v in asdict(config.index).items() if k in BUILD_FIELDS}:
        return "the index settings changed"
    return None


def lexical_wanted(config: Config, ids: list[str], hashes: list[str]) -> dict:
    """The manifest a BM25 index over these passage texts, built as configured, carries."""
    return {"texts": texts_digest(ids, hashes), "count": len(ids), "spec": asdict(config.lexical)}


def _lexical(config: Config) -> dict:
    work, spec = config.work, config.lexical
    ids, hashes, texts = TextTable(work.texts).read()
    wanted = lexical_wanted(config, ids, hashes)
    current = read_manifest(work.lexical)
    if current == wanted:
        log.info("index: lexical index up to date (%d passages); nothing to do", len(ids))
        return current
    start = time.perf_counter()
    LexicalIndex.build(ids, texts, spec).save(work.lexical, {k: v for k, v in wanted.items() if k != "spec"})
    log.info("index: BM25 (%s, stemmer %s) over %d passages in %.1fs", spec.method, spec.stemmer, len(ids),
             time.perf_counter() - start)
    return wanted
