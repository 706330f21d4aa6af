"""`listcon status CONFIG`: per step, up to date or stale and why, without running anything.

Reads the workdir's records (the corpus state, the index manifests, the tables' provenance) and
the inputs on disk, and asks the same functions the jobs decide with (``listcon.jobs.plans``):
no Ray, no model, no write. A scheduler reads ``--json``; a person reads the lines.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from listcon.jobs.config import Config
from listcon.jobs.index_job import dense_stale, lexical_wanted
from listcon.jobs.plans import (
    adapt_provenance,
    candidates_keys,
    candidates_provenance,
    cuda_devices,
    first_stage_runs,
    missing_output,
    rankings_keys,
    rankings_provenance,
    rankings_uri,
)
from listcon.model.head_config import CheckpointError, read_head_config
from listcon.pipeline.adaptation.record import read_adaptation
from listcon.pipeline.heads.rule import rerank_rule
from listcon.pipeline.data.readers import judged_queries
from listcon.pipeline.data.runs import read_run
from listcon.pipeline.retrieval import faiss_index
from listcon.pipeline.retrieval.lexical import read_manifest
from listcon.pipeline.store.corpus_state import corpus_changes
from listcon.pipeline.store.embedding_cache import EmbeddingCache
from listcon.pipeline.store.query_provenance import plan
from listcon.pipeline.store.ranked_lists import read_provenance
from listcon.pipeline.store.text_table import TextTable
from listcon.pipeline.heads.directory import check_finished


@dataclass(frozen=True)
class StepStatus:
    """One step's verdict: ``up_to_date``, and a line that says what a run would do and why."""

    step: str
    up_to_date: bool
    detail: str
    todo: int | None = None  # queries (retrieve, rerank) or passages (embed) a run would compute
    total: int | None = None


@dataclass(frozen=True)
class Status:
    """Every step's verdict for one config and split."""

    workdir: str
    split: str
    steps: list[StepStatus] = field(default_factory=list)

    @property
    def up_to_date(self) -> bool:
        return all(s.up_to_date for s in self.steps)

    def to_dict(self) -> dict:
        return {"workdir": self.workdir, "split": self.split, "up_to_date": self.up_to_date,
                "steps": [asdict(s) for s in self.steps]}


def status(config: Config, split: str | None = None) -> Status:
    """What ``listcon run`` would do now on ``config``'s workdir, step by step (reads only)."""
    split = split or config.split
    work = config.work
    steps = [_embed(config)]
    steps.append(_index(config, blocked=not steps[0].up_to_date))
    retrieve, keys = _retrieve(config, split, blocked=not all(s.up_to_date for s in steps))
    steps.append(retrieve)
    waiting = None if keys is not None else (f"rerank: after retrieve, the queries whose candidates change "
                                             f"(retrieve has {retrieve.todo} to do)")
    if config.adapt.enabled:  # `listcon run` adapts before it reranks
        steps.append(_adapt(config, blocked=not all(s.up_to_date for s in steps[:2])))
        if waiting is None and not steps[-1].up_to_date:
            waiting = "rerank: after adapt, whose choice decides what changes"
    steps.append(_rerank(config, split, keys, waiting))
    return Status(str(work.root), split, steps)


def _embed(config: Config) -> StepStatus:
    cache = EmbeddingCache(config.work.passages)
    if not cache.exists:
        return StepStatus("embed", False, "embed: not run yet (no passage cache)")
    changes = corpus_changes(config.work, config.need_data())
    if changes is None:
        return StepStatus("embed", False, "embed: the workdir records no corpus state (embed before records were kept)")
    if changes:
        return StepStatus("embed", False, f"embed: {changes.new + changes.changed} passages to encode, "
                          f"{changes.removed} to remove ({changes})", changes.new + changes.changed)
    return StepStatus("embed", True, f"embed: up to date ({len(cache)} passages)", 0, len(cache))


def _index(config: Config, blocked: bool) -> StepStatus:
    work = config.work
    if blocked:
        return StepStatus("index", False, "index: out of date after embed (the corpus changed)")
    manifest = faiss_index.read_manifest(work.index)
    reasons = [f"dense: {why}"] if (why := dense_stale(config, EmbeddingCache(work.passages), manifest)) else []
    texts = TextTable(work.texts)
    hashes = texts.hashes() if texts.version is not None else {}
    ids = sorted(hashes)
    if read_manifest(work.lexical) != lexical_wanted(config, ids, [hashes[i] for i in ids]):
        reasons.append("BM25: no index over these passage texts and settings")
    if reasons:
        return StepStatus("index", False, "index: out of date (" + "; ".join(reasons) + ")")
    return StepStatus("index", True, f"index: up to date ({manifest.count} vectors)")


def _adapt(config: Config, blocked: bool) -> StepStatus:
    work = config.work
    if blocked:
        return StepStatus("adapt", False, "adapt: after embed and index")
    record = read_adaptation(work)
    provenance = adapt_provenance(config, faiss_index.read_manifest(work.index), read_manifest(work.lexical),
                                  EmbeddingCache(work.passages).metadata.get("fingerprint"))
    if record is None:
        return StepStatus("adapt", False, "adapt: not run yet (no adaptation.json)")
    if record.get("provenance") != provenance:
        changed = sorted(k for k in provenance if (record.get("provenance") or {}).get(k) != provenance[k])
        return StepStatus("adapt", False, f"adapt: to choose again ({', '.join(changed)} changed)")
    if not config.adapt.init:
        return StepStatus("adapt", True, f"adapt: up to date ({record['choice']['chosen']})")
    from listcon.jobs.adapt_head_job import fine_tune_pending  # imports torch: only where a head is fine-tuned

    if why := fine_tune_pending(config):
        return StepStatus("adapt", False, f"adapt: to fine-tune {config.adapt.init} ({why})")
    return StepStatus("adapt", True, f"adapt: up to date ({record['choice']['chosen']}; head fine-tuned)")


def _retrieve(config: Config, split: str, blocked: bool) -> tuple[StepStatus, dict[str, str] | None]:
    work = config.work
    queries, _ = judged_queries(config.need_data(), split, None, config.inputs.unknown_passages)
    query_ids, texts = queries["id"].to_pylist(), queries["text"].to_pylist()
    if blocked:
        return StepStatus("retrieve", False, f"retrieve: all {len(query_ids)} queries to do (after embed and index)",
                          len(query_ids), len(query_ids)), None
    cache = EmbeddingCache(work.passages)
    external = None
    if config.retrieve.from_run:
        known = set(query_ids)
        external = read_run(config.retrieve.from_run, known, set(cache.ids()), known, config.retrieve.missing_queries)
    manifest = faiss_index.read_manifest(work.index)
    provenance = candidates_provenance(config, split, config.retrieve.k, manifest, cache.version,
                                       cache.metadata["fingerprint"], read_manifest(work.lexical), external is not None)
    keys = candidates_keys(query_ids, texts, external, config.retrieve.pool)
    todo = plan(read_provenance(work.candidates(split)), provenance, keys, "changed text",
                missing_output(first_stage_runs(work, split).values()))
    return _verdict("retrieve", todo), keys if todo.nothing else None


def _rerank(config: Config, split: str, keys: dict | None, waiting: str | None) -> StepStatus:
    work, model_dir = config.work, config.head_dir
    if waiting is not None:  # an earlier step decides what rerank will have to do
        return StepStatus("rerank", False, waiting)
    try:
        check_finished(model_dir)
        head = read_head_config(model_dir)
    except (CheckpointError, ValueError) as err:
        return StepStatus("rerank", False, f"rerank: no head to rerank with: {err}")
    settings, options = config.rerank.settings, config.rerank
    source = read_provenance(work.candidates(split))
    old = read_provenance(rankings_uri(work, split, options.run_name))
    rule = rerank_rule(head, model_dir, work, settings.outside_domain, source)
    if settings.device:
        device = settings.device
    elif config.ray.address:  # what the cluster has is not asked here (no Ray): as the last run found it
        device = (old or {}).get("arithmetic", {}).get("device", "cpu")
    else:
        device = "cuda" if cuda_devices() >= options.workers else "cpu"
    provenance = rankings_provenance(config, split, options.run_name, settings, model_dir, rule, device, source)
    todo = plan(old, provenance, rankings_keys(list(keys), source), "changed candidates",
                missing_output([work.run(split, options.run_name)]))
    return _verdict("rerank", todo)


def _verdict(step: str, todo) -> StepStatus:
    return StepStatus(step, todo.nothing, todo.describe(step), len(todo.todo), len(todo.todo) + len(todo.keep))
