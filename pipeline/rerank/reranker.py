"""The reranker object for notebooks and scripts: a head checkpoint plus (optionally) a
workdir whose caches hold the passage and query features.

``Reranker.rerank(run)`` reranks a run (``{qid: [docnos best first]}``, a TREC run file or
a DataFrame) over cached features and returns PyTerrier's columns; ``Reranker.rank(query,
passages)`` encodes texts with the head's encoder and needs no workdir.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from listcon.model import ListConRanker, PruneSchedule
from listcon.model.encoder import BatchEncoder
from listcon.model.onnx_encoder import encoder_from_info
from listcon.pipeline.rerank.cached import CachedReranker, check_dim, make_scorer
from listcon.pipeline.rerank.settings import RerankSettings
from listcon.pipeline.store.corpus_state import check_corpus_current
from listcon.pipeline.store.embedding_cache import EmbeddingCache, content_hash
from listcon.pipeline.retrieval import faiss_index
from listcon.pipeline.retrieval.lexical import LexicalIndex, LexicalSpec, read_manifest
from listcon.pipeline.retrieval.retrieve import dense_scores, minmax
from listcon.pipeline.retrieval.signals import ExactScores, QuerySignals, select, weigh
from listcon.pipeline.store.lance_tables import list_tables
from listcon.pipeline.store.ranked_lists import read_provenance, read_ranked, read_trec, rows_by_query
from listcon.pipeline.store.workdir import Workdir
from listcon.pipeline.heads.directory import check_finished
from listcon.pipeline.heads.features import check_head_features, head_encoder
from listcon.pipeline.heads.domain import from_external_run
from listcon.pipeline.heads.rule import rerank_rule

RunLike = dict[str, list[str]] | str | Path | pd.DataFrame


@dataclass(frozen=True)
class RankResult:
    """One passage of an ad-hoc ranking: its position in the input, its score and its text."""

    index: int
    score: float
    text: str


class Reranker:
    """A ListConRanker head with the caches (and encoder) it reranks with."""

    def __init__(self, head: ListConRanker, workdir: Workdir | None = None, encoder: BatchEncoder | None = None,
                 settings: RerankSettings = RerankSettings(), schedule: PruneSchedule = PruneSchedule(),
                 encoder_info: dict | None = None, fusion: float | None = None) -> None:
        self.head, self.workdir, self.settings, self.schedule = head, workdir, settings, schedule
        self._encoder, self._encoder_info = encoder, encoder_info
        self._cached: CachedReranker | None = None
        self._rows: dict[str, tuple] | None = None
        if workdir is not None:
            passages = EmbeddingCache(workdir.passages)
            check_dim(head, passages)
            self._cached = CachedReranker(head, passages, EmbeddingCache(workdir.queries), settings, schedule, fusion)
        self.scorer = self._cached.scorer if self._cached else make_scorer(head, settings, schedule)

    @classmethod
    def from_pretrained(cls, model_dir: str | Path, workdir: str | Path | Workdir | None = None, *,
                        encoder: str | Path | BatchEncoder | None = None, settings: RerankSettings = RerankSettings(),
                        schedule: PruneSchedule = PruneSchedule(), stale_corpus: str = "error") -> "Reranker":
        """Load a head saved by ``listcon train`` (or ``save_pretrained``), with a workdir's caches.

        A workdir whose corpus changed since embed is refused (``stale_corpus="proceed"``: a warning).
        ``encoder`` (a model directory or a TextEncoder) is only needed for texts the caches do
        not hold; by default it is the encoder the head was trained on (its ``encoder.json``),
        else the workdir's.
        """
        model_dir = Path(model_dir)
        if workdir is not None and not isinstance(workdir, Workdir):
            workdir = Workdir(Path(workdir))
        if workdir is not None:
            check_corpus_current(workdir, None, stale_corpus, "the reranker")
        info = head_encoder(model_dir)
        if workdir is not None:
            check_head_features(model_dir, EmbeddingCache(workdir.passages), info)
        if isinstance(encoder, (str, Path)):
            encoder = encoder_from_info({"pooling": "mean", "normalize": False, "max_length": None, **(info or {}),
                                         "model": str(encoder)}, device="cpu")
        check_finished(model_dir)
        head = ListConRanker.from_pretrained(model_dir)
        fusion = None
        if workdir is not None:  # the rule the rerank job follows; an external run's table, where one is, says RRF
            sources = [read_provenance(table) for table in list_tables(workdir.all_candidates)]
            rule = rerank_rule(head.config, model_dir, workdir, settings.outside_domain,
                               next((s for s in sources if from_external_run(s)), None))
            if not rule.learned:
                head = head.anchored(rule.fallback or None)
                fusion = (rule.fusion or {}).get("dense_weight")
        return cls(head, workdir, encoder, settings, schedule, info, fusion)

    # -- texts ---------------------------------------------------------------------------

    @property
    def encoder(self) -> BatchEncoder:
        """The text encoder of the head's features (loaded on first use)."""
        if self._encoder is None:
            info = self._encoder_info
            if info is None and self.workdir is not None:
                info = EmbeddingCache(self.workdir.passages).metadata
            if info is None:
                raise ValueError("this head does not say which encoder its features come from (no encoder.json "
                                 "beside it, no workdir); pass encoder=<model directory> to Reranker.from_pretrained")
            self._encoder = encoder_from_info(info, device=self.scorer.device)
        return self._encoder

    def rank(self, query: str, passages: list[str], top_k: int | None = None) -> list[RankResult]:
        """Rank ``passages`` for ``query`` by iterative inference; best first, ``top_k`` of them.

        Checked like the command line's inputs, before anything loads. A head that takes first-stage
        signals gets those the texts give: the dense score and BM25 over the given texts (an
        external run's score cannot be had, and is refused). The first stage (dense, or the head's
        anchor fusion) orders the texts, and only its top ``settings.depth`` (default 1,000) go through
        the head, so memory stays bounded however many texts come; the rest follow in that order.
        """
        _check_rank_inputs(query, passages, top_k)
        names = self.head.config.signals
        if "external" in names:
            raise ValueError("this head takes the 'external' signal (an external run's score), which texts alone do "
                             "not give; rerank a run over a workdir instead (Reranker.from_pretrained(head, workdir)"
                             ".rerank(run))")
        if not passages:
            return []
        vectors = self.encoder.encode([query, *passages], progress=len(passages) >= PROGRESS_FROM)
        features, candidates = vectors[1:], [str(i) for i in range(len(passages))]
        dense = dense_scores(vectors[0], features, "cosine")
        first = dense.astype(np.float64)
        if names:
            lexical = LexicalIndex.build(candidates, passages, self._lexical_spec()).scores(query, candidates)
            rows = ad_hoc_candidates(candidates, {p: (float(d), float(b)) for p, d, b in zip(candidates, dense, lexical)})
            matrix = QuerySignals(rows, len(candidates)).matrix(candidates).astype(np.float64)
            first = weigh(matrix, self.head.config.anchor_weights)
            features = np.concatenate([features, select(matrix, names, "rank()'s texts").astype(np.float32)], axis=1)
        by_first = np.lexsort((np.arange(len(first)), -first))
        top = by_first[: self.settings.depth or RANK_DEPTH]
        order, scores, _ = self.scorer.rank(vectors[:1], [features[top]])
        ranked = [RankResult(int(top[i]), float(s), passages[int(top[i])]) for i, s in zip(order[0], scores[0]) if i >= 0]
        floor = min(h.score for h in ranked)
        ranked += [RankResult(int(i), floor - 1 - n / len(by_first), passages[int(i)])
                   for n, i in enumerate(by_first[len(top):])]  # below every reranked text, in first-stage order
        return ranked[:top_k] if top_k is not None else ranked

    def _lexical_spec(self) -> LexicalSpec:
        """BM25 as the workdir's lexical index scores (its manifest), else the default."""
        manifest = read_manifest(self.workdir.lexical) if self.workdir is not None else None
        return LexicalSpec(**manifest["spec"]) if manifest else LexicalSpec()

    # -- runs over cached features -----------------------------------------------------

    def _with_signals(self, lists: list[tuple[str, list[str]]], texts: dict[str, str],
                      retexted: set[str] = frozenset()) -> list[tuple]:
        """Each list with its signal matrix: from the workdir's candidates (the query's first stage),
        exact dense and BM25 scores for passages outside them (which needs the query's text). A
        query with no candidates table (or ``retexted``: whose candidates were retrieved for another
        text under its id) but a text gets its list scored as its candidates."""
        work = self.workdir
        if self._rows is None:
            self._rows = _candidate_rows(work)
        exact = None
        out = []
        for query, passages in lists:
            known = None if query in retexted else self._rows.get(query)
            found = QuerySignals(*known) if known else None
            outside = passages if found is None else [p for p in passages if p not in found.row]
            if outside and query not in texts:
                where = "outside its candidates" if known else "without a candidates table"
                raise KeyError(f"{len(outside)} passage(s) of query {query!r} are {where} (e.g. {outside[:3]}); their "
                               "signals need the query's text: pass queries={qid: text}")
            if outside and exact is None:
                exact = ExactScores(self._cached.passages, self._cached.queries, LexicalIndex.load(work.lexical),
                                    faiss_index.read_manifest(work.index).spec["metric"], texts,
                                    self._cached.extra_queries)
            scores = exact(query, outside) if outside else {}
            signals = found or QuerySignals(ad_hoc_candidates(passages, scores), len(passages))
            out.append((query, passages, signals.matrix(passages, scores if known else None)))
        return out

    def rerank(self, run: RunLike, queries: dict[str, str] | None = None, as_arrow: bool = False) -> pd.DataFrame | pa.Table:
        """Rerank every query's candidates; columns ``qid, docno, rank, score, round``.

        Passage features come from the workdir's cache. A query whose vector is not cached
        is encoded from ``queries`` (``{qid: text}``) with the head's encoder.
        """
        if self._cached is None:
            raise ValueError("rerank() reads cached features: build the Reranker with a workdir "
                             "(Reranker.from_pretrained(model_dir, workdir)), or use rank() on texts")
        lists = [(q, c) for q, c in _lists_of(run).items()]
        given = queries or {}
        # a text given for a cached query id that was embedded from another text is this text's query: its
        # cached vector and first-stage rows belong to the other one (an id reused across collections)
        cached = self._cached.queries.hashes() if given else {}
        retexted = {q for q, t in given.items() if q in cached and cached[q] != content_hash(t)}
        missing = self._cached.queries.missing([q for q, _ in lists]) if lists else []
        absent = [q for q in missing if q not in given]
        if absent:
            raise KeyError(f"{len(absent)} query id(s) have no cached vector and no text, e.g. {absent[:5]}; "
                           "pass queries={qid: text} or run `listcon retrieve` for their split")
        from_text = retexted.union(missing)  # encoded from the text given
        encode = [q for q, _ in lists if q in from_text]
        if encode:
            self._cached.extra_queries = dict(zip(encode, self.encoder.encode([given[q] for q in encode])))
        try:
            if self.head.config.signals or self._cached.fusion is not None:
                lists = self._with_signals(lists, given, retexted)
            table = self._cached.rerank(lists)
        finally:
            self._cached.extra_queries = {}
        table = table.rename_columns(["qid", "docno", "rank", "score", "round"])
        return table if as_arrow else table.to_pandas()


RANK_DEPTH = 1000  # rank() puts at most this many texts through the head (settings.depth overrides)
PROGRESS_FROM = 1000  # rank() shows a progress bar while encoding this many texts or more


def _check_rank_inputs(query, passages, top_k) -> None:
    """rank()'s inputs, by the rules the command line applies to queries and passages."""
    if not isinstance(query, str) or not query.strip():
        raise ValueError(f"query must be a non-empty string, got {query!r}")
    if isinstance(passages, str) or not isinstance(passages, (list, tuple)):
        raise ValueError(f"passages must be a list of strings, got {type(passages).__name__}")
    for i, text in enumerate(passages):
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"passages[{i}] must be a non-empty string, got {text!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k must be a positive integer (or None for all), got {top_k!r}")


def ad_hoc_candidates(passages: list[str], scores: dict[str, tuple[float, float]]) -> pa.Table:
    """A query's own list as its candidate rows: exact dense and BM25 scores, each side's rank in
    the list, and the default convex fusion (min-max, 0.5/0.5) as the source score."""
    dense = np.array([scores[p][0] for p in passages], dtype=np.float64)
    lexical = np.array([scores[p][1] for p in passages], dtype=np.float64)
    rank = lambda v: np.argsort(np.argsort(-v, kind="stable"), kind="stable") + 1  # noqa: E731
    return pa.table({"passage_id": passages, "dense_score": dense, "lexical_score": lexical, "dense_rank": rank(dense),
                     "lexical_rank": rank(lexical), "score": 0.5 * minmax(dense) + 0.5 * minmax(lexical),
                     "external_score": pa.nulls(len(passages), pa.float64()),
                     "external_rank": pa.nulls(len(passages), pa.int32())})


def _candidate_rows(work: Workdir) -> dict[str, tuple]:
    """Every query's candidate rows (and the table's k) across the workdir's candidates tables."""
    found: dict[str, tuple] = {}
    for table in list_tables(work.all_candidates):
        provenance = read_provenance(table) or {}
        for query, rows in rows_by_query(read_ranked(table)).items():
            found.setdefault(query, (rows, provenance.get("k", 1000)))
    return found


def _lists_of(run: RunLike) -> dict[str, list[str]]:
    """``{qid: [docno best first]}`` from a dict, a TREC run file or a DataFrame."""
    if isinstance(run, dict):
        return {str(q): [str(p) for p in c] for q, c in run.items()}
    if isinstance(run, (str, Path)):
        scored = read_trec(run)
        return {q: sorted(docs, key=lambda p: -docs[p]) for q, docs in scored.items()}
    if isinstance(run, pd.DataFrame):
        for column in ("qid", "docno"):
            if column not in run.columns:
                raise ValueError(f"the run DataFrame needs columns qid, docno (and rank or score); it has {list(run.columns)}")
        if "rank" in run.columns:
            frame = run.sort_values(["qid", "rank"], kind="stable")
        elif "score" in run.columns:
            frame = run.assign(_neg=-run["score"]).sort_values(["qid", "_neg"], kind="stable")
        else:
            raise ValueError("the run DataFrame needs a rank or a score column to order each query's candidates")
        order = list(dict.fromkeys(run["qid"].astype(str)))
        grouped = {str(q): g["docno"].astype(str).tolist() for q, g in frame.groupby("qid", sort=False)}
        return {q: grouped[q] for q in order}
    raise TypeError(f"rerank() takes a dict, a TREC run path or a DataFrame, got {type(run).__name__}")

