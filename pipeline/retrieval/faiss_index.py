"""FAISS index over the passage cache, saved beside it with the table version it covers.

Vectors are stored as the encoder gives them (unnormalised); the index searches by cosine
over L2-normalised copies unless ``metric='ip'``. Kinds: exact ``flat`` (default), ``ivf``
and ``hnsw``. On a machine with faiss-gpu and a GPU, flat and IVF indexes search on the GPU.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

try:
    import faiss
except ImportError:  # neither extra installed; the functions below say what to install
    faiss = None
import numpy as np
import pyarrow as pa
import pyarrow.feather as feather

from listcon.pipeline.store.atomic import swap_dir
from listcon.schemas import check_choices, check_ranges, choice, option

log = logging.getLogger(__name__)

KINDS = ("flat", "ivf", "hnsw")
METRICS = ("cosine", "ip")
MANIFEST = "manifest.json"
INDEX_FILE = "index.faiss"
IDS_FILE = "ids.arrow"


@dataclass(frozen=True)
class IndexSpec:
    """How the index is built and searched (part of the index job's config)."""

    kind: str = choice("flat", KINDS, "flat: exact; ivf and hnsw: approximate")
    metric: str = choice("cosine", METRICS, "cosine over normalised copies, or raw inner product")
    nlist: int | None = option(None, "IVF lists (default: about 4*sqrt(n))", at_least=1)
    nprobe: int = option(32, "IVF lists searched", at_least=1)
    hnsw_m: int = option(32, "HNSW links per node", at_least=2)
    ef_search: int = option(256, "HNSW search breadth", at_least=1)
    use_gpu: bool = option(True, "search on the GPU where faiss-gpu and a GPU are present")

    def __post_init__(self) -> None:
        check_ranges(self)
        check_choices(self)


@dataclass(frozen=True)
class Manifest:
    """What a saved index covers: the passages table (version + encoder, since a rebuilt
    table restarts its version count), its size, and the spec."""

    table_version: int
    count: int
    dim: int
    spec: dict
    encoder: dict = field(default_factory=dict)

    def covers(self, table_version: int | None, encoder: dict) -> bool:
        return self.table_version == table_version and self.encoder == encoder


def _require_faiss() -> None:
    if faiss is None:
        raise ImportError("FAISS is not installed: pip install 'listcon[cpu]' (faiss-cpu) or 'listcon[gpu]' "
                          "(faiss-gpu); the two own the same `faiss` module, so install exactly one")


def prepare(vectors: np.ndarray, metric: str) -> np.ndarray:
    """float32, C-contiguous, L2-normalised for cosine (zero vectors stay zero)."""
    out = np.ascontiguousarray(vectors, dtype=np.float32).copy()
    if metric == "cosine":
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        np.divide(out, norms, out=out, where=norms > 0)
    return out


def build(vectors: np.ndarray, spec: IndexSpec) -> faiss.Index:
    """Build a CPU index of ``spec.kind`` over ``vectors`` (inner product on prepared vectors)."""
    _require_faiss()
    x = prepare(vectors, spec.metric)
    n, dim = x.shape
    if spec.kind == "flat":
        index = faiss.IndexFlatIP(dim)
    elif spec.kind == "ivf":
        if spec.nlist is not None and spec.nlist > n:
            raise ValueError(f"nlist={spec.nlist} IVF lists need at least {spec.nlist} passages to train, but the cache "
                             f"holds {n}; use --nlist {n} or less, leave it unset (about 4*sqrt(n)), or --kind flat")
        nlist = spec.nlist or max(1, min(n // 39, int(4 * math.sqrt(n))))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.train(x)
    else:
        index = faiss.IndexHNSWFlat(dim, spec.hnsw_m, faiss.METRIC_INNER_PRODUCT)
    index.add(x)
    return index


def stored_vectors(index: faiss.Index, spec: IndexSpec) -> Callable[[np.ndarray], np.ndarray]:
    """Positions -> the index's own copies of those vectors (``prepare``d, exact: every kind here is
    uncompressed), so exact dense scores need no read from the embedding table."""
    if spec.kind == "ivf":
        faiss.extract_index_ivf(index).make_direct_map()
    return lambda positions: index.reconstruct_batch(np.asarray(positions, dtype=np.int64))


def gpu_count() -> int:
    """GPUs faiss can use (0 with faiss-cpu)."""
    _require_faiss()
    return faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0


# faiss's GPU indexes answer at most this many neighbours per query (k-selection limit).
GPU_MAX_K = 2048


def search_on_gpu(spec: IndexSpec, k: int, gpus: int) -> bool:
    """Whether a top-``k`` search runs on the GPU: asked for, possible, and within faiss's GPU k limit."""
    if not spec.use_gpu or spec.kind == "hnsw" or gpus == 0:
        return False
    if k > GPU_MAX_K:
        log.info("k=%d exceeds faiss's GPU limit of %d neighbours: searching on the CPU", k, GPU_MAX_K)
        return False
    return True


def for_search(index: faiss.Index, spec: IndexSpec, k: int) -> faiss.Index:
    """Apply search-time parameters; move flat/IVF indexes to GPUs when asked, possible and k allows."""
    if spec.kind == "ivf":
        faiss.extract_index_ivf(index).nprobe = spec.nprobe
    if spec.kind == "hnsw":
        index.hnsw.efSearch = spec.ef_search
    if search_on_gpu(spec, k, gpu_count()):
        log.info("searching on %d GPU(s)", gpu_count())
        index = faiss.index_cpu_to_all_gpus(index)
    return index


def search(index: faiss.Index, queries: np.ndarray, k: int, metric: str, batch: int = 256):
    """Top-``k`` (scores, positions) for each query, in query batches."""
    x = prepare(queries, metric)
    scores = np.empty((len(x), k), dtype=np.float32)
    positions = np.empty((len(x), k), dtype=np.int64)
    for start in range(0, len(x), batch):
        scores[start : start + batch], positions[start : start + batch] = index.search(x[start : start + batch], k)
    return scores, positions


def save(directory: str | Path, index: faiss.Index, ids: list[str], manifest: Manifest, hashes: list[str]) -> None:
    """Write index + ids (with each passage's content hash, so a later run can update the index in
    place) + manifest to a temp dir, then swap it into place."""
    _require_faiss()
    directory = Path(directory)
    tmp = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    faiss.write_index(index, str(tmp / INDEX_FILE))
    feather.write_feather(pa.table({"id": pa.array(ids, pa.string()), "content_hash": pa.array(hashes, pa.string())}),
                          str(tmp / IDS_FILE))
    (tmp / MANIFEST).write_text(json.dumps(asdict(manifest), indent=2) + "\n")
    swap_dir(tmp, directory)


def read_manifest(directory: str | Path) -> Manifest | None:
    path = Path(directory) / MANIFEST
    return Manifest(**json.loads(path.read_text())) if path.is_file() else None


def load(directory: str | Path) -> tuple[faiss.Index, list[str], Manifest]:
    """The saved index, its passage ids (by index position) and manifest."""
    _require_faiss()
    directory = Path(directory)
    manifest = read_manifest(directory)
    if manifest is None:
        raise FileNotFoundError(f"no index at {directory}; run `listcon index` first")
    index = faiss.read_index(str(directory / INDEX_FILE))
    ids = feather.read_table(str(directory / IDS_FILE), columns=["id"])["id"].to_pylist()
    return index, ids, manifest


def saved_hashes(directory: str | Path) -> list[str] | None:
    """The content hash of each indexed passage (by position), or None for an index saved without them."""
    table = feather.read_table(str(Path(directory) / IDS_FILE))
    return table["content_hash"].to_pylist() if "content_hash" in table.column_names else None


@dataclass(frozen=True)
class Delta:
    """How the passages moved since an index was saved: its positions to remove (removed or changed
    passages) and the ids to add (new or changed)."""

    gone: np.ndarray
    added: list[str]

    def __len__(self) -> int:
        return len(self.gone) + len(self.added)


def delta(ids: list[str], hashes: list[str], current: dict[str, str]) -> Delta:
    """The delta from an index over (``ids``, ``hashes``) to the passages ``current`` ({id: content hash})."""
    had = dict(zip(ids, hashes))
    return Delta(np.array([i for i, (pid, h) in enumerate(zip(ids, hashes)) if current.get(pid) != h], dtype=np.int64),
                 [pid for pid, h in current.items() if had.get(pid) != h])


def update_flat(index: faiss.Index, ids: list[str], hashes: list[str], current: dict[str, str], change: Delta,
                vectors: Callable[[list[str]], np.ndarray], metric: str) -> tuple[list[str], list[str]]:
    """Apply ``change`` to a flat index in place: the same vectors as a rebuild over ``current``, at
    other positions (exact search ranks them alike, up to the order of exactly tied scores). Returns
    the new ids and hashes by position; ``vectors`` reads the added passages' vectors."""
    if len(change.gone):
        index.remove_ids(faiss.IDSelectorBatch(change.gone))  # a flat index shifts later positions down, as below
        keep = np.ones(len(ids), dtype=bool)
        keep[change.gone] = False
        ids = [p for p, k in zip(ids, keep) if k]
        hashes = [h for h, k in zip(hashes, keep) if k]
    if change.added:
        index.add(prepare(vectors(change.added), metric))
    return [*ids, *change.added], [*hashes, *(current[p] for p in change.added)]
