"""A head's domain: the corpora on which its learned part was shown to help.

Training validates on held-out queries of each collection it sees. Per collection, the best
epoch's head either beat the anchor (epoch 0: the fixed first-stage fusion the prior starts
from) or it did not. ``domain.json`` beside the checkpoint records, for every validated
corpus (by a digest of its passage ids and content hashes), that verdict and both scores.
Reranking applies the learned part on a corpus the domain says it helps, and on any other
corpus (one nobody labelled, or one where it hurt) ranks by the anchor, unless told otherwise.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from listcon.model.head_config import ListConRankerConfig
from listcon.pipeline.retrieval.lexical import texts_digest
from listcon.pipeline.store.atomic import write_text
from listcon.pipeline.store.text_table import TextTable
from listcon.pipeline.store.workdir import Workdir

log = logging.getLogger(__name__)

DOMAIN_FILE = "domain.json"


def corpus_digest(work: Workdir) -> str:
    """What identifies a corpus: SHA-256 over its (passage id, content hash) pairs (W/texts.lance)."""
    hashes = TextTable(work.texts).hashes()
    if not hashes:
        raise FileNotFoundError(f"no passage texts at {work.texts}; run `listcon embed` first")
    return texts_digest(list(hashes), list(hashes.values()))


def write_domain(out_dir: str | Path, corpora: dict[str, dict]) -> None:
    """``corpora``: ``{digest: {"name", "learned_helps", "anchor", "head"}}`` for each validated collection."""
    write_text(Path(out_dir) / DOMAIN_FILE, json.dumps({"corpora": corpora}, indent=2, sort_keys=True) + "\n")


def read_domain(model_dir: str | Path) -> dict[str, dict] | None:
    """The head's validated corpora, or None for a head trained without a recorded domain."""
    path = Path(model_dir) / DOMAIN_FILE
    if not path.is_file():
        return None
    try:
        return dict(json.loads(path.read_text())["corpora"])
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"{path} is not a listcon domain record ({{\"corpora\": {{digest: ...}}}}): {err}") from None


def learned_part_applies(domain: dict[str, dict] | None, digest: str) -> bool:
    """Whether the head's learned part is validated for the corpus ``digest`` (True without a record)."""
    if domain is None:
        return True
    return bool(domain.get(digest, {}).get("learned_helps", False))


EXTERNAL_FALLBACK = {"rrf": 1.0}  # every first stage alike, scale-free: an external run's scores may mean anything


def from_external_run(candidates: dict | None) -> bool:
    """Whether candidates with provenance ``candidates`` were read from an external run (``--from-run``)."""
    return bool(candidates and (candidates.get("retrieve") or {}).get("from_run"))


def fallback_anchor(head: ListConRankerConfig, candidates: dict | None) -> dict[str, float] | None:
    """The fusion the head (config ``head``) ranks by where its learned part is off, for candidates with provenance ``candidates``.

    Hybrid candidates: the head's own anchor (None). Candidates from an external run: RRF over every
    first stage the list carries (external, dense, lexical), since the anchor's min-max of the candidate
    source's score weighs the external run above the others, and its scale is unknown.
    """
    if not from_external_run(candidates):
        return None
    if "rrf" not in head.signals:
        log.warning("the candidates come from an external run, but this head does not take the rrf signal: its "
                    "fallback is its own anchor %s, which weighs the external score first", head.anchor)
        return None
    return dict(EXTERNAL_FALLBACK)
