"""`listcon evaluate`: every run of a split against its qrels, side by side, with a paired
significance test against the first stage, as report.md + metrics.json + PNG plots."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from listcon.jobs.config import Config
from listcon.jobs.lock import locked
from listcon.jobs.runtime import log_config
from listcon.pipeline.data.readers import judged_queries, read_corpus
from listcon.pipeline.evaluation.evaluate import per_query, without_self
from listcon.pipeline.evaluation.html_report import QueryDetails, top_passages
from listcon.pipeline.evaluation.report import run_digest, same_runs, write_report
from listcon.pipeline.store.corpus_state import check_corpus_current
from listcon.pipeline.store.embedding_cache import content_hash
from listcon.pipeline.store.ranked_lists import read_provenance, read_trec
from listcon.pipeline.store.text_table import TextTable
from listcon.schemas import DataError

log = logging.getLogger(__name__)

BASELINE = "first_stage"


@dataclass(frozen=True)
class EvaluateResult:
    """The report's directory and its summary ``{run: {measure: {mean, delta, p_vs_baseline}}}``."""

    report_dir: Path
    summary: dict


@locked("evaluate")
def evaluate(config: Config, split: str | None = None, baseline: str = BASELINE) -> EvaluateResult:
    """Score every TREC run of ``split`` under W/runs and write the report."""
    split, work, options = split or config.split, config.work, config.evaluate
    measures = options.measures
    log_config("evaluate", {"data": config.data, "workdir": config.workdir, "split": split, "evaluate": options,
                            "baseline": baseline})
    runs = work.runs(split)
    if not runs:
        raise FileNotFoundError(f"no runs for split {split!r} under {work.root / 'runs'}; run `listcon retrieve` first")
    check_corpus_current(work, config.need_data(), config.inputs.stale_corpus, "evaluate")
    texts = TextTable(work.texts)
    hashes = texts.hashes() if texts.version is not None else None  # the ids the cache was built from
    if hashes is None:
        hashes = {pid: content_hash(text) for pid, text in zip(*_corpus_texts(config))}
    queries, qrels = judged_queries(config.need_data(), split, set(hashes), config.inputs.unknown_passages)
    own = self_matches(queries, hashes, options.drop_self)
    per_run, skipped, tops, digests = {}, [], {}, {}
    for path in runs:
        name = path.name[len(split) + 1 : -len(".trec")]
        try:
            run = read_trec(path)
        except DataError as err:  # not a listcon run (a stray file): named, left out, never fatal
            log.warning("evaluate: %s is not a TREC run and is left out of the report: %s", path, err)
            skipped.append(path.name)
            continue
        run = without_self(run, own) if own else run
        per_run[name] = per_query(qrels, run, measures)
        tops[name] = {q: dict(top_passages(scores)) for q, scores in run.items()}  # what report.html shows
        digests[name] = run_digest(run)
    candidates = read_provenance(work.candidates(split)) or {}
    full_depth = {config.rerank.run_name: candidates["k"]} if "k" in candidates else {}
    notes = [f"A passage whose id is its query's id is dropped from every run for {len(own)} of {len(queries)} "
             f"queries (BEIR's rule; drop_self = {options.drop_self}"
             + (": the passage's text is the query's)." if options.drop_self == "auto" else ").")
             if own else f"No passage is dropped as its query's own (drop_self = {options.drop_self})."]
    if skipped:
        notes.append(f"Left out, not TREC runs: {', '.join(skipped)}.")
    judged: dict[str, dict[str, int]] = {}
    for q, p, grade in zip(*(qrels[c].to_pylist() for c in ("query_id", "passage_id", "relevance"))):
        judged.setdefault(q, {})[p] = grade
    details = QueryDetails(dict(zip(queries["id"].to_pylist(), queries["text"].to_pylist())), judged, tops,
                           texts.texts_of if texts.version is not None else lambda ids: {})
    summary = write_report(work.reports(split), f"{split}: retrieval and reranking", per_run, list(measures),
                           baseline if baseline in per_run else None, config.rerank.run_name, full_depth,
                           {"data": config.data, "split": split, "drop_self": options.drop_self,
                            "self_dropped_queries": len(own)}, notes, same_runs(digests, baseline), details)
    for run, metrics in summary.items():
        log.info("evaluate %s %-24s %s", split, run, "  ".join(f"{m}={v['mean']:.4f}" for m, v in metrics.items()))
    return EvaluateResult(work.reports(split), summary)


def _corpus_texts(config: Config) -> tuple[list[str], list[str]]:
    corpus = read_corpus(config.need_data(), empty="skip" if config.embed.skip_empty else "error")
    return corpus.table["id"].to_pylist(), corpus.texts()


def self_matches(queries, passage_hashes: dict[str, str], policy: str) -> set[str]:
    """The queries whose own-id passage is the query itself: every query with such a passage (``always``),
    those whose text is that passage's exact text (``auto``), or none (``never``)."""
    if policy == "never":
        return set()
    found = set()
    for qid, text in zip(queries["id"].to_pylist(), queries["text"].to_pylist()):
        if qid in passage_hashes and (policy == "always" or passage_hashes[qid] == content_hash(text)):
            found.add(qid)
    return found
