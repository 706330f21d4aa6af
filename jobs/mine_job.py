"""`listcon mine`: training lists (hard negatives) from a split's candidates and qrels."""

from __future__ import annotations

import logging
from dataclasses import asdict

from listcon.jobs.runtime import log_config
from listcon.pipeline.embedding_cache import EmbeddingCache
from listcon.pipeline.mining import MiningSettings, mine
from listcon.pipeline.ranked_lists import read_provenance, read_ranked, write_ranked
from listcon.pipeline.readers import read_qrels
from listcon.pipeline.workdir import Workdir

log = logging.getLogger(__name__)


def run_mine(data: str, workdir: Workdir, split: str, settings: MiningSettings = MiningSettings()) -> str:
    """Writes W/training/<split>.lance (unchanged when its inputs are); returns its URI."""
    log_config("mine", {"data": data, "workdir": str(workdir.root), "split": split, "settings": asdict(settings)})
    source = read_provenance(workdir.candidates(split))
    if source is None:
        raise FileNotFoundError(f"no candidates for split {split!r}; run `listcon retrieve --split {split}` first")
    provenance = {"split": split, "candidates": source, "settings": asdict(settings)}
    uri = workdir.training(split)
    if read_provenance(uri) == provenance:
        log.info("mine: %s is up to date; nothing to do", uri)
        return uri
    qrels = read_qrels(data, split)
    candidates = read_ranked(workdir.candidates(split))
    named = sorted(set(qrels["passage_id"].to_pylist()) | set(candidates["passage_id"].to_pylist()))
    absent = [p for p, i in zip(named, EmbeddingCache(workdir.passages).positions(named)) if i < 0]
    if absent:  # e.g. judged passages the embed job skipped for empty text: no features to train on
        log.warning("mine: %d judged or candidate passage(s) are not in the passage cache and go in no list, e.g. %s",
                    len(absent), absent[:3])
    table = mine(candidates, qrels, settings, frozenset(absent))
    version = write_ranked(table, uri, provenance)
    held = sum(table["holdout"].to_pylist())
    log.info("mine: %d training lists (%d held out for validation) -> %s (version %d)", table.num_rows, held, uri, version)
    return uri
