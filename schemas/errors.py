"""Errors for bad input: each names the file, record (line or row) and column involved."""

from __future__ import annotations


class DataError(ValueError):
    """Input that does not meet a schema: says where, what was expected and what was found."""

    def __init__(self, source: str, problem: str, *, record: str | None = None, column: str | None = None) -> None:
        self.source, self.record, self.column, self.problem = source, record, column, problem
        where = source + (f", {record}" if record else "") + (f", column {column!r}" if column else "")
        super().__init__(f"{where}: {problem}")

    def __reduce__(self):  # keep the fields when the error crosses a process boundary (Ray)
        return (_rebuild, (self.source, self.problem, self.record, self.column))


def _rebuild(source: str, problem: str, record: str | None, column: str | None) -> DataError:
    return DataError(source, problem, record=record, column=column)
