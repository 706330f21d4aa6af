"""Per-shard results of a long job, so a killed run resumes where it stopped.

Each finished shard is one Parquet file, written to a temp name and moved into place, under a
directory keyed by the run's provenance: a rerun with the same inputs reuses finished
shards; a rerun with other inputs starts a fresh directory. The directory is a local path or
an object-store URI (``s3://``, ``gs://``, ``az://``, through pyarrow's filesystems), so
workers on other nodes write where the driver reads.
"""

from __future__ import annotations

import hashlib
import json
from functools import cached_property

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from listcon.pipeline.store.lance_tables import filesystem


class ShardStore:
    """Finished shards of one job, keyed by ``provenance``, under ``root`` (a path or a URI)."""

    def __init__(self, root: str, provenance: dict) -> None:
        key = hashlib.sha256(json.dumps(provenance, sort_keys=True).encode()).hexdigest()[:16]
        self.uri = f"{str(root).rstrip('/')}/{key}"

    def __getstate__(self) -> dict:  # the filesystem is resolved where the store is used (credentials from there)
        return {"uri": self.uri}

    @cached_property
    def _location(self) -> tuple[pafs.FileSystem, str, str]:
        """(filesystem, this directory's path on it, the root's path on it)."""
        fs, path = filesystem(self.uri)
        return fs, path, path.rsplit("/", 1)[0]

    def discard_others(self) -> None:
        """Delete the shards of other inputs under the same root (a job calls this when it starts)."""
        fs, here, root = self._location
        for info in fs.get_file_info(pafs.FileSelector(root, allow_not_found=True)):
            if info.path.rstrip("/") != here and info.type == pafs.FileType.Directory:
                fs.delete_dir(info.path)

    def path(self, shard: int) -> str:
        return f"{self._location[1]}/shard-{shard:06d}.parquet"

    def done(self, shard: int) -> bool:
        return self._location[0].get_file_info(self.path(shard)).type == pafs.FileType.File

    def write(self, shard: int, table: pa.Table) -> None:
        fs = self._location[0]
        fs.create_dir(self._location[1], recursive=True)
        tmp = self.path(shard) + ".tmp"
        pq.write_table(table, tmp, filesystem=fs)
        fs.move(tmp, self.path(shard))

    def reader(self, shards: int, schema: pa.Schema) -> pa.RecordBatchReader:
        """All shards as one stream, in shard order (one shard in memory at a time)."""

        def batches():
            for i in range(shards):
                yield from pq.read_table(self.path(i), filesystem=self._location[0]).cast(schema).to_batches()

        return pa.RecordBatchReader.from_batches(schema, batches())

    def clear(self) -> None:
        fs, _, root = self._location
        if fs.get_file_info(root).type == pafs.FileType.Directory:
            fs.delete_dir(root)
