"""listcon.schemas: every persisted or exchanged record as an Arrow schema, with validators
that name the bad record and column. Plain pyarrow/numpy only."""

from listcon.schemas.candidates import CANDIDATES, RANKINGS, SIGNAL_COLUMNS, SIGNALS, TRAINING_LISTS
from listcon.schemas.embeddings import (
    ENCODER_FIELDS,
    encoder_field,
    VECTOR_DTYPES,
    check_finite,
    embedding_schema,
    encoder_metadata,
    vectors_table,
)
from listcon.schemas.config import ConfigError, build, check_choices, check_ranges, choice, option, to_dict
from listcon.schemas.errors import DataError
from listcon.schemas.texts import TEXTS
from listcon.schemas.records import CORPUS, QRELS, QUERIES, check_known_ids, check_unique_ids, passage_text

__all__ = [
    "CANDIDATES",
    "CORPUS",
    "ConfigError",
    "DataError",
    "ENCODER_FIELDS",
    "encoder_field",
    "QRELS",
    "QUERIES",
    "RANKINGS",
    "SIGNAL_COLUMNS",
    "SIGNALS",
    "TEXTS",
    "TRAINING_LISTS",
    "VECTOR_DTYPES",
    "build",
    "check_choices",
    "check_ranges",
    "check_finite",
    "check_known_ids",
    "check_unique_ids",
    "choice",
    "embedding_schema",
    "encoder_metadata",
    "option",
    "passage_text",
    "to_dict",
    "vectors_table",
]
