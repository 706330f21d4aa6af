"""listcon as a PyTerrier transformer: the same rankings as listcon's own Reranker, in pt.Experiment
beside the first stage, and a query id reused for another text never takes the cached query's features."""

from __future__ import annotations

import json

import ir_measures
import numpy as np
import pandas as pd
import pytest
import torch

import listcon
from conftest import data_dir
from listcon.jobs.config import load_config
from listcon.model import ListConRanker
from listcon.pipeline.data.readers import read_qrels, read_queries
from listcon.pipeline.store.embedding_cache import EmbeddingCache
from listcon.pipeline.store.workdir import Workdir
from listcon.pipeline.training.checkpoints import ENCODER_FILE
from test_api import ROOT

pt = pytest.importorskip("pyterrier")
from listcon.pyterrier import Reranker  # noqa: E402


@pytest.fixture(scope="module")
def signals_head(adi_embedded, tmp_path_factory):
    """A head of the demo's configuration (it takes the first-stage signals), weights moved at random."""
    torch.manual_seed(3)
    head = ListConRanker(load_config(ROOT / "jobs" / "demo.toml").train.settings.head)
    with torch.no_grad():
        for p in head.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    directory = tmp_path_factory.mktemp("pt-head")
    head.save_pretrained(directory)
    (directory / ENCODER_FILE).write_text(json.dumps(EmbeddingCache(Workdir(adi_embedded).passages).metadata))
    return directory


@pytest.fixture(scope="module")
def first_stage(adi_embedded) -> pd.DataFrame:
    """adi's first-stage run as PyTerrier's result frame: qid, query, docno, score, rank (from 0)."""
    work = Workdir(adi_embedded)
    texts = dict(zip(*(read_queries(data_dir("adi"))[c].to_pylist() for c in ("id", "text"))))
    rows = [line.split() for line in work.run("test", "first_stage").read_text().splitlines()]
    frame = pd.DataFrame({"qid": [r[0] for r in rows], "docno": [r[2] for r in rows],
                          "rank": [int(r[3]) - 1 for r in rows], "score": [float(r[4]) for r in rows]})
    return frame.assign(query=frame["qid"].map(texts))


def test_the_transformer_ranks_as_listcons_reranker_and_runs_in_an_experiment(adi_embedded, signals_head, first_stage):
    first = pt.Transformer.from_df(first_stage)
    pipeline = first >> Reranker(signals_head, adi_embedded)
    topics = first_stage[["qid", "query"]].drop_duplicates("qid")
    got = pipeline.transform(topics)
    want = listcon.Reranker.from_pretrained(signals_head, adi_embedded).rerank(first_stage)
    assert list(zip(got["qid"], got["docno"], got["rank"])) == list(zip(want["qid"], want["docno"], want["rank"] - 1))
    assert np.allclose(got["score"], want["score"])
    assert (got["query"] == got["qid"].map(dict(zip(topics["qid"], topics["query"])))).all()

    qrels = read_qrels(data_dir("adi"), "test").to_pandas().rename(
        columns={"query_id": "qid", "passage_id": "docno", "relevance": "label"})
    measure = ir_measures.nDCG @ 10
    table = pt.Experiment([first, pipeline], topics, qrels, eval_metrics=[measure], names=["first", "listcon"])
    for name, run in (("first", first_stage), ("listcon", want.assign(rank=want["rank"] - 1))):
        expected = ir_measures.calc_aggregate([measure], qrels.rename(columns={"qid": "query_id", "docno": "doc_id",
                                                                              "label": "relevance"}),
                                              run.rename(columns={"qid": "query_id", "docno": "doc_id"}))[measure]
        assert table.set_index("name").loc[name, "nDCG@10"] == pytest.approx(expected)


def test_a_query_id_reused_for_another_text_is_ranked_by_its_own_text(adi_embedded, signals_head, first_stage):
    """adi's query "1" asked with another text: ranked as that text under a new id, not with query 1's vector."""
    reranker = Reranker(signals_head, adi_embedded)
    docs = first_stage[first_stage["qid"] == "1"]
    text = "relevance feedback in interactive search"
    reused = reranker.transform(docs.assign(query=text))
    fresh = reranker.transform(docs.assign(qid="fresh-1", query=text))
    cached = reranker.transform(docs)
    assert reused["docno"].tolist() == fresh["docno"].tolist()
    assert np.allclose(reused["score"], fresh["score"])
    assert reused["docno"].tolist() != cached["docno"].tolist()


def test_without_a_workdir_it_ranks_texts(adi_embedded, signals_head, first_stage):
    corpus = {json.loads(line)["_id"]: json.loads(line) for line in (data_dir("adi") / "corpus.jsonl").read_text().splitlines()}
    docs = first_stage[first_stage["qid"] == "2"].head(20)
    docs = docs.assign(text=docs["docno"].map(lambda d: (corpus[d]["title"] + " " + corpus[d]["text"]).strip()))
    got = Reranker(signals_head).transform(docs)
    want = listcon.Reranker.from_pretrained(signals_head).rank(docs["query"].iloc[0], docs["text"].tolist())
    assert got["docno"].tolist() == [docs["docno"].iloc[r.index] for r in want]
    assert got["rank"].tolist() == list(range(len(docs)))
    with pytest.raises(ValueError, match=r"the input needs a text column"):
        Reranker(signals_head).transform(docs.drop(columns=["text"]))
    with pytest.raises(ValueError, match=r"needs columns \['qid', 'query', 'docno'\].*lacks \['query'\]"):
        Reranker(signals_head).transform(docs.drop(columns=["query"]))
