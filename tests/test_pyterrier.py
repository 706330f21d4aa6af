"""listcon as a PyTerrier transformer: the same rankings as listcon's own Reranker, in pt.Experiment
beside the first stage, and a query id reused for another text never takes the cached query's features."""

from __future__ import annotations

import json
import shutil

import ir_measures
import numpy as np
import pandas as pd
import pytest

import listcon
from conftest import data_dir
from listcon.pipeline.data.readers import read_qrels, read_queries
from listcon.pipeline.store.ranked_lists import read_trec
from listcon.pipeline.store.workdir import Workdir
from test_api import demo_head_dir  # noqa: F401  (the fixture: a head of the demo's configuration)

pt = pytest.importorskip("pyterrier")
from listcon.pyterrier import Reranker  # noqa: E402


@pytest.fixture(scope="module")
def first_stage(adi_embedded) -> pd.DataFrame:
    """adi's first-stage run as PyTerrier's result frame: qid, query, docno, score, rank (from 0)."""
    work = Workdir(adi_embedded)
    texts = dict(zip(*(read_queries(data_dir("adi"))[c].to_pylist() for c in ("id", "text"))))
    rows = [line.split() for line in work.run("test", "first_stage").read_text().splitlines()]
    frame = pd.DataFrame({"qid": [r[0] for r in rows], "docno": [r[2] for r in rows],
                          "rank": [int(r[3]) - 1 for r in rows], "score": [float(r[4]) for r in rows]})
    return frame.assign(query=frame["qid"].map(texts))


def test_the_transformer_ranks_as_listcons_reranker_and_runs_in_an_experiment(adi_embedded, demo_head_dir, first_stage,
                                                                             tmp_path):
    first = pt.Transformer.from_df(first_stage)
    pipeline = first >> Reranker(demo_head_dir, adi_embedded)
    topics = first_stage[["qid", "query"]].drop_duplicates("qid")
    got = pipeline.transform(topics)
    want = listcon.Reranker.from_pretrained(demo_head_dir, adi_embedded).rerank(first_stage)
    assert list(zip(got["qid"], got["docno"], got["rank"])) == list(zip(want["qid"], want["docno"], want["rank"] - 1))
    assert np.allclose(got["score"], want["score"])
    # the same rankings as `listcon rerank` over the same candidates (in a copy of the workdir)
    work = shutil.copytree(adi_embedded, tmp_path / "work")
    job = listcon.rerank(listcon.Config(data=str(data_dir("adi")), workdir=str(work), rerank=listcon.RerankOptions(
        model_dir=str(demo_head_dir), shard_size=64)), progress=False)
    ranked = read_trec(job.run_path)
    for qid, group in got.groupby("qid", sort=False):
        assert group["docno"].tolist() == sorted(ranked[qid], key=lambda p: -ranked[qid][p])
        assert np.allclose(group["score"], sorted(ranked[qid].values(), reverse=True))
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


def test_a_query_id_reused_for_another_text_is_ranked_by_its_own_text(adi_embedded, demo_head_dir, first_stage):
    """adi's query "1" asked with another text: ranked as that text under a new id, not with query 1's vector."""
    reranker = Reranker(demo_head_dir, adi_embedded)
    docs = first_stage[first_stage["qid"] == "1"]
    text = "relevance feedback in interactive search"
    reused = reranker.transform(docs.assign(query=text))
    fresh = reranker.transform(docs.assign(qid="fresh-1", query=text))
    cached = reranker.transform(docs)
    assert reused["docno"].tolist() == fresh["docno"].tolist()
    assert np.allclose(reused["score"], fresh["score"])
    assert reused["docno"].tolist() != cached["docno"].tolist()


def test_without_a_workdir_it_ranks_texts(adi_embedded, demo_head_dir, first_stage):
    corpus = {json.loads(line)["_id"]: json.loads(line) for line in (data_dir("adi") / "corpus.jsonl").read_text().splitlines()}
    docs = first_stage[first_stage["qid"] == "2"].head(20)
    docs = docs.assign(text=docs["docno"].map(lambda d: (corpus[d]["title"] + " " + corpus[d]["text"]).strip()))
    got = Reranker(demo_head_dir).transform(docs)
    want = listcon.Reranker.from_pretrained(demo_head_dir).rank(docs["query"].iloc[0], docs["text"].tolist())
    assert got["docno"].tolist() == [docs["docno"].iloc[r.index] for r in want]
    assert got["rank"].tolist() == list(range(len(docs)))
    with pytest.raises(ValueError, match=r"the input needs a text column"):
        Reranker(demo_head_dir).transform(docs.drop(columns=["text"]))
    with pytest.raises(ValueError, match=r"needs columns \['qid', 'query', 'docno'\].*lacks \['query'\]"):
        Reranker(demo_head_dir).transform(docs.drop(columns=["query"]))
