"""How a head ranks a corpus: its learned part where its domain says it helps, else the fusion
`listcon adapt` chose for the corpus, else its fallback anchor. The rerank job, `listcon status`
and the Python ``Reranker`` all ask this one rule."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from listcon.model.head_config import ListConRankerConfig
from listcon.pipeline.adaptation.record import adapted_fusion
from listcon.pipeline.heads.domain import corpus_digest, fallback_anchor, learned_part_applies, read_domain
from listcon.pipeline.store.workdir import Workdir

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RerankRule:
    """The learned part applies (``learned``), else the adapted fusion (``fusion``: dense weight, rule, corpus
    digest), else the fallback anchor (``fallback``: ``{}`` for the head's own, RRF weights for an external run)."""

    learned: bool
    fallback: dict | None = None
    fusion: dict | None = None

    def to_dict(self) -> dict:
        return {"learned_part": self.learned, **({"fallback": self.fallback} if self.fallback else {}),
                **({"adapted_fusion": self.fusion} if self.fusion else {})}


def rerank_rule(head: ListConRankerConfig, model_dir: str | Path, work: Workdir, outside_domain: str = "anchor",
                source: dict | None = None) -> RerankRule:
    """The rule for a head (config ``head``) on ``work``'s corpus and candidates (provenance ``source``); logs it.

    A head that records no domain applies everywhere; ``outside_domain="head"`` applies it outside its domain."""
    domain = read_domain(model_dir)
    if domain is None:
        return RerankRule(True)
    digest = corpus_digest(work)
    if learned_part_applies(domain, digest):
        return RerankRule(True)
    validated = {c["name"]: c["learned_helps"] for c in domain.values()}
    outside = (f"{work.root} is outside the head's domain (validated: {validated}; True = the learned part helped "
               "there)")
    if outside_domain == "head":
        log.warning("%s: applying the whole head (outside_domain=head)", outside)
        return RerankRule(True)
    fusion = adapted_fusion(work, digest)
    if fusion is not None:
        log.warning("%s: ranking by the fusion `listcon adapt` chose for this corpus, %g x z(dense) + %g x z(BM25) "
                    "(rule %s)", outside, fusion["dense_weight"], 1 - fusion["dense_weight"], fusion["rule"])
        return RerankRule(False, fusion=fusion)
    fallback = fallback_anchor(head, source)
    log.warning("%s: ranking by its fallback fusion %s (no fusion adapted to this corpus: `listcon adapt` chooses "
                "one)", outside, fallback or (head.anchor_weights if head.signals else "cosine"))
    return RerankRule(False, fallback or {})
