"""Readers for corpora, queries and qrels: BEIR directories, JSONL, Parquet and Lance.

Everything comes back as Arrow tables of the schemas in ``listcon.schemas.records``. Errors
name the file and the line (JSONL, TSV) or row (Parquet, Lance) and column at fault.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from listcon.schemas import CORPUS, QRELS, QUERIES, DataError, check_known_ids, check_unique_ids, passage_text

log = logging.getLogger(__name__)

EMPTY_POLICIES = ("error", "skip")
ID_COLUMNS = ("_id", "id")


@dataclass(frozen=True)
class Corpus:
    """Passages ready to encode: ``table`` (id, title, text) and how many empty ones were skipped."""

    table: pa.Table
    skipped_empty: list[str]  # ids of passages left out for empty text (qrels may still judge them)
    source: str

    def ids(self) -> set[str]:
        """Every passage id of the collection, the skipped ones included (what qrels may name)."""
        return set(self.table["id"].to_pylist()) | set(self.skipped_empty)

    def texts(self) -> list[str]:
        """The encoded text of each passage (title + space + text)."""
        return [passage_text(t, x) for t, x in zip(self.table["title"].to_pylist(), self.table["text"].to_pylist())]


def corpus_path(data: str | Path) -> Path:
    """The corpus file of a BEIR directory, or ``data`` itself when it is a file / Lance table."""
    data = Path(data)
    if data.is_dir() and data.suffix != ".lance":
        found = data / "corpus.jsonl"
        if not found.is_file():
            raise DataError(str(data), "not a BEIR directory: corpus.jsonl is missing")
        return found
    if not data.exists():
        raise DataError(str(data), "no such corpus file or directory")
    return data


def read_corpus(data: str | Path, empty: str = "error", limit: int | None = None) -> Corpus:
    """Read a corpus (BEIR dir, .jsonl, .parquet or .lance), checking ids and texts.

    ``empty='skip'`` drops passages whose title and text are blank (and counts them);
    ``'error'`` refuses them. ``limit`` keeps the first N passages.
    """
    if empty not in EMPTY_POLICIES:
        raise ValueError(f"empty must be one of {EMPTY_POLICIES}, got {empty!r}")
    path = corpus_path(data)
    rows, where = _read_records(path, ("title", "text"), required=("text",), limit=limit)
    keep, skipped = [], []
    for row, loc in zip(rows, where):
        if not passage_text(row["title"], row["text"]).strip():
            if empty == "error":
                raise DataError(str(path), f"passage {row['id']!r} has empty text (use --skip-empty to skip such passages)", record=loc, column="text")
            skipped.append(row["id"])
            continue
        keep.append((row, loc))
    if not rows:
        raise DataError(str(path), "the corpus has no passages (an empty or truncated file?)")
    check_unique_ids([r["id"] for r, _ in keep], str(path), [loc for _, loc in keep])
    if skipped:
        log.warning("%s: skipped %d passage(s) with empty text, e.g. %s", path, len(skipped), skipped[:3])
    table = pa.Table.from_pylist([r for r, _ in keep], schema=CORPUS)
    return Corpus(table, skipped, str(path))


def read_queries(data: str | Path) -> pa.Table:
    """Read queries (BEIR dir's queries.jsonl, or a .jsonl/.parquet file) as (id, text)."""
    path = Path(data)
    if path.is_dir():
        path = path / "queries.jsonl"
    if not path.is_file():
        raise DataError(str(path), "queries file is missing")
    rows, where = _read_records(path, ("text",), required=("text",))
    for row, loc in zip(rows, where):
        if not row["text"].strip():
            raise DataError(str(path), f"query {row['id']!r} has empty text", record=loc, column="text")
    check_unique_ids([r["id"] for r in rows], str(path), where)
    return pa.Table.from_pylist(rows, schema=QUERIES)


def read_qrels(data: str | Path, split: str) -> pa.Table:
    """Read ``qrels/<split>.tsv`` as (query_id, passage_id, relevance).

    Two layouts, told apart by the first judgment line: BEIR's tab-separated ``query-id corpus-id score``
    (an optional header), or TREC's whitespace-separated ``qid iteration docid relevance``. A file with
    no judgment is refused: every measure would be 0.
    """
    path = Path(data) / "qrels" / f"{split}.tsv"
    if not path.is_file():
        available = sorted(p.stem for p in (Path(data) / "qrels").glob("*.tsv"))
        raise DataError(str(path), f"no qrels for split {split!r}; available splits: {available}")
    rows, seen, layout = [], {}, None
    with open(path, encoding="utf-8-sig") as handle:
        for number, line in enumerate(handle, start=1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            where = f"line {number}"
            if layout is None:
                if line.split("\t")[0] in ("query-id", "query_id", "qid"):
                    continue
                layout = "trec" if len(line.split()) == 4 and len(line.split("\t")) != 3 else "beir"
            if layout == "trec":
                fields = line.split()
                if len(fields) != 4:
                    raise DataError(str(path), f"expected TREC qrels 'qid iteration docid relevance' (4 fields, as the "
                                               f"first line), got {len(fields)}", record=where)
                fields = [fields[0], fields[2], fields[3]]
            else:
                fields = line.split("\t")
                if len(fields) != 3:
                    raise DataError(str(path), f"expected 3 tab-separated fields (query-id, corpus-id, score), got "
                                               f"{len(fields)}", record=where)
            try:
                grade = float(fields[2])
            except ValueError:
                raise DataError(str(path), f"score {fields[2]!r} is not a number", record=where, column="score") from None
            if not math.isfinite(grade) or grade != int(grade):
                raise DataError(str(path), f"score {fields[2]!r} is not an integer relevance grade (0, 1, 2, ...)",
                                record=where, column="score")
            for name, value in (("query-id", fields[0]), ("corpus-id", fields[1])):
                if not value or any(c.isspace() for c in value):
                    raise DataError(str(path), f"{name} {value!r} is empty or contains whitespace", record=where, column=name)
            pair = (fields[0], fields[1])
            if pair in seen and seen[pair][0] != int(grade):
                raise DataError(str(path), f"({pair[0]}, {pair[1]}) is judged {seen[pair][0]} on {seen[pair][1]} and "
                                           f"{int(grade)} here; a pair takes one grade", record=where)
            if pair not in seen:
                seen[pair] = (int(grade), where)
                rows.append({"query_id": fields[0], "passage_id": fields[1], "relevance": int(grade)})
    if not rows:
        raise DataError(str(path), "no judgments (only a header or blank lines); expected 'query-id corpus-id score' lines")
    return pa.Table.from_pylist(rows, schema=QRELS)


UNKNOWN_PASSAGE_POLICIES = ("error", "count")


def judged_queries(data: str | Path, split: str, corpus_ids: set[str] | None = None,
                   unknown_passages: str = "error") -> tuple[pa.Table, pa.Table]:
    """The split's judged queries and its qrels, checking every referenced id exists.

    One policy for every step that reads qrels: a query id not in ``queries.jsonl`` is refused; a
    passage id not in ``corpus_ids`` is refused, or with ``unknown_passages="count"`` (reranking a
    sample of a bigger corpus) kept as relevant-but-unretrievable and counted in the log.
    Queries without judgments are left out (evaluation is over the qrels' queries).
    """
    queries = read_queries(data)
    qrels = read_qrels(data, split)
    source = str(Path(data) / "qrels" / f"{split}.tsv")
    check_known_ids(qrels["query_id"].to_pylist(), set(queries["id"].to_pylist()), source, "query-id", "query")
    if corpus_ids is not None:
        unknown = sorted({p for p in qrels["passage_id"].to_pylist() if p not in corpus_ids})
        if unknown and unknown_passages != "count":
            raise DataError(source, f"{len(unknown)} corpus id(s) are not in the corpus, e.g. {unknown[:5]}; to score "
                                    "anyway (a sample of a bigger corpus), pass --unknown-passages count",
                            column="corpus-id")
        if unknown:
            log.warning("%s: %d judged passage(s) are not in the corpus (e.g. %s); counted as relevant but never "
                        "retrieved (--unknown-passages count)", source, len(unknown), unknown[:3])
    judged = set(qrels["query_id"].to_pylist())
    keep = [i for i, q in enumerate(queries["id"].to_pylist()) if q in judged]
    return queries.take(keep), qrels


# -- record readers --------------------------------------------------------------------------


def _read_records(path: Path, fields: tuple[str, ...], required: tuple[str, ...], limit: int | None = None) -> tuple[list[dict], list[str]]:
    """Rows as dicts with ``id`` + ``fields`` (missing optional fields become ''), and their locations."""
    if path.suffix in (".jsonl", ".json"):
        return _read_jsonl(path, fields, required, limit)
    if path.suffix == ".parquet":
        table = pq.read_table(path)
    elif path.suffix == ".lance":
        import lance

        table = lance.dataset(str(path)).to_table()
    else:
        raise DataError(str(path), "unsupported corpus format; expected a BEIR directory, .jsonl, .parquet or .lance")
    if limit is not None:
        table = table.slice(0, limit)
    return _table_records(table, str(path), fields, required)


def _read_jsonl(path: Path, fields: tuple[str, ...], required: tuple[str, ...], limit: int | None) -> tuple[list[dict], list[str]]:
    rows, where = [], []
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if limit is not None and len(rows) >= limit:
                break
            loc = f"line {number}"
            try:
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8")  # a BOM opening the file is fine
            except UnicodeDecodeError as err:
                raise DataError(str(path), f"invalid UTF-8 at byte {err.start} of the line", record=loc) from None
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(str(path), f"malformed JSON: {err.msg} (column {err.colno})", record=loc) from None
            if not isinstance(record, dict):
                raise DataError(str(path), f"expected a JSON object, got {type(record).__name__}", record=loc)
            rows.append(_record(record, str(path), loc, fields, required))
            where.append(loc)
    return rows, where


def _table_records(table: pa.Table, source: str, fields: tuple[str, ...], required: tuple[str, ...]) -> tuple[list[dict], list[str]]:
    id_column = next((c for c in ID_COLUMNS if c in table.column_names), None)
    if id_column is None:
        raise DataError(source, f"no id column: expected one of {list(ID_COLUMNS)}, found columns {table.column_names}", column="_id")
    for name in required:
        if name not in table.column_names:
            raise DataError(source, f"required column is missing; found columns {table.column_names}", column=name)
    present = [f for f in fields if f in table.column_names]
    records = table.select([id_column, *present]).to_pylist()
    rows = [_record(r, source, f"row {i}", fields, required, id_column) for i, r in enumerate(records)]
    return rows, [f"row {i}" for i in range(len(rows))]


def _record(record: dict, source: str, loc: str, fields: tuple[str, ...], required: tuple[str, ...], id_column: str | None = None) -> dict:
    key = id_column or next((c for c in ID_COLUMNS if c in record), None)
    value = record.get(key) if key else None
    if value is None or (isinstance(value, str) and not value.strip()):
        raise DataError(source, "record has no id", record=loc, column=id_column or "_id")
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        raise DataError(source, f"id must be a string or integer, got {type(value).__name__}", record=loc, column=key)
    row = {"id": str(value)}
    if any(c.isspace() for c in row["id"]):
        raise DataError(source, f"id {row['id']!r} contains whitespace, which no TREC run can carry "
                                "(its fields are whitespace-separated)", record=loc, column=key)
    for name in fields:
        got = record.get(name)
        if got is None:
            if name in required:
                raise DataError(source, f"record {row['id']!r} has no {name!r}", record=loc, column=name)
            got = ""
        if not isinstance(got, str):
            raise DataError(source, f"expected a string, got {type(got).__name__}", record=loc, column=name)
        row[name] = got
    return row
