"""The `listcon` front door: the Reranker object, ad-hoc rank(), typed step results, the README's examples."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import listcon
from conftest import data_dir
from listcon.model import ListConRanker, ListConRankerConfig, ListScorer, PruneSchedule
from listcon.pipeline.data.readers import read_queries
from listcon.pipeline.store.embedding_cache import EmbeddingCache
from listcon.pipeline.store.ranked_lists import candidate_lists, read_ranked
from listcon.pipeline.store.workdir import Workdir
from listcon.pipeline.training.checkpoints import ENCODER_FILE

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def head_dir(adi_embedded, tmp_path_factory):
    """A small random head over MiniLM features, saved with the encoder it expects (as training saves it)."""
    torch.manual_seed(1)
    directory = tmp_path_factory.mktemp("api-head")
    ListConRanker(ListConRankerConfig(hidden_size=64, num_heads=4, ffn_size=128)).save_pretrained(directory)
    meta = EmbeddingCache(Workdir(adi_embedded).passages).metadata
    (directory / ENCODER_FILE).write_text(json.dumps(meta))
    return directory


def test_the_front_door():
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", listcon.__version__)
    for name in ("Reranker", "Config", "load_config", "embed", "index", "retrieve", "mine", "train", "rerank",
                 "evaluate", "run"):
        assert name in listcon.__all__ and hasattr(listcon, name)


def test_rerank_takes_a_dict_a_trec_run_or_a_dataframe_alike(adi_embedded, head_dir):
    work = Workdir(adi_embedded)
    reranker = listcon.Reranker.from_pretrained(head_dir, adi_embedded)
    lists = dict(candidate_lists(read_ranked(work.candidates("test")), ["1", "2", "3"]))
    from_dict = reranker.rerank(lists)
    assert list(from_dict.columns) == ["qid", "docno", "rank", "score", "round"]
    assert from_dict["qid"].tolist() == [q for q in ("1", "2", "3") for _ in lists[q]]
    run = work.root / "three.trec"
    run.write_text("".join(f"{q} Q0 {p} {r + 1} {100 - r} x\n" for q in lists for r, p in enumerate(lists[q])))
    pd.testing.assert_frame_equal(reranker.rerank(run), from_dict)
    frame = pd.DataFrame([{"qid": q, "docno": p, "rank": r + 1} for q in lists for r, p in enumerate(lists[q])])
    shuffled = reranker.rerank(frame.sample(frac=1, random_state=0))  # queries come in order of first appearance
    pd.testing.assert_frame_equal(shuffled.sort_values(["qid", "rank"], ignore_index=True), from_dict)
    # The same rows as the rerank step's own reranker over the same lists.
    steps = listcon.Reranker(ListConRanker.from_pretrained(head_dir), work)._cached.rerank(list(lists.items()))
    assert steps["passage_id"].to_pylist() == from_dict["docno"].tolist()


def test_queries_missing_from_the_cache_are_encoded_from_their_text(adi_embedded, head_dir):
    work = Workdir(adi_embedded)
    cached = listcon.Reranker.from_pretrained(head_dir, adi_embedded)
    (qid, candidates), = candidate_lists(read_ranked(work.candidates("test")), ["5"])
    queries = read_queries(data_dir("adi"))
    text = dict(zip(queries["id"].to_pylist(), queries["text"].to_pylist()))[qid]
    expected = cached.rerank({qid: candidates})
    got = cached.rerank({"new-query": candidates}, queries={"new-query": text})
    assert got["docno"].tolist() == expected["docno"].tolist()
    np.testing.assert_allclose(got["score"], expected["score"], atol=1e-5)
    with pytest.raises(KeyError, match=r"1 query id\(s\) have no cached vector and no text, e.g. \['other'\]"):
        cached.rerank({"other": candidates})


def test_rank_orders_texts_like_the_scoring_path_over_their_vectors(adi_embedded, head_dir):
    reranker = listcon.Reranker.from_pretrained(head_dir)  # no workdir: the encoder comes from encoder.json
    passages = ["the cell divides", "heart and blood", "a study of gene expression", "liver drug dose", "brain data"]
    hits = reranker.rank("gene expression in cells", passages)
    vectors = reranker.encoder.encode(["gene expression in cells", *passages])
    order, scores, _ = ListScorer(ListConRanker.from_pretrained(head_dir), PruneSchedule()).rank(vectors[:1], [vectors[1:]])
    assert [h.index for h in hits] == order[0].tolist()
    assert [h.text for h in hits] == [passages[i] for i in order[0]]
    assert [h.score for h in hits] == pytest.approx(scores[0].tolist())
    assert reranker.rank("gene expression in cells", passages, top_k=2) == hits[:2]
    with pytest.raises(ValueError, match="build the Reranker with a workdir"):
        reranker.rerank({"1": ["a"]})


def readme_examples() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Python API", 1)[1].split("\n## ", 1)[0]
    return "\n".join(re.findall(r"```python\n(.*?)```", section, flags=re.S))


def test_the_readme_python_api_examples_run(adi_embedded, head_dir, tmp_path, monkeypatch, ray_session, capsys):
    """The README's code, with its demo paths pointed at a small adi workdir and head."""
    work = tmp_path / "scifact"
    shutil.copytree(adi_embedded, work)
    shutil.copytree(head_dir, work / "head")
    code = readme_examples().replace("work/scifact", str(work)).replace("work/adi", str(tmp_path / "adi"))
    monkeypatch.chdir(ROOT)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert isinstance(namespace["results"], pd.DataFrame) and len(namespace["results"]) == 35 * 50
    assert isinstance(namespace["result"], listcon.RunResult)
    assert set(namespace["result"].evaluation.summary) == {"first_stage", "dense", "lexical", "hybrid-rrf", "hybrid-convex"} | {"listcon"}
    assert "nDCG@10" in capsys.readouterr().out
