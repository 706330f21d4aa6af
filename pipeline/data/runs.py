"""External runs (TREC run files, or Parquet/Lance tables with query_id, passage_id, score) as
candidate sources, checked like every other input: each error names the file, the line or
row and what was expected."""

from __future__ import annotations

import math
from pathlib import Path

import pyarrow.parquet as pq

from listcon.schemas import DataError


def read_run(path: str | Path, query_ids: set[str], passage_ids: set[str], known_queries: set[str] | None = None,
             missing: str = "error") -> dict[str, list[tuple[str, float]]]:
    """``{query_id: [(passage_id, score), ...] best first}`` for the queries in ``query_ids`` (the split's).

    One coverage rule wherever a run becomes candidates. Refused: an empty run, unknown passage or
    query ids (``known_queries``: every query of the collection; default ``query_ids``), a (query,
    passage) pair given twice, scores that are not finite numbers, malformed lines, and a run that
    lacks some of the split's queries unless ``missing="empty"`` (they are then ranked as empty, and
    the caller reports them). Queries of the collection outside the split (another split's) are left out.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(str(path), "no such run file")
    known_queries = query_ids if known_queries is None else known_queries
    rows = _table_rows(path) if path.suffix in (".parquet", ".lance") else _trec_rows(path)
    run: dict[str, dict[str, float]] = {}
    lines = 0
    for where, qid, pid, score in rows:
        lines += 1
        if not math.isfinite(score):
            raise DataError(str(path), f"score {score!r} is not a finite number", record=where, column="score")
        if pid not in passage_ids:
            raise DataError(str(path), f"passage {pid!r} is not in the corpus", record=where, column="passage_id")
        if qid not in known_queries:
            raise DataError(str(path), f"query {qid!r} is not in the collection's queries", record=where,
                            column="query_id")
        if qid not in query_ids:
            continue
        docs = run.setdefault(qid, {})
        if pid in docs:
            raise DataError(str(path), f"query {qid!r} lists passage {pid!r} twice", record=where, column="passage_id")
        docs[pid] = score
    if not lines:
        raise DataError(str(path), "the run is empty; expected lines 'qid Q0 docid rank score tag' (or rows)")
    if not run:
        raise DataError(str(path), f"the run ranks none of the split's {len(query_ids)} queries "
                                   f"(e.g. {sorted(query_ids)[:3]}); is it another split's run?")
    lacking = sorted(query_ids - run.keys())
    if lacking and missing != "empty":
        raise DataError(str(path), f"the run lacks {len(lacking)} of the split's {len(query_ids)} queries "
                                   f"(e.g. {lacking[:3]}); rank them with no candidates with --missing-queries empty")
    return {q: sorted(docs.items(), key=lambda item: -item[1]) for q, docs in run.items()}


def _trec_rows(path: Path):
    with open(path, encoding="utf-8-sig") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            fields = line.split()
            if len(fields) != 6:
                raise DataError(str(path), f"expected 6 fields 'qid Q0 docid rank score tag', got {len(fields)}",
                                record=f"line {number}")
            try:
                score = float(fields[4])
            except ValueError:
                raise DataError(str(path), f"score {fields[4]!r} is not a number", record=f"line {number}",
                                column="score") from None
            yield f"line {number}", fields[0], fields[2], score


def _table_rows(path: Path):
    if path.suffix == ".lance":
        import lance

        table = lance.dataset(str(path)).to_table()
    else:
        table = pq.read_table(path)
    for column in ("query_id", "passage_id", "score"):
        if column not in table.column_names:
            raise DataError(str(path), f"required column is missing; found columns {table.column_names}", column=column)
    for i, (qid, pid, score) in enumerate(zip(table["query_id"].to_pylist(), table["passage_id"].to_pylist(),
                                              table["score"].to_pylist())):
        if not isinstance(score, (int, float)) or isinstance(score, bool):
            raise DataError(str(path), f"score {score!r} is not a number", record=f"row {i}", column="score")
        yield f"row {i}", str(qid), str(pid), float(score)
