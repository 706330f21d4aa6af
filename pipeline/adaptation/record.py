"""The fusion `listcon adapt` chose for a workdir's corpus, and whether it still applies.

``W/adaptation.json`` holds the choice with its evidence and the digest of the corpus it was made
on (``corpus_digest``: passage ids and content hashes). Reranking uses it where a head's learned
part is off (outside its domain) and only while the corpus is the one it was made on.
"""

from __future__ import annotations

import json
import logging

from listcon.pipeline.store.atomic import write_text
from listcon.pipeline.store.workdir import Workdir
from listcon.pipeline.heads.domain import corpus_digest

log = logging.getLogger(__name__)

ADAPTATION_FILE = "adaptation.json"


def write_adaptation(work: Workdir, record: dict) -> None:
    """Write the record (it names its ``corpus`` digest and ``provenance``) atomically."""
    write_text(work.root / ADAPTATION_FILE, json.dumps(record, indent=2, sort_keys=True) + "\n")


def read_adaptation(work: Workdir) -> dict | None:
    """The workdir's adaptation record, or None without one; a file that is not one is refused in one line."""
    path = work.root / ADAPTATION_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
        record["corpus"], record["choice"]["chosen"]  # noqa: B018 (the fields a record must have)
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"{path} is not a listcon adaptation record (run `listcon adapt` again): {err!r}") from None
    return record


def adapted_fusion(work: Workdir, digest: str | None = None) -> dict | None:
    """``{"dense_weight", "rule", "corpus"}`` of the fusion adapted to this corpus (``digest``: its
    ``corpus_digest``, where the caller has it), or None: no record, the anchor was chosen, or the record was
    made on another state of the corpus (said once, in the log)."""
    record = read_adaptation(work)
    if record is None:
        return None
    if record["corpus"] != (digest or corpus_digest(work)):
        log.warning("%s was made on another state of the corpus; it is not used (run `listcon adapt` again)",
                    work.root / ADAPTATION_FILE)
        return None
    choice = record["choice"]
    if choice["dense_weight"] is None:
        return None
    return {"dense_weight": choice["dense_weight"], "rule": choice["rule"], "corpus": record["corpus"]}
