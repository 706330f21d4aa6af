"""The lexical index: BM25 (bm25s, sparse-matrix BM25 with batched queries) over the same
passage texts the embedding cache encodes (W/texts.lance), saved under W/lexical/ with a
manifest of what it covers (the texts' ids and content hashes) and how it tokenises.

bm25s was chosen over Lance's native full-text index by measurement on scifact test
(``bench/lexical.py``: same nDCG@10 class, batched queries, far higher throughput).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import bm25s
import numpy as np
import pyarrow as pa
import pyarrow.feather as feather

from listcon.pipeline.store.atomic import swap_dir
from listcon.schemas import check_choices, check_ranges, choice, option

log = logging.getLogger(__name__)

METHODS = ("lucene", "robertson", "atire", "bm25l", "bm25+")
MANIFEST = "manifest.json"
IDS_FILE = "ids.arrow"
INDEX_DIR = "bm25s"


@dataclass(frozen=True)
class LexicalSpec:
    """How passages and queries are tokenised and scored (recorded in the index manifest)."""

    k1: float = option(1.5, "BM25 term-frequency saturation", at_least=0)
    b: float = option(0.75, "BM25 length normalisation", at_least=0, at_most=1)
    method: str = choice("lucene", METHODS, "BM25 variant (bm25s)")
    stemmer: str | None = option("english", "Snowball stemmer language (PyStemmer); unset for none")
    stopwords: str | None = option("en", "stop-word list (bm25s); unset for none")

    def __post_init__(self) -> None:
        check_ranges(self)
        check_choices(self)


def texts_digest(ids: list[str], hashes: list[str]) -> str:
    """What an index covers: SHA-256 over (id, content hash) pairs in id order."""
    digest = hashlib.sha256()
    for key, content in sorted(zip(ids, hashes)):
        digest.update(f"{key}\t{content}\n".encode())
    return digest.hexdigest()


def _stemmer(spec: LexicalSpec):
    if not spec.stemmer:
        return None
    import Stemmer

    return Stemmer.Stemmer(spec.stemmer)


class LexicalIndex:
    """BM25 over a fixed passage list: batched top-k search and exact scores of any passage."""

    def __init__(self, retriever: bm25s.BM25, ids: list[str], spec: LexicalSpec) -> None:
        self.retriever, self.ids, self.spec = retriever, ids, spec
        self.position = {p: i for i, p in enumerate(ids)}
        self._stem = _stemmer(spec)

    @classmethod
    def build(cls, ids: list[str], texts: list[str], spec: LexicalSpec = LexicalSpec()) -> "LexicalIndex":
        retriever = bm25s.BM25(k1=spec.k1, b=spec.b, method=spec.method)
        retriever.index(cls._tokenize(texts, spec, _stemmer(spec)), show_progress=False)
        return cls(retriever, list(ids), spec)

    @staticmethod
    def _tokenize(texts: list[str], spec: LexicalSpec, stemmer) -> list[list[str]]:
        return bm25s.tokenize(texts, stopwords=spec.stopwords or None, stemmer=stemmer, return_ids=False,
                              show_progress=False)

    def tokens(self, queries: list[str]) -> list[list[str]]:
        return self._tokenize(queries, self.spec, self._stem)

    def full_scores(self, tokens: list[str]) -> np.ndarray:
        """BM25 of every passage for one tokenised query (all 0 for a query of stop words only)."""
        if not tokens:
            return np.zeros(len(self.ids), dtype=np.float32)
        return self.retriever.get_scores(tokens)

    @staticmethod
    def top(full: np.ndarray, k: int) -> np.ndarray:
        """Positions of the best ``k`` of one query's full scores: score desc, then position (deterministic
        ties); a passage scoring 0 shares no term with the query and is not a lexical match."""
        k = min(k, len(full))
        top = np.argpartition(-full, k - 1)[:k] if k < len(full) else np.arange(len(full))
        top = top[np.lexsort((top, -full[top]))]
        return top[full[top] > 0]

    def search(self, queries: list[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` (positions, scores) per query; positions index ``self.ids``, -1 past the matches."""
        k = min(k, len(self.ids))
        positions = np.full((len(queries), k), -1, dtype=np.int64)
        scores = np.zeros((len(queries), k), dtype=np.float32)
        for row, query in enumerate(self.tokens(queries)):
            full = self.full_scores(query)
            found = self.top(full, k)
            positions[row, : len(found)] = found
            scores[row, : len(found)] = full[found]
        return positions, scores

    def scores(self, query: str, passage_ids: list[str]) -> np.ndarray:
        """Exact BM25 scores of ``passage_ids`` for ``query`` (0 for a passage the index lacks)."""
        full = self.full_scores(self.tokens([query])[0])
        return np.array([full[self.position[p]] if p in self.position else 0.0 for p in passage_ids], dtype=np.float32)

    # -- on disk -----------------------------------------------------------------------------

    def save(self, directory: str | Path, manifest: dict) -> None:
        """Index + ids + manifest written beside the target, then swapped in."""
        directory = Path(directory)
        tmp = directory.with_name(directory.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        self.retriever.save(str(tmp / INDEX_DIR), show_progress=False)
        feather.write_feather(pa.table({"id": pa.array(self.ids, pa.string())}), str(tmp / IDS_FILE))
        (tmp / MANIFEST).write_text(json.dumps({**manifest, "spec": asdict(self.spec)}, indent=2) + "\n")
        swap_dir(tmp, directory)

    @classmethod
    def load(cls, directory: str | Path) -> "LexicalIndex":
        directory = Path(directory)
        manifest = read_manifest(directory)
        if manifest is None:
            raise FileNotFoundError(f"no lexical index at {directory}; run `listcon index` first")
        retriever = bm25s.BM25.load(str(directory / INDEX_DIR), show_progress=False)
        ids = feather.read_table(str(directory / IDS_FILE))["id"].to_pylist()
        return cls(retriever, ids, LexicalSpec(**manifest["spec"]))


def read_manifest(directory: str | Path) -> dict | None:
    path = Path(directory) / MANIFEST
    return json.loads(path.read_text()) if path.is_file() else None
