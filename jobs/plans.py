"""What retrieve and rerank would compute, decided without computing it: the provenance their
tables would carry and each query's key. The jobs decide with these functions, and ``listcon
status`` answers with the same ones, without starting Ray or loading a model."""

from __future__ import annotations

import glob
import os
from dataclasses import asdict
from pathlib import Path

from listcon.jobs.config import Config
from listcon.model.choices import HEAD_PRECISIONS, INT8_SCORING, resolve_precision
from listcon.model.head_config import checkpoint_fingerprint
from listcon.pipeline.retrieval.faiss_index import IndexSpec, Manifest
from listcon.pipeline.store.query_provenance import LIST_DIGESTS, global_part, text_key
from listcon.pipeline.store.workdir import COMPARISON_RUNS, FIRST_STAGE_RUN
from listcon.pipeline.heads.rule import RerankRule
from listcon.schemas import to_dict

MAIN_RUN = "listcon"  # [rerank] run_name's default: its rankings are W/rankings/<split>

SEARCH_FIELDS = ("nprobe", "ef_search", "use_gpu")  # search-time options may change; how the index was built may not
RERANK_EXCLUDES = ("device", "memory_budget_mb")  # how a rerank ran, not what it computed
# What of the candidates' global provenance a ranking depends on beyond each query's list digest (which
# covers the rows, hence the corpus, index and BM25 they were retrieved from): k scales the rank signals,
# the encoder gives the features, the options say what the scores mean.
CANDIDATES_FOR_RERANK = ("k", "encoder", "retrieve")


def first_stage_runs(work, split: str) -> dict[str, Path]:
    """The TREC runs retrieve writes beside a split's candidates, by name."""
    return {name: work.run(split, name) for name in (FIRST_STAGE_RUN, *COMPARISON_RUNS)}


def rankings_uri(work, split: str, run_name: str) -> str:
    """Where rerank writes a split's rankings under ``run_name`` (the main run: W/rankings/<split>)."""
    return work.rankings(split) if run_name == MAIN_RUN else work.rankings(f"{split}.{run_name}")


def missing_output(paths) -> str | None:
    """The first of ``paths`` that does not exist (as ``plan``'s ``missing``), else None."""
    return next((str(p) for p in paths if not Path(p).is_file()), None)


def search_spec(config: Config, manifest: Manifest) -> IndexSpec:
    """The index as built, searched with this config's search-time options."""
    return IndexSpec(**{**manifest.spec, **{f: getattr(config.index, f) for f in SEARCH_FIELDS}})


def candidates_provenance(config: Config, split: str, k: int, manifest: Manifest, passages_version: int,
                          encoder_fingerprint: str, lexical_manifest: dict, from_run: bool) -> dict:
    """What a split's whole candidates table depends on (a change redoes every query). Candidates from an external
    run's pools are recorded as pools, not as an external run (no external signal, the hybrid fallback)."""
    spec = search_spec(config, manifest)
    pool = from_run and config.retrieve.pool
    retrieved = {f: v for f, v in to_dict(config.retrieve).items() if f != "run_order"}  # older tables lack it
    k = min(k, manifest.count)
    return {"split": split, "k": k, "passages_version": passages_version, "encoder": encoder_fingerprint,
            "index": {f: v for f, v in asdict(spec).items() if f != "use_gpu"}, "lexical": lexical_manifest,
            "retrieve": {**retrieved, "k": k, "from_run": from_run and not pool, **({"run_order": "pool"} if pool else {})}}


def candidates_keys(query_ids: list[str], texts: list[str], external: dict | None, pool: bool = False) -> dict[str, str]:
    """Each query's retrieval key: its text, and its list in the external run where there is one (a pool's passages
    alone, in id order: its scores and order change no candidate)."""
    if external is None:
        return {q: text_key(t) for q, t in zip(query_ids, texts)}
    if pool:
        external = {q: sorted((p, 0.0) for p, _ in given) for q, given in external.items()}
    return {q: text_key(t, external.get(q, [])) for q, t in zip(query_ids, texts)}


def cuda_devices() -> int:
    """CUDA devices this process would see; a machine without an NVIDIA device node answers without torch."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) == "" or not glob.glob("/dev/nvidia[0-9]*"):
        return 0
    import torch

    return torch.cuda.device_count()


def rankings_provenance(config: Config, split: str, run_name: str, settings, model_dir: str | Path, rule: RerankRule,
                        device: str, source: dict) -> dict:
    """What a split's whole rankings table depends on: the head, how it ranks here (``rule``), the
    arithmetic, the settings and the candidates' global provenance."""
    precision = resolve_precision(settings.precision, device, HEAD_PRECISIONS)
    arithmetic = {"device": device.split(":")[0], "precision": precision,
                  **({"int8_scoring": INT8_SCORING} if precision == "int8" else {})}
    return {"split": split, "run": run_name, "checkpoint": checkpoint_fingerprint(model_dir), **rule.to_dict(),
            "arithmetic": arithmetic,
            "candidates": {k: v for k, v in global_part(source).items() if k in CANDIDATES_FOR_RERANK},
            "settings": {k: v for k, v in to_dict(settings).items() if k not in RERANK_EXCLUDES},
            "schedule": to_dict(config.schedule)}


FUSION_CHOICE = ("pseudo_queries", "seed", "rule")  # the [adapt] options the fusion choice depends on


def adapt_provenance(config: Config, manifest: Manifest, lexical_manifest: dict, encoder_fingerprint: str | None) -> dict:
    """What `listcon adapt`'s choice depends on: the corpus, the cache's encoder, both indexes' settings, the
    first stage's depth and fusion, ``[adapt]``'s options for the pseudo-queries and the rule (not whether ``run``
    adapts, nor the head fine-tuning's) and the weights it chooses among."""
    from listcon.pipeline.adaptation.fusion_choice import DENSE_WEIGHTS
    from listcon.pipeline.heads.domain import corpus_digest

    return {"corpus": corpus_digest(config.work), "dense_weights": list(DENSE_WEIGHTS), "encoder": encoder_fingerprint,
            "metric": manifest.spec["metric"],
            "lexical": lexical_manifest["spec"], "k": min(config.retrieve.k, manifest.count),
            "retrieve": {key: getattr(config.retrieve, key) for key in ("fusion", "convex_weight", "rrf_k")},
            "adapt": {k: v for k, v in to_dict(config.adapt).items() if k in FUSION_CHOICE}}


def rankings_keys(query_ids: list[str], source: dict) -> dict[str, str]:
    """A query's rankings depend on its candidates, their signals, its text and its passages' texts:
    the digest retrieval recorded for its list (none: it has no candidates)."""
    lists = source.get(LIST_DIGESTS, {})
    return {q: lists.get(q, "no candidates") for q in query_ids}
