"""`listcon mine`: training lists (hard negatives) from a split's candidates and qrels, with
each passage's first-stage signals computed the way reranking computes them."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from listcon.jobs.config import Config
from listcon.jobs.lock import locked
from listcon.jobs.runtime import log_config
from listcon.pipeline.data.readers import read_qrels, read_queries
from listcon.pipeline.retrieval import faiss_index
from listcon.pipeline.retrieval.lexical import LexicalIndex
from listcon.pipeline.retrieval.signals import ExactScores, QuerySignals
from listcon.pipeline.store.corpus_state import check_corpus_current
from listcon.pipeline.store.embedding_cache import EmbeddingCache
from listcon.pipeline.store.ranked_lists import read_provenance, read_ranked, rows_by_query, write_ranked
from listcon.pipeline.training.mining import mine as mine_lists
from listcon.schemas import SIGNALS, to_dict

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MineResult:
    """The training lists a split gave."""

    uri: str
    lists: int
    held_out: int
    up_to_date: bool


@locked("mine")
def mine(config: Config, split: str | None = None) -> MineResult:
    """Writes W/training/<split>.lance (unchanged when its inputs are)."""
    split, settings, work = split or config.train.split, config.train.mining, config.work
    log_config("mine", {"data": config.data, "workdir": config.workdir, "split": split, "mining": settings})
    check_corpus_current(work, config.need_data(), config.inputs.stale_corpus, "mine")
    source = read_provenance(work.candidates(split))
    if source is None:
        raise FileNotFoundError(f"no candidates for split {split!r}; run `listcon retrieve --split {split}` first")
    # the signal set is part of what a list holds: a new signal means lists mined again
    provenance = {"split": split, "candidates": source, "settings": to_dict(settings), "signals": list(SIGNALS)}
    uri = work.training(split)
    if read_provenance(uri) == provenance:
        log.info("mine: %s is up to date; nothing to do", uri)
        table = read_ranked(uri)
        return MineResult(uri, table.num_rows, sum(table["holdout"].to_pylist()), True)
    qrels = read_qrels(config.need_data(), split)
    candidates = read_ranked(work.candidates(split))
    passages = EmbeddingCache(work.passages)
    named = sorted(set(qrels["passage_id"].to_pylist()) | set(candidates["passage_id"].to_pylist()))
    absent = [p for p, i in zip(named, passages.positions(named)) if i < 0]
    if absent:  # e.g. judged passages the embed job skipped for empty text: no features to train on
        log.warning("mine: %d judged or candidate passage(s) are not in the passage cache and go in no list, e.g. %s",
                    len(absent), absent[:3])
    queries = read_queries(config.data)
    exact = ExactScores(passages, EmbeddingCache(work.queries), LexicalIndex.load(work.lexical),
                        faiss_index.read_manifest(work.index).spec["metric"],
                        dict(zip(queries["id"].to_pylist(), queries["text"].to_pylist())))
    per_query = rows_by_query(candidates)

    def signals(query: str, passage_ids: list[str]) -> np.ndarray:
        found = QuerySignals(per_query[query], source["k"])
        return found.matrix(passage_ids, exact(query, [p for p in passage_ids if p not in found.row]))

    table = mine_lists(candidates, qrels, settings, frozenset(absent), signals)
    version = write_ranked(table, uri, provenance)
    held = sum(table["holdout"].to_pylist())
    log.info("mine: %d training lists (%d held out for validation) -> %s (version %d)", table.num_rows, held, uri, version)
    return MineResult(uri, table.num_rows, held, False)
