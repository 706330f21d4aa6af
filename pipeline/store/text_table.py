"""W/texts.lance: passage texts by id (see ``listcon.schemas.texts``), updated like the embedding cache.

Writes are one ``merge_insert`` on ``id`` of the rows whose content hash changed, so a rerun
with nothing new commits nothing and a retried write never duplicates rows.
"""

from __future__ import annotations

import lance
import pyarrow as pa

from listcon.pipeline.store.lance_tables import in_list, open_table
from listcon.schemas import TEXTS


class TextTable:
    """Passage texts at ``uri`` (local path or object-store URI)."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.dataset = open_table(uri)

    @property
    def version(self) -> int | None:
        return self.dataset.version if self.dataset is not None else None

    def hashes(self) -> dict[str, str]:
        if self.dataset is None:
            return {}
        table = self.dataset.to_table(columns=["id", "content_hash"])
        return dict(zip(table["id"].to_pylist(), table["content_hash"].to_pylist()))

    def update(self, ids: list[str], hashes: list[str], texts: list[str], prune: bool = False) -> int:
        """Upsert the rows whose hash differs (and delete ids not given, with ``prune``); returns rows written."""
        have = self.hashes()
        changed = [i for i, (pid, h) in enumerate(zip(ids, hashes)) if have.get(pid) != h]
        if changed:
            rows = pa.table({"id": [ids[i] for i in changed], "content_hash": [hashes[i] for i in changed],
                             "text": [texts[i] for i in changed]}, schema=TEXTS)
            if self.dataset is None:
                self.dataset = lance.write_dataset(rows, self.uri, schema=TEXTS)
            else:
                self.dataset.merge_insert("id").when_matched_update_all().when_not_matched_insert_all().execute(rows)
                self.dataset = lance.dataset(self.uri)
        stale = sorted(set(have) - set(ids)) if prune else []
        if stale:
            self.dataset.delete(in_list("id", stale))
            self.dataset = lance.dataset(self.uri)
        return len(changed)

    def texts_of(self, ids: set[str]) -> dict[str, str]:
        """The texts of ``ids`` (those the table holds): one id scan, then one take of their rows."""
        if self.dataset is None or not ids:
            return {}
        found = [i for i, pid in enumerate(self.dataset.to_table(columns=["id"])["id"].to_pylist()) if pid in ids]
        rows = self.dataset.take(found, columns=["id", "text"])
        return dict(zip(rows["id"].to_pylist(), rows["text"].to_pylist()))

    def read(self) -> tuple[list[str], list[str], list[str]]:
        """Every (id, content_hash, text), sorted by id (a stable order for indexes built from it)."""
        if self.dataset is None:
            raise FileNotFoundError(f"no passage texts at {self.uri}; run `listcon embed` first")
        table = self.dataset.to_table().sort_by("id")
        return table["id"].to_pylist(), table["content_hash"].to_pylist(), table["text"].to_pylist()
