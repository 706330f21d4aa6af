"""`listcon adapt`: choose the fusion a corpus's candidates rank by where a head's learned part is off,
from pseudo-queries cut from the corpus's own passages (never its queries or judgments).

Pseudo-queries (``pipeline/adaptation``) are retrieved by the pipeline's first stage over indexes that
hold each source passage without what was cut from it; the anchor and the z-score fusions are scored by
where they rank the source passage, and ``[adapt] rule`` picks one. The choice and its evidence go to
``W/adaptation.json``; rerank then ranks by it on this corpus (docs/transfer.md has what it gave). With
``--init HEAD`` the same pseudo-queries also fine-tune that head (``jobs/adapt_head_job``).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, replace

from listcon.jobs.adapt_head_job import adapt_head, check_init, corpus_pseudo_queries
from listcon.jobs.config import Config
from listcon.jobs.lock import locked
from listcon.jobs.plans import adapt_provenance
from listcon.jobs.runtime import log_config
from listcon.jobs.train_job import TrainResult
from listcon.pipeline.adaptation.fusion_choice import DENSE_WEIGHTS, choose_fusion, pseudo_gains
from listcon.pipeline.adaptation.pseudo_lists import pseudo_candidates
from listcon.pipeline.adaptation.record import ADAPTATION_FILE, read_adaptation, write_adaptation
from listcon.pipeline.retrieval import faiss_index
from listcon.pipeline.retrieval.lexical import LexicalSpec, read_manifest
from listcon.pipeline.store.corpus_state import check_corpus_current
from listcon.pipeline.store.embedding_cache import CacheMismatchError, EmbeddingCache

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AdaptResult:
    """The record written (or found up to date), whether this run had nothing to do for it, and the head
    fine-tuned on the pseudo-queries (``[adapt] init``; else None)."""

    path: str
    record: dict
    up_to_date: bool
    head: TrainResult | None = None


@locked("adapt")
def adapt(config: Config, progress: bool = True) -> AdaptResult:
    """Choose the corpus's fusion from its pseudo-queries, and fine-tune ``[adapt] init`` on them where one is
    named; a rerun with the same inputs changes nothing."""
    if config.adapt.init:  # checked before any work
        check_init(config.adapt.init, config.work)
    result = choose(config, progress)
    if config.adapt.init:
        return replace(result, head=adapt_head(config, progress))
    return result


def choose(config: Config, progress: bool = True) -> AdaptResult:
    """The fusion choice (``W/adaptation.json``)."""
    work, settings, options = config.work, config.encoder, config.adapt
    check_corpus_current(work, config.need_data(), config.inputs.stale_corpus, "adapt")
    passages = EmbeddingCache(work.passages)
    manifest = faiss_index.read_manifest(work.index)
    lexical_manifest = read_manifest(work.lexical)
    if not passages.exists or manifest is None or lexical_manifest is None:
        raise FileNotFoundError(f"adapt needs the passage cache and both indexes of {work.root}; run `listcon embed "
                                f"{config.data} --workdir {config.workdir}` and `listcon index` first")
    provenance = adapt_provenance(config, manifest, lexical_manifest, passages.metadata.get("fingerprint"))
    k = provenance["k"]
    path = work.root / ADAPTATION_FILE
    old = read_adaptation(work)
    if old is not None and old.get("provenance") == provenance:
        log.info("adapt: %s is up to date (%s); nothing to do", path, _describe(old["choice"]))
        return AdaptResult(str(path), old, True)
    log_config("adapt", {"data": config.data, "workdir": config.workdir, "adapt": options, "k": k,
                         "encoder": settings})
    started = time.perf_counter()
    gains, kinds = pseudo_evidence(config, k, progress)
    choice = choose_fusion(gains, options.rule)
    record = {"corpus": provenance["corpus"], "provenance": provenance, "choice": choice.to_dict(), "kinds": kinds,
              "seconds": round(time.perf_counter() - started, 1)}
    write_adaptation(work, record)
    log.info("adapt: %s -> %s; %.1fs", _describe(record["choice"]), path, record["seconds"])
    return AdaptResult(str(path), record, False)


def pseudo_evidence(config: Config, k: int, progress: bool = False, weights: tuple[float, ...] = DENSE_WEIGHTS
                    ) -> tuple[dict[str, dict[str, float]], dict[str, int]]:
    """(``pseudo_gains`` of the corpus's pseudo-queries for the z-fusions at ``weights``, how many of each kind
    were cut): the corpus read from ``config.data``, its cached vectors and indexes' settings from the workdir;
    no query, no judgment."""
    work, settings = config.work, config.encoder
    passages = EmbeddingCache(work.passages)
    corpus, pseudo = corpus_pseudo_queries(config)
    ids = corpus.table["id"].to_pylist()
    encoder = settings.load(device="cpu")
    try:
        passages.check_encoder(settings.expected_metadata(encoder))
    except CacheMismatchError as err:
        raise CacheMismatchError(f"pseudo-queries must be encoded like the passages: {err}") from None
    cached, vectors = passages.read_all()
    position = {p: i for i, p in enumerate(cached)}
    missing = [p for p in ids if p not in position]
    if missing:
        raise FileNotFoundError(f"{len(missing)} passage(s) of {config.data} are not in {work.passages} (e.g. "
                                f"{missing[:3]}); run `listcon embed` first")
    kinds = dict(Counter(q.kind for q in pseudo))
    log.info("adapt: %d pseudo-queries from %d passages (%s); retrieving each top-%d over the corpus without them",
             len(pseudo), len(ids), kinds, k)
    spec = faiss_index.read_manifest(work.index).spec
    candidates, sources = pseudo_candidates(ids, corpus.texts(), vectors[[position[p] for p in ids]], pseudo, encoder,
                                            passages, spec["metric"], LexicalSpec(**read_manifest(work.lexical)["spec"]),
                                            replace(config.retrieve, k=k), progress)
    return pseudo_gains(candidates, sources, weights), kinds


def _describe(choice: dict) -> str:
    gains = choice["pseudo_ndcg@10"]
    chosen = choice["chosen"]
    what = ("the anchor (convex + 0.5 RRF), as without adapting" if choice["dense_weight"] is None else
            f"{choice['dense_weight']:g} x z(dense) + {1 - choice['dense_weight']:g} x z(BM25)")
    return (f"rule {choice['rule']} chose {what}: pseudo-query nDCG@10 {gains[chosen]:.3f} against the anchor's "
            f"{gains['anchor']:.3f} (best {choice['best']} {gains[choice['best']]:.3f}, p={choice['p']:.2g}, "
            f"{choice['queries']} pseudo-queries)")
