"""Ranked lists on disk: Lance tables with provenance, and TREC run files.

A ranked-list table carries, in its schema metadata, what it was computed from; a step
whose inputs have not changed finds the same provenance and leaves the table (and its
version) alone.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

import lance
import numpy as np
import pyarrow as pa

from listcon.pipeline.store.lance_tables import in_list, open_table
from listcon.schemas import DataError

PROVENANCE_KEY = b"listcon.provenance"


def read_provenance(uri: str) -> dict | None:
    """The provenance stored with the table at ``uri``, or None if there is no table."""
    dataset = open_table(uri)
    if dataset is None:
        return None
    schema = dataset.schema
    raw = (schema.metadata or {}).get(PROVENANCE_KEY)
    return json.loads(raw) if raw else None


# Rows per batch of data files: the writer's buffers are released between batches, so writing
# 50 million rows takes the memory of writing a quarter million (one commit at the end either way).
FRAGMENT_ROWS = 1 << 18


def write_ranked(data: pa.Table | pa.RecordBatchReader, uri: str, provenance: dict) -> int:
    """Write (or overwrite, as one new version) the ranked list at ``uri``; returns the version.

    ``data`` may be a stream: its data files are written as it comes (``FRAGMENT_ROWS`` rows at a
    time) and committed once at the end, so a reader sees the old table or the whole new one. The
    provenance is read at that commit, so a stream may fill it in as it passes (per-query digests).
    """
    schema = data.schema.with_metadata({k: v for k, v in (data.schema.metadata or {}).items() if k != PROVENANCE_KEY})
    current = open_table(uri)
    if current is None:  # an empty table without provenance (no step takes it for done) for the files to go to
        current = lance.write_dataset(schema.empty_table(), uri, schema=schema)
    batches = iter(data.to_batches() if isinstance(data, pa.Table) else data)
    fragments = []
    while (first := next(batches, None)) is not None:
        part = pa.RecordBatchReader.from_batches(schema, _up_to(FRAGMENT_ROWS, first, batches))
        # "overwrite": the new version may change the schema (e.g. lists mined with one more signal)
        fragments += lance.fragment.write_fragments(part, uri, schema=schema, mode="overwrite")
    final = schema.with_metadata({**(schema.metadata or {}),
                                  PROVENANCE_KEY: json.dumps(provenance, sort_keys=True).encode()})
    operation = lance.LanceOperation.Overwrite(final, fragments)
    return lance.LanceDataset.commit(uri, operation, read_version=current.version).version


def update_ranked(data: pa.Table | pa.RecordBatchReader, uri: str, provenance: dict, replace: Iterable[str]) -> int:
    """Replace the rows of the queries ``replace`` at ``uri`` by ``data`` (their new rows, which may be
    none), leaving every other row where it is; returns the version.

    Two commits: the rows (deletions on the existing fragments and the new fragments, one Lance
    ``Update``), then the provenance. Between them the table holds the new rows under the old
    provenance, whose keys for these queries are the old ones, so a rerun after a kill there
    computes them again and ends the same.
    """
    dataset = open_table(uri)
    if dataset is None:
        raise FileNotFoundError(f"no ranked list at {uri}")
    replace = sorted(set(replace))
    schema = dataset.schema
    updated, removed = [], []
    if replace:
        predicate = in_list("query_id", replace)
        for fragment in dataset.get_fragments():
            after = fragment.delete(predicate)
            if after is None:
                removed.append(fragment.fragment_id)
            elif after.deletion_file is not None and after.deletion_file != fragment.metadata.deletion_file:
                updated.append(after)
    batches = iter(data.to_batches() if isinstance(data, pa.Table) else data)
    new = []
    while (first := next(batches, None)) is not None:
        part = pa.RecordBatchReader.from_batches(schema, _up_to(FRAGMENT_ROWS, first, batches))
        new += lance.fragment.write_fragments(part, uri, schema=schema)
    if updated or removed or new:
        operation = lance.LanceOperation.Update(removed_fragment_ids=removed, updated_fragments=updated,
                                                new_fragments=new)
        dataset = lance.LanceDataset.commit(uri, operation, read_version=dataset.version)
    dataset.update_schema_metadata({PROVENANCE_KEY.decode(): json.dumps(provenance, sort_keys=True)})
    return lance.dataset(uri).version


def _up_to(rows: int, first: pa.RecordBatch, rest: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """``first`` and then batches of ``rest`` until ``rows`` rows have passed (the rest stays unread)."""
    yield first
    count = first.num_rows
    while count < rows and (batch := next(rest, None)) is not None:
        yield batch
        count += batch.num_rows


def read_ranked(uri: str) -> pa.Table:
    dataset = open_table(uri)
    if dataset is None:
        raise FileNotFoundError(f"no ranked list at {uri}")
    return dataset.to_table()


def iter_lists(uri: str, query_ids: Iterable[str], batch_rows: int = 1 << 16,
               rows: tuple[str, ...] = ()) -> Iterator[tuple]:
    """``(query_id, passage ids by rank)`` for each of ``query_ids``, streamed from a ranked list.

    Reads the table in batches, so memory holds one query's list, not the table: queries come
    in table order (rows of one query must be contiguous, as retrieval writes them), then the
    queries the table lacks, each with an empty list. Queries not in ``query_ids`` are skipped.
    With ``rows`` (column names), each item also carries the query's rows of those columns in
    rank order, e.g. what ``retrieval.signals.with_signals`` computes a list's signals from.
    """
    wanted = dict.fromkeys(query_ids)
    seen: set[str] = set()
    current: str | None = None
    parts: list[pa.RecordBatch] = []
    row = 0
    dataset = open_table(uri)
    if dataset is None:
        raise FileNotFoundError(f"no ranked list at {uri}")
    columns = list(dict.fromkeys(["query_id", "passage_id", "rank", *rows]))

    def item(query: str, slices: list[pa.RecordBatch]):
        table = pa.Table.from_batches(slices).sort_by("rank")
        ids = table["passage_id"].to_pylist()
        return (query, ids, table.select(list(rows))) if rows else (query, ids)

    for batch in dataset.to_batches(columns=columns, batch_size=batch_rows):
        qids = batch["query_id"].to_numpy(zero_copy_only=False)
        bounds = np.flatnonzero(np.r_[True, qids[1:] != qids[:-1], True])
        for start, end in zip(bounds[:-1], bounds[1:]):
            query = qids[start]
            if query != current:
                if current is not None and current in wanted:
                    yield item(current, parts)
                if query in seen:
                    raise DataError(uri, "rows of one query must be contiguous (sorted by query_id, rank), but this query "
                                    "appears again after other queries", record=f"row {row + start} (query {query!r})",
                                    column="query_id")
                seen.add(query)
                current, parts = query, []
            parts.append(batch.slice(start, end - start))
        row += len(qids)
    if current is not None and current in wanted:
        yield item(current, parts)
    empty = dataset.schema.empty_table().select(list(rows)) if rows else None
    yield from ((query, [], empty) if rows else (query, []) for query in wanted if query not in seen)


def rows_by_query(table: pa.Table) -> dict[str, pa.Table]:
    """Each query's rows of a ranked-list table, in rank order (one sort, then zero-copy slices)."""
    ordered = table.sort_by([("query_id", "ascending"), ("rank", "ascending")])
    qids = ordered["query_id"].to_numpy(zero_copy_only=False)
    if not len(qids):
        return {}
    bounds = np.flatnonzero(np.r_[True, qids[1:] != qids[:-1], True])
    return {qids[s]: ordered.slice(s, e - s) for s, e in zip(bounds[:-1], bounds[1:])}


def candidate_lists(candidates: pa.Table, query_ids: list[str]) -> list[tuple[str, list[str]]]:
    """``[(query_id, passage ids by rank)]`` for ``query_ids`` in order; a query with none gets []."""
    ordered = candidates.sort_by([("query_id", "ascending"), ("rank", "ascending")])
    qids = ordered["query_id"].to_numpy(zero_copy_only=False)
    pids = ordered["passage_id"].to_numpy(zero_copy_only=False)
    bounds = np.flatnonzero(np.r_[True, qids[1:] != qids[:-1], True]) if len(qids) else np.array([0])
    by_query = {qids[s]: pids[s:e].tolist() for s, e in zip(bounds[:-1], bounds[1:])} if len(qids) else {}
    return [(q, by_query.get(q, [])) for q in query_ids]


class TrecWriter:
    """A TREC run written batch by batch to a temp file; ``commit()`` renames it into place (atomic).

    ``qid Q0 docid rank score tag`` lines, in the order written. Leaving without ``commit()``
    (an error, a kill) removes the temp file and leaves any earlier run at ``path`` as it was.
    """

    def __init__(self, path: str | Path, tag: str) -> None:
        self.path, self.tag = Path(path), tag
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.with_name(self.path.name + ".tmp")
        self.handle = open(self.tmp, "w", encoding="utf-8")

    def write(self, data: pa.Table | pa.RecordBatch) -> None:
        for batch in data.to_batches() if isinstance(data, pa.Table) else [data]:
            self.handle.writelines(
                f"{q} Q0 {p} {r} {s!r} {self.tag}\n"
                for q, p, r, s in zip(batch["query_id"].to_pylist(), batch["passage_id"].to_pylist(),
                                      batch["rank"].to_pylist(), batch["score"].to_pylist()))

    def commit(self) -> None:
        self.handle.close()
        os.replace(self.tmp, self.path)

    def __enter__(self) -> TrecWriter:
        return self

    def __exit__(self, *exc) -> None:
        if not self.handle.closed:
            self.handle.close()
            self.tmp.unlink(missing_ok=True)


def added_lines(path: str | Path) -> Path:
    """Where an update writes a run's new lines before ``update_trec`` merges them in."""
    return Path(path).with_name(Path(path).name + ".added")


def update_trec(path: str | Path, tag: str, replace: Iterable[str], added: Path) -> None:
    """Rewrite the run at ``path`` without the lines of the queries ``replace``, then the lines of
    ``added`` (their new rows, see ``added_lines``); every other line is copied as it was. Atomic,
    like ``write_trec``; ``added`` is removed after."""
    replace = set(replace)
    with TrecWriter(path, tag) as out:
        with open(path, encoding="utf-8") as old:
            out.handle.writelines(line for line in old if line.split(" ", 1)[0] not in replace)
        with open(added, encoding="utf-8") as new:
            shutil.copyfileobj(new, out.handle)
        out.commit()
    Path(added).unlink()


def write_trec(data: pa.Table | Iterable[pa.RecordBatch], path: str | Path, tag: str) -> None:
    """``qid Q0 docid rank score tag`` lines, in order, streamed through a temp file (atomic)."""
    with TrecWriter(path, tag) as out:
        for batch in data.to_batches() if isinstance(data, pa.Table) else data:
            out.write(batch)
        out.commit()


def read_trec(path: str | Path) -> dict[str, dict[str, float]]:
    """A TREC run as ``{query_id: {passage_id: score}}``."""
    run: dict[str, dict[str, float]] = {}
    with open(path, encoding="utf-8-sig") as handle:
        for number, line in enumerate(handle, start=1):
            fields = line.split()
            if len(fields) != 6:
                raise DataError(str(path), f"expected 6 fields 'qid Q0 docid rank score tag', got {len(fields)}", record=f"line {number}")
            try:
                run.setdefault(fields[0], {})[fields[2]] = float(fields[4])
            except ValueError:
                raise DataError(str(path), f"score {fields[4]!r} is not a number", record=f"line {number}", column="score") from None
    return run
