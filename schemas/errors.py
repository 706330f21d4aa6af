"""Errors for bad input: each names the file, record (line or row) and column involved."""

from __future__ import annotations


class DataError(ValueError):
    """Input that does not meet a schema: says where, what was expected and what was found."""

    def __init__(self, source: str, problem: str, *, record: str | None = None, column: str | None = None) -> None:
        self.source, self.record, self.column, self.problem = source, record, column, problem
        where = source + (f", {record}" if record else "") + (f", column {column!r}" if column else "")
        super().__init__(f"{where}: {problem}")
