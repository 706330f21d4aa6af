"""The embedding cache: a Lance table of (id, content_hash, vector) + encoder metadata.

Writes are upserts keyed on ``id``, one Lance commit each, so a reader never sees a
half-written chunk and a retried chunk never duplicates rows. Reads pin one table version:
``take(ids)`` returns vectors in the order asked with one batched Lance take.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import lance
import numpy as np
import pandas as pd
import pyarrow as pa

from listcon.pipeline.store.lance_tables import in_list, open_table
from listcon.schemas import ENCODER_FIELDS, DataError, encoder_field, encoder_metadata

log = logging.getLogger(__name__)


class CacheMismatchError(ValueError):
    """The cache was built by another encoder / settings than the one asked for."""


class MissingPassagesError(KeyError):
    """Ids asked for that the cache does not hold."""

    def __init__(self, uri: str, missing: list[str]) -> None:
        self.missing = missing
        super().__init__(f"{len(missing)} id(s) are not in the embedding cache {uri}, e.g. {missing[:5]}; run `listcon embed` over their corpus first")

    def __str__(self) -> str:  # KeyError would repr() the message
        return self.args[0]


def content_hash(text: str) -> str:
    """SHA-256 of the exact text that was encoded; a changed text means a re-encode."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def is_local(uri: str | Path) -> bool:
    return "://" not in str(uri) or str(uri).startswith("file://")


class EmbeddingCache:
    """One Lance embedding table at ``uri`` (local path or object-store URI)."""

    def __init__(self, uri: str | Path) -> None:
        self.uri = str(uri)
        self._dataset: lance.LanceDataset | None = None
        self._positions: pd.Index | None = None
        self.refresh()

    # -- state ---------------------------------------------------------------------------

    def refresh(self) -> None:
        """Re-open at the latest committed version (drops the id index); no table is not an error, a broken one is."""
        self._dataset = open_table(self.uri)
        self._positions = None

    @property
    def exists(self) -> bool:
        return self._dataset is not None

    @property
    def dataset(self) -> lance.LanceDataset:
        if self._dataset is None:
            raise FileNotFoundError(f"no embedding table at {self.uri}; run `listcon embed` first")
        return self._dataset

    @property
    def version(self) -> int | None:
        return self._dataset.version if self._dataset is not None else None

    @property
    def metadata(self) -> dict:
        return encoder_metadata(self.dataset.schema, self.uri)

    def __len__(self) -> int:
        return self.dataset.count_rows() if self.exists else 0

    def check_encoder(self, expected: dict) -> None:
        """Refuse a cache whose encoder settings differ from ``expected`` (names each field)."""
        if not self.exists:
            return
        have = self.metadata
        diffs = [f"{k}: cache has {encoder_field(have, k)!r}, asked for {encoder_field(expected, k)!r}"
                 for k in ENCODER_FIELDS if encoder_field(have, k) != encoder_field(expected, k)]
        if diffs:
            raise CacheMismatchError(
                f"the embedding cache at {self.uri} was built with other encoder settings "
                f"(model {have.get('model')!r}): {'; '.join(diffs)}. Rebuild it with --rebuild, or use another --workdir."
            )

    def hashes(self) -> dict[str, str]:
        """id -> content hash of every cached row."""
        if not self.exists:
            return {}
        table = self.dataset.to_table(columns=["id", "content_hash"])
        return dict(zip(table["id"].to_pylist(), table["content_hash"].to_pylist()))

    def digest(self, ids: list[str]) -> str:
        """SHA-256 of the encoder and each cached id's content hash: what the vectors of ``ids`` depend on.

        Provenance keyed on this, not on the table version, stays valid when other rows are
        added (another split's queries), and changes when one of these texts is re-encoded.
        """
        positions = self.positions(ids) if self.exists else np.full(len(ids), -1)
        present = positions >= 0
        digest = hashlib.sha256((self.metadata["fingerprint"] if self.exists else "").encode())
        if present.any():
            hashes = self.dataset.take(positions[present], columns=["content_hash"])["content_hash"].to_pylist()
            for key, content in zip(np.asarray(ids, dtype=object)[present], hashes):
                digest.update(f"{key}\t{content}\n".encode())
        return digest.hexdigest()

    def ids(self) -> list[str]:
        return self.dataset.to_table(columns=["id"])["id"].to_pylist() if self.exists else []

    # -- writes --------------------------------------------------------------------------

    def upsert(self, table: pa.Table) -> None:
        """Insert new ids and replace changed ones, in one commit (creates the table if needed)."""
        if table.num_rows == 0:
            return
        if self._dataset is None:
            self._dataset = lance.write_dataset(table, self.uri, schema=table.schema)
        else:
            if table.schema.field("vector").type != self.dataset.schema.field("vector").type:
                raise CacheMismatchError(f"vector type {table.schema.field('vector').type} does not match the cache at {self.uri}")
            self.dataset.merge_insert("id").when_matched_update_all().when_not_matched_insert_all().execute(table)
            self._dataset = lance.dataset(self.uri)
        self._positions = None

    def delete(self, ids: list[str]) -> None:
        """Remove rows by id in one commit."""
        if not ids or not self.exists:
            return
        self.dataset.delete(in_list("id", ids))
        self.refresh()

    def compact(self) -> None:
        """Merge small fragments left by chunked commits (one more version)."""
        self.dataset.optimize.compact_files()
        self.refresh()

    # -- reads ---------------------------------------------------------------------------

    def positions(self, ids: list[str] | np.ndarray) -> np.ndarray:
        """Row positions of ``ids`` in the pinned version; -1 where absent."""
        if self._positions is None:
            self._positions = pd.Index(self.ids())
            if not self._positions.is_unique:
                raise DataError(self.uri, "the embedding table holds duplicate ids", column="id")
        return self._positions.get_indexer(pd.Index(ids))

    def missing(self, ids: list[str]) -> list[str]:
        """The ids (in the order given) that the cache does not hold."""
        if not self.exists:
            return list(ids)
        pos = self.positions(ids)
        return [i for i, p in zip(ids, pos) if p < 0]

    def take(self, ids: list[str] | np.ndarray, dtype: np.dtype | None = np.float32) -> np.ndarray:
        """Vectors ``[len(ids), dim]`` in the order asked (one Lance take); raises on unknown ids."""
        pos = self.positions(ids)
        if (pos < 0).any():
            raise MissingPassagesError(self.uri, [str(i) for i, p in zip(ids, pos) if p < 0])
        dim = self.dataset.schema.field("vector").type.list_size
        if len(pos) == 0:
            return np.zeros((0, dim), dtype=dtype or np.float32)
        column = self.dataset.take(pos, columns=["vector"])["vector"].combine_chunks()
        vectors = column.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim)
        return vectors.astype(dtype, copy=False) if dtype is not None else vectors

    def read_all(self) -> tuple[list[str], np.ndarray]:
        """Every id and its float32 vector, in table order."""
        table = self.dataset.to_table(columns=["id", "vector"])
        dim = table.schema.field("vector").type.list_size
        vectors = table["vector"].combine_chunks().flatten().to_numpy(zero_copy_only=False).reshape(-1, dim)
        return table["id"].to_pylist(), vectors.astype(np.float32, copy=False)

