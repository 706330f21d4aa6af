"""Input records: corpus passages, queries and relevance judgments (qrels)."""

from __future__ import annotations

import pyarrow as pa

from listcon.schemas.errors import DataError

CORPUS = pa.schema([("id", pa.string(), False), ("title", pa.string(), False), ("text", pa.string(), False)])
QUERIES = pa.schema([("id", pa.string(), False), ("text", pa.string(), False)])
QRELS = pa.schema([("query_id", pa.string(), False), ("passage_id", pa.string(), False), ("relevance", pa.int32(), False)])


def passage_text(title: str, text: str) -> str:
    """The text that is encoded for a passage: title and text joined by one space (BEIR convention)."""
    return f"{title} {text}" if title else text


def check_unique_ids(ids: list[str], source: str, where: list[str] | None = None) -> None:
    """Refuse duplicate ids, naming the first duplicate and both of its records."""
    seen: dict[str, int] = {}
    for i, value in enumerate(ids):
        if value in seen:
            first, second = (where[seen[value]], where[i]) if where else (f"row {seen[value]}", f"row {i}")
            raise DataError(source, f"duplicate id {value!r} (first at {first}); ids must be unique", record=second, column="id")
        seen[value] = i


def check_known_ids(ids: list[str], known: set[str], source: str, column: str, kind: str) -> None:
    """Refuse references to ids that do not exist, listing a few of them."""
    unknown = sorted({i for i in ids if i not in known})
    if unknown:
        raise DataError(
            source,
            f"{len(unknown)} {kind} id(s) are not in the {kind} collection, e.g. {unknown[:5]}",
            column=column,
        )
