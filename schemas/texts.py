"""The passage-text table: the exact text each passage was encoded from, keyed by id and content hash.

Lexical retrieval, stage-2 training and the re-encode baseline read passage texts from here,
so they need no source files and always see what the vectors were computed from.
"""

from __future__ import annotations

import pyarrow as pa

TEXTS = pa.schema(
    [
        ("id", pa.string(), False),
        ("content_hash", pa.string(), False),  # SHA-256 of text, as in the embedding table
        ("text", pa.large_string(), False),  # title + " " + text (BEIR / sentence-transformers convention)
    ]
)
