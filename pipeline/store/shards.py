"""Per-shard results of a long job, so a killed run resumes where it stopped.

Each finished shard is one Parquet file, written to a temp name and renamed, under a
directory keyed by the run's provenance: a rerun with the same inputs reuses finished
shards; a rerun with other inputs starts a fresh directory.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq


class ShardStore:
    """Finished shards of one job, keyed by ``provenance``, under ``root``."""

    def __init__(self, root: str | Path, provenance: dict) -> None:
        key = hashlib.sha256(json.dumps(provenance, sort_keys=True).encode()).hexdigest()[:16]
        self.directory = Path(root) / key

    def discard_others(self) -> None:
        """Delete the shards of other inputs under the same root (a job calls this when it starts)."""
        root = self.directory.parent
        for stale in root.glob("*") if root.is_dir() else []:
            if stale != self.directory:
                shutil.rmtree(stale, ignore_errors=True)

    def path(self, shard: int) -> Path:
        return self.directory / f"shard-{shard:06d}.parquet"

    def done(self, shard: int) -> bool:
        return self.path(shard).is_file()

    def write(self, shard: int, table: pa.Table) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = self.path(shard).with_suffix(".tmp")
        pq.write_table(table, tmp)
        os.replace(tmp, self.path(shard))

    def reader(self, shards: int, schema: pa.Schema) -> pa.RecordBatchReader:
        """All shards as one stream, in shard order (one shard in memory at a time)."""

        def batches():
            for i in range(shards):
                yield from pq.read_table(self.path(i)).cast(schema).to_batches()

        return pa.RecordBatchReader.from_batches(schema, batches())

    def clear(self) -> None:
        shutil.rmtree(self.directory.parent, ignore_errors=True)
