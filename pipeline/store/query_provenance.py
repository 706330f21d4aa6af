"""Per-query provenance: which queries of a ranked list a rerun must compute, and which rows stay.

A ranked-list table (candidates, rankings) records, beside what the whole table was computed
from (the settings, the index, the head: its *global* provenance), one key per query: what that
query's rows were computed from (its text, its external list, its candidates and their passages'
contents). A rerun with the same global provenance computes only the queries whose key is new or
differs, deletes the rows of queries that left the split, and leaves every other row as it is; a
different global provenance redoes every query.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

QUERY_KEYS = "query_keys"  # {query_id: what its rows were computed from}
LIST_DIGESTS = "list_digests"  # candidates only: {query_id: digest of its rows and their passages' contents}
PER_QUERY = (QUERY_KEYS, LIST_DIGESTS, "queries")


def global_part(provenance: dict | None) -> dict | None:
    """What the whole table depends on: the provenance without its per-query maps (and count)."""
    return None if provenance is None else {k: v for k, v in provenance.items() if k not in PER_QUERY}


def condensed(provenance: object) -> object:
    """``provenance`` with each per-query map (at any depth) replaced by one digest of it and its size: what a
    log line shows (a table's per-query keys run to hundreds of kilobytes; the digest still tells two apart)."""
    if isinstance(provenance, list):
        return [condensed(v) for v in provenance]
    if not isinstance(provenance, dict):
        return provenance
    out = {}
    for name, value in provenance.items():
        if name in (QUERY_KEYS, LIST_DIGESTS) and isinstance(value, dict):
            digest = hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]
            value = f"{len(value)} queries, sha256 {digest}"
        out[name] = condensed(value)
    return out


def text_key(text: str, extra: Iterable[tuple[str, float]] | None = None) -> str:
    """A query's retrieval key: its text's SHA-256, and its external list (ids and scores) where one is given."""
    digest = hashlib.sha256(text.encode("utf-8"))
    if extra is not None:
        for passage, score in extra:
            digest.update(f"\n{passage}\t{score!r}".encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class Plan:
    """What a rerun does: ``todo`` (in the split's order) computed, ``keep`` left alone, ``drop`` deleted."""

    todo: list[str]
    keep: list[str]
    drop: list[str]
    new: int = 0
    changed: int = 0
    everything: str | None = None  # why every query is to do (a global input changed), else None
    changed_word: str = "changed"  # what a changed key means for this step ("changed text", "changed candidates")

    @property
    def incremental(self) -> bool:
        """True where the table is updated in place (same global inputs), False where it is rewritten."""
        return self.everything is None

    @property
    def nothing(self) -> bool:
        return self.incremental and not self.todo and not self.drop

    def describe(self, step: str, what: str = "queries") -> str:
        """One line for the log and ``listcon status``: ``retrieve: 2 of 37 queries to do (2 new; 35 up to date)``."""
        total = len(self.todo) + len(self.keep)
        if self.everything is not None:
            return f"{step}: all {total} {what} to do ({self.everything})"
        if self.nothing:
            return f"{step}: up to date ({total} {what}); nothing to do"
        reasons = [f"{n} {why}" for n, why in ((self.new, "new"), (self.changed, self.changed_word)) if n]
        dropped = f", {len(self.drop)} left the split and are removed" if self.drop else ""
        return (f"{step}: {len(self.todo)} of {total} {what} to do ({', '.join(reasons) or 'none new or changed'}; "
                f"{len(self.keep)} up to date{dropped})")


def plan(old: dict | None, provenance: dict, keys: dict[str, str], changed_word: str = "changed",
         missing: str | None = None) -> Plan:
    """The plan for a table whose stored provenance is ``old``, given the new ``provenance`` (global
    part) and each query's new key (``keys``, in the split's order); ``missing`` names an output beside
    the table that is gone (a TREC run), which redoes every query."""
    order = list(keys)
    if old is None:
        return Plan(order, [], [], new=len(order), everything="no table yet", changed_word=changed_word)
    old_global, new_global = global_part(old), global_part(provenance)
    if old_global != new_global or QUERY_KEYS not in old:
        moved = sorted(k for k in {*old_global, *new_global} if old_global.get(k) != new_global.get(k))
        why = f"{', '.join(moved)} changed" if moved else "the table records no per-query keys"
        return Plan(order, [], [], everything=why, changed_word=changed_word)
    if missing:
        return Plan(order, [], [], everything=f"{missing} is missing", changed_word=changed_word)
    before = old[QUERY_KEYS]
    todo = [q for q in order if before.get(q) != keys[q]]
    new = sum(1 for q in todo if q not in before)
    keep = [q for q in order if before.get(q) == keys[q]]
    drop = [q for q in before if q not in keys]
    return Plan(todo, keep, drop, new=new, changed=len(todo) - new, changed_word=changed_word)


def list_digests(rows: pa.Table, key_of: dict[str, str], passage_hashes: dict[str, str]) -> dict[str, str]:
    """Per query of ``rows`` (one query's rows contiguous, in rank order): the SHA-256 of its
    retrieval key, every column of its rows, and the content hash of each candidate passage, so a
    query's digest changes when its list, a signal, or one of its passages' text changes."""
    if not rows.num_rows:
        return {}
    qids = rows["query_id"].to_numpy(zero_copy_only=False)
    bounds = np.flatnonzero(np.r_[True, qids[1:] != qids[:-1], True])
    columns = [name for name in rows.column_names if name != "query_id"]
    out: dict[str, str] = {}
    for start, end in zip(bounds[:-1], bounds[1:]):
        part = rows.slice(start, end - start)
        digest = hashlib.sha256(key_of[qids[start]].encode())
        for name in columns:
            digest.update(repr(part[name].to_pylist()).encode())
        digest.update("".join(passage_hashes.get(p, "-") for p in part["passage_id"].to_pylist()).encode())
        out[qids[start]] = digest.hexdigest()
    return out
