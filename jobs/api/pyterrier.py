"""listcon in PyTerrier pipelines: ``listcon.pyterrier.Reranker`` reranks each query's retrieved
documents with a ListConRanker head, so it composes with any PyTerrier retriever and runs in
``pt.Experiment`` beside other rerankers.

    import pyterrier as pt
    from listcon.pyterrier import Reranker

    first = pt.Transformer.from_df(run)                   # or any retriever: qid, query, docno (+ score/rank)
    pipeline = first >> Reranker("work/scifact/head", "work/scifact")
    pt.Experiment([first, pipeline], topics, qrels, eval_metrics=["nDCG@10"])

With a workdir, docnos are its passage ids and their features come from its cache; a query whose
id the cache holds for the same text uses its cached vector and first-stage signals, any other is
embedded from its text. Without a workdir the input needs a ``text`` column, which the head's
encoder embeds (``listcon.Reranker.rank``). Needs ``pip install 'listcon[pyterrier]'``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

try:
    import pyterrier as pt
except ImportError as err:  # an optional extra: say how to get it
    raise ImportError("listcon.pyterrier needs PyTerrier: pip install 'listcon[pyterrier]'") from err

from listcon.model.schedule import PruneSchedule
from listcon.pipeline.rerank.reranker import Reranker as ListReranker
from listcon.pipeline.rerank.settings import RerankSettings

NEEDED = ("qid", "query", "docno")


class Reranker(pt.Transformer):
    """qid, query, docno (+ score or rank giving the input order; + text without a workdir) in; the same
    documents out, reranked per query, with ``score`` and ``rank`` (from 0, as PyTerrier ranks) replaced
    and every other column kept."""

    def __init__(self, model_dir: str | Path, workdir: str | Path | None = None, *,
                 settings: RerankSettings = RerankSettings(), schedule: PruneSchedule = PruneSchedule(),
                 encoder: str | Path | None = None) -> None:
        self.model_dir, self.workdir = str(model_dir), None if workdir is None else str(workdir)
        self.reranker = ListReranker.from_pretrained(model_dir, workdir, encoder=encoder, settings=settings,
                                                     schedule=schedule)

    def __repr__(self) -> str:
        return f"listcon.pyterrier.Reranker({self.model_dir!r}, {self.workdir!r})"

    def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
        lacking = [c for c in NEEDED if c not in inp.columns]
        if lacking:
            raise ValueError(f"listcon.pyterrier.Reranker needs columns {list(NEEDED)} (+ text without a workdir); "
                             f"the input lacks {lacking}")
        frame = inp.assign(qid=inp["qid"].astype(str), docno=inp["docno"].astype(str))
        if frame.empty:
            return frame.assign(score=pd.Series(dtype=float), rank=pd.Series(dtype=int))
        texts = frame.groupby("qid", sort=False)["query"].agg(lambda q: q.iloc[0])
        if self.reranker.workdir is None:
            ranked = self._texts(frame)
        else:
            order = frame if {"rank", "score"} & set(frame.columns) else frame.assign(rank=frame.groupby("qid").cumcount())
            run = order[["qid", "docno", *(c for c in ("rank", "score") if c in order.columns)]]
            ranked = self.reranker.rerank(run, queries=texts.to_dict())[["qid", "docno", "score", "rank"]]
            ranked["rank"] = ranked["rank"] - 1
        rest = frame.drop(columns=[c for c in ("score", "rank") if c in frame.columns]).drop_duplicates(["qid", "docno"])
        out = ranked.merge(rest, on=["qid", "docno"], how="left")
        position = {q: i for i, q in enumerate(texts.index)}  # queries in the input's order, each best first
        return out.sort_values(["qid", "rank"], key=lambda c: c.map(position) if c.name == "qid" else c,
                               kind="stable").reset_index(drop=True)

    def _texts(self, frame: pd.DataFrame) -> pd.DataFrame:
        if "text" not in frame.columns:
            raise ValueError("without a workdir listcon.pyterrier.Reranker ranks texts: the input needs a text column "
                             "(e.g. pt.text.get_text(dataset, 'text') before it), or pass a workdir")
        parts = []
        for qid, group in frame.groupby("qid", sort=False):
            ranked = self.reranker.rank(str(group["query"].iloc[0]), group["text"].astype(str).tolist())
            parts.append(pd.DataFrame({"qid": qid, "docno": [group["docno"].iloc[r.index] for r in ranked],
                                       "score": [r.score for r in ranked], "rank": range(len(ranked))}))
        return pd.concat(parts, ignore_index=True)
