"""Embedding tables (passages and queries): id, content hash, vector, encoder metadata.

The table's schema metadata names what produced the vectors, so a cache built by another
encoder (or pooling, length, dimension, precision) is refused instead of silently mixed.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa

from listcon.schemas.errors import DataError

VECTOR_DTYPES = {"float32": pa.float32(), "float16": pa.float16()}
META_KEY = b"listcon.encoder"
# Fields of the encoder metadata that must agree for vectors to be comparable.
ENCODER_FIELDS = ("fingerprint", "backend", "pooling", "normalize", "max_length", "dim", "dtype")
# Tables written before a field existed hold its default.
ENCODER_DEFAULTS = {"backend": "torch", "precision": "fp32"}


def encoder_field(meta: dict, name: str):
    """One field of stored encoder metadata, with the default for tables written before it existed."""
    return meta.get(name, ENCODER_DEFAULTS.get(name))


def embedding_schema(dim: int, dtype: str, encoder: dict) -> pa.Schema:
    """Schema of an embedding table; ``encoder`` is stored as JSON in its metadata."""
    if dtype not in VECTOR_DTYPES:
        raise ValueError(f"vector dtype must be one of {sorted(VECTOR_DTYPES)}, got {dtype!r}")
    meta = {**encoder, "dim": dim, "dtype": dtype}
    return pa.schema(
        [
            ("id", pa.string(), False),
            ("content_hash", pa.string(), False),
            ("vector", pa.list_(VECTOR_DTYPES[dtype], dim), False),
        ],
        metadata={META_KEY: json.dumps(meta, sort_keys=True).encode()},
    )


def encoder_metadata(schema: pa.Schema, source: str) -> dict:
    """The encoder metadata stored in an embedding table's schema."""
    raw = (schema.metadata or {}).get(META_KEY)
    if raw is None:
        raise DataError(source, f"not a listcon embedding table: schema metadata {META_KEY.decode()!r} is missing")
    return json.loads(raw)


def vectors_table(ids: list[str], hashes: list[str], vectors: np.ndarray, schema: pa.Schema) -> pa.Table:
    """Build a table of ``schema`` from parallel ids, hashes and a ``[n, dim]`` array."""
    field = schema.field("vector").type
    flat = pa.array(np.ascontiguousarray(vectors).reshape(-1), type=field.value_type)
    return pa.table(
        {"id": pa.array(ids, pa.string()), "content_hash": pa.array(hashes, pa.string()),
         "vector": pa.FixedSizeListArray.from_arrays(flat, field.list_size)},
        schema=schema,
    )


def check_finite(ids, vectors: np.ndarray, source: str) -> None:
    """Refuse NaN/inf vectors, naming the first few ids that carry them."""
    bad = ~np.isfinite(vectors).all(axis=1)
    if bad.any():
        named = [ids[i] for i in np.flatnonzero(bad)[:5]]
        raise DataError(source, f"{int(bad.sum())} vector(s) contain NaN or inf, e.g. ids {named}", column="vector")
