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
from listcon.pipeline.heads.directory import ENCODER_FILE

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


@pytest.fixture(scope="module")
def demo_head_dir(adi_embedded, tmp_path_factory):
    """A head of the configuration `make demo` ships (jobs/demo.toml's [train.settings.head]: its signals,
    anchor and cap), untrained weights moved at random so the learned part counts, saved as training saves it."""
    from listcon.jobs.config import load_config

    torch.manual_seed(2)
    head = ListConRanker(load_config(ROOT / "jobs" / "demo.toml").train.settings.head)
    with torch.no_grad():
        for p in head.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    directory = tmp_path_factory.mktemp("demo-head")
    head.save_pretrained(directory)
    (directory / ENCODER_FILE).write_text(json.dumps(EmbeddingCache(Workdir(adi_embedded).passages).metadata))
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


def test_the_readme_python_api_examples_run(adi_embedded, demo_head_dir, tmp_path, monkeypatch, ray_session, capsys):
    """The README's code, with its demo paths pointed at a small adi workdir and a head of the demo's configuration."""
    work = tmp_path / "scifact"
    shutil.copytree(adi_embedded, work)
    shutil.copytree(demo_head_dir, work / "head")
    code = (readme_examples().replace("../shared/data/scifact", str(data_dir("adi")))
            .replace("work/scifact", str(work)).replace("work/adi", str(tmp_path / "adi")))
    monkeypatch.chdir(ROOT)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert isinstance(namespace["results"], pd.DataFrame) and len(namespace["results"]) == 35 * 50
    assert isinstance(namespace["result"], listcon.RunResult)
    assert set(namespace["result"].evaluation.summary) == {"first_stage", "dense", "lexical", "hybrid-rrf", "hybrid-convex"} | {"listcon"}
    assert "nDCG@10" in capsys.readouterr().out


def test_rank_gives_a_signal_head_the_signals_its_texts_give(demo_head_dir):
    """The demo's head over bare texts: dense cosine and BM25 over the given texts, as a workdir's candidates
    would carry them for that list; its ranking equals the scoring path over features plus those signals."""
    from listcon.pipeline.rerank.reranker import ad_hoc_candidates
    from listcon.pipeline.retrieval.lexical import LexicalIndex
    from listcon.pipeline.retrieval.retrieve import dense_scores
    from listcon.pipeline.retrieval.signals import QuerySignals, select

    reranker = listcon.Reranker.from_pretrained(demo_head_dir)
    query = "statins lower cholesterol"
    passages = ["Statins reduce LDL cholesterol.", "Cats sleep a lot.", "LDL and heart risk.", "cholesterol in eggs"]
    hits = reranker.rank(query, passages)
    vectors = reranker.encoder.encode([query, *passages])
    ids = [str(i) for i in range(len(passages))]
    dense = dense_scores(vectors[0], vectors[1:], "cosine")
    bm25 = LexicalIndex.build(ids, passages).scores(query, ids)
    matrix = QuerySignals(ad_hoc_candidates(ids, {p: (float(d), float(b)) for p, d, b in zip(ids, dense, bm25)}),
                          len(ids)).matrix(ids)
    head = ListConRanker.from_pretrained(demo_head_dir)
    block = np.concatenate([vectors[1:], select(matrix, head.config.signals, "test")], axis=1)
    anchor = sum(w * matrix[:, list(listcon.schemas.SIGNALS).index(n)].astype(np.float64) for n, w in head.config.anchor.items())
    first = np.lexsort((np.arange(len(ids)), -anchor))
    order, scores, _ = ListScorer(head, PruneSchedule()).rank(vectors[:1], [block[first]])
    assert [h.index for h in hits] == first[order[0]].tolist()
    assert [h.score for h in hits] == pytest.approx(scores[0].tolist())


@pytest.mark.parametrize("query, passages, message", [
    ("", ["a", "b"], "query must be a non-empty string, got ''"),
    ("   ", ["a"], "query must be a non-empty string"),
    (None, ["a"], "query must be a non-empty string, got None"),
    ("q", "a single string", "passages must be a list of strings, got str"),
    ("q", ["a", ""], r"passages\[1\] must be a non-empty string, got ''"),
    ("q", ["a", 3], r"passages\[1\] must be a non-empty string, got 3"),
])
def test_rank_checks_its_inputs_like_the_command_line_before_loading_anything(head_dir, query, passages, message):
    reranker = listcon.Reranker.from_pretrained(head_dir)
    with pytest.raises(ValueError, match=message):
        reranker.rank(query, passages)
    assert reranker._encoder is None  # refused before the encoder loads


def test_rank_refuses_a_head_needing_an_external_run_in_one_line(tmp_path):
    ListConRanker(ListConRankerConfig(hidden_size=16, num_heads=2, ffn_size=32,
                                      signals=("fused", "external"))).save_pretrained(tmp_path / "h")
    with pytest.raises(ValueError, match=r"this head takes the 'external' signal .* rerank a run over a workdir"):
        listcon.Reranker.from_pretrained(tmp_path / "h").rank("q", ["a", "b"])


def test_rank_over_many_texts_reranks_the_first_stage_top_and_keeps_the_rest_in_order(head_dir):
    from listcon.pipeline.rerank.settings import RerankSettings
    from listcon.pipeline.retrieval.retrieve import dense_scores

    reranker = listcon.Reranker.from_pretrained(head_dir, settings=RerankSettings(depth=30))
    passages = [f"note {i} on cell {i % 7} and gene {i % 11}" for i in range(200)]
    hits = reranker.rank("gene 3 in cell 5", passages)
    vectors = reranker.encoder.encode(["gene 3 in cell 5", *passages])
    dense = dense_scores(vectors[0], vectors[1:], "cosine")  # the first stage: the texts' dense scores
    first = np.lexsort((np.arange(200), -dense))
    assert sorted(h.index for h in hits) == list(range(200))
    assert {h.index for h in hits[:30]} == set(first[:30].tolist())  # only the first stage's top 30 meet the head
    assert [h.index for h in hits[30:]] == first[30:].tolist()
    assert all(a.score > b.score for a, b in zip(hits, hits[1:]))


def test_every_python_example_in_the_docs_runs():
    """The docs' code blocks are run as they stand (the README's run in the test above)."""
    blocks = [(page.name, code) for page in sorted((ROOT / "docs").glob("*.md"))
              for code in re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S)]
    assert blocks, "no python example in docs/"
    for name, code in blocks:
        exec(compile(code, name, "exec"), {})
