"""Is the passage cache still the corpus on disk? A stale cache must never rank in silence.

Embed records which corpus file the cache was built from (its size and modification time, and the
reading options). A later step compares the file's stat with that record: equal, nothing to do (no
read); different, it reads the corpus and compares each passage's content hash with the hashes the
cache keeps (W/texts.lance), and refuses if any passage is new, changed or gone.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from listcon.pipeline.data.readers import corpus_path, read_corpus
from listcon.pipeline.store.atomic import write_text
from listcon.pipeline.store.embedding_cache import content_hash
from listcon.pipeline.store.text_table import TextTable
from listcon.pipeline.store.workdir import Workdir

log = logging.getLogger(__name__)

STALE_POLICIES = ("error", "proceed")


class StaleCacheError(ValueError):
    """The corpus on disk is not what the passage cache and indexes were built from."""


@dataclass(frozen=True)
class CorpusChanges:
    """Passages of the corpus on disk (``path``) against the cache: new, changed (another text) and gone."""

    path: Path
    new: int
    changed: int
    removed: int

    def __bool__(self) -> bool:
        return bool(self.new or self.changed or self.removed)

    def __str__(self) -> str:
        return f"{self.new} new, {self.changed} changed, {self.removed} removed"


def _stat(path: Path) -> dict:
    stat = path.stat()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def record_corpus(work: Workdir, data: str | Path, empty: str, limit: int | None) -> None:
    """After embed: the corpus file the cache now holds, and how it was read."""
    path = corpus_path(data).resolve()
    write_text(work.corpus_state, json.dumps({"path": str(path), **_stat(path), "empty": empty, "limit": limit}) + "\n")


def corpus_changes(work: Workdir, data: str | Path | None = None) -> CorpusChanges | None:
    """How the corpus on disk (``data``, default the one embed read) differs from the cache; None without
    a record (a workdir embedded before records were kept, or never embedded)."""
    if not work.corpus_state.is_file():
        return None
    record = json.loads(work.corpus_state.read_text())
    path = corpus_path(data).resolve() if data is not None else Path(record["path"])
    if str(path) == record["path"] and path.exists() and _stat(path) == {k: record[k] for k in ("size", "mtime_ns")}:
        return CorpusChanges(path, 0, 0, 0)
    corpus = read_corpus(path, empty=record["empty"], limit=record["limit"])
    have = TextTable(work.texts).hashes()
    disk = dict(zip(corpus.table["id"].to_pylist(), (content_hash(t) for t in corpus.texts())))
    return CorpusChanges(path, new=sum(1 for p in disk if p not in have),
                         changed=sum(1 for p, h in disk.items() if p in have and have[p] != h),
                         removed=sum(1 for p in have if p not in disk))


def unchanged_corpus_ids(work: Workdir, changes: CorpusChanges | None) -> set[str] | None:
    """The corpus's passage ids, from the cache's text table instead of a read of the corpus, where embed
    read that very file whole, skipping nothing, and it has not changed since (``changes``, from
    ``check_corpus_current``, are none); else None."""
    if changes is None or changes:
        return None
    record = json.loads(work.corpus_state.read_text())
    texts = TextTable(work.texts)
    if record["limit"] is not None or record["empty"] != "error" or texts.version is None:
        return None
    return set(texts.dataset.to_table(columns=["id"])["id"].to_pylist())


def check_corpus_current(work: Workdir, data: str | Path | None, policy: str = "error",
                         step: str = "this step") -> CorpusChanges | None:
    """Refuse (``policy="error"``) or warn (``"proceed"``) when the corpus changed since embed; returns
    the changes found (None without a record)."""
    changes = corpus_changes(work, data)
    if not changes:
        return changes
    where = data if data is not None else changes.path
    fix = f"`listcon embed {where} --workdir {work.root}{' --prune' if changes.removed else ''}` then `listcon index`"
    message = (f"the corpus {where} changed since the passage cache in {work.root} was built ({changes}); "
               f"{step} would rank with the old passages. Bring the cache up to date with {fix}")
    if policy == "proceed":
        log.warning("%s (proceeding: --stale-corpus proceed)", message)
        return changes
    raise StaleCacheError(message + ", or pass --stale-corpus proceed")
