"""Pseudo-queries cut from a corpus's own passages, each with its source passage as the one relevant answer.

Three cheap generators, tried in this order for each sampled passage:

- ``sentence`` (inverse cloze): one sentence of the passage's text (at least ``MIN_WORDS`` words) is the
  query, and the passage is indexed *without* it, so that neither side finds the answer by its own words;
- ``title``: the title is the query, the text alone is indexed;
- ``span``: a third of the words (at least 3), cut out the same way, for one-sentence passages without a title.

Passages that give none (fewer than 6 words) are passed over. Which passages, which sentence and which span
come from ``numpy.random.default_rng(seed)`` alone: the same corpus and seed give the same pseudo-queries.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from listcon.schemas.records import passage_text

SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
MIN_WORDS = 4
SPAN_SHARE = 3  # a span is 1/SPAN_SHARE of the passage's words


@dataclass(frozen=True)
class PseudoQuery:
    """A query cut from passage ``passage_id``; ``rest`` is that passage's text without it (what is indexed)."""

    passage_id: str
    text: str
    rest: str
    kind: str  # sentence | title | span


def cut(title: str, text: str, rng: np.random.Generator) -> tuple[str, str, str] | None:
    """(query, the passage without it, kind) from one passage, or None when it is too short to cut."""
    sentences = [s for s in SENTENCE_END.split(text.strip()) if s]
    if len(sentences) >= 2:
        i = int(rng.integers(len(sentences)))
        if len(sentences[i].split()) >= MIN_WORDS:
            return sentences[i], passage_text(title, " ".join(sentences[:i] + sentences[i + 1:])), "sentence"
    if title.strip() and len(text.split()) >= MIN_WORDS:
        return title.strip(), text.strip(), "title"
    words = passage_text(title, text).split()
    if len(words) < 2 * 3:
        return None
    n = max(3, len(words) // SPAN_SHARE)
    start = int(rng.integers(len(words) - n + 1))
    return " ".join(words[start:start + n]), " ".join(words[:start] + words[start + n:]), "span"


def pseudo_queries(ids: list[str], titles: list[str | None], texts: list[str | None], count: int,
                   seed: int = 0) -> list[PseudoQuery]:
    """Up to ``count`` pseudo-queries from distinct passages, in a seeded random order of the corpus."""
    rng = np.random.default_rng(seed)
    made: list[PseudoQuery] = []
    for i in rng.permutation(len(ids)):
        got = cut(titles[i] or "", texts[i] or "", rng)
        if got is not None:
            made.append(PseudoQuery(str(ids[i]), *got))
            if len(made) == count:
                break
    return made
