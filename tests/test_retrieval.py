"""Index + retrieval: flat FAISS equals exact numpy top-K; reruns change nothing; runs evaluate."""

from __future__ import annotations

import json
import logging
import shutil

import lance
import numpy as np
import pyarrow as pa
import pytest

from conftest import data_dir
from listcon.jobs.cli import main
from listcon.pipeline.retrieval import faiss_index
from listcon.pipeline.store.embedding_cache import EmbeddingCache
from listcon.pipeline.evaluation.evaluate import aggregate, per_query
from listcon.pipeline.retrieval.faiss_index import IndexSpec
from listcon.pipeline.store.ranked_lists import read_ranked, read_trec
from listcon.pipeline.retrieval.retrieve import retrieve
from listcon.pipeline.store.workdir import Workdir
from listcon.schemas import CANDIDATES, QRELS


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_flat_candidates_equal_exact_numpy_top_k(adi_embedded):
    work = Workdir(adi_embedded)
    candidates = read_ranked(work.candidates("test"))
    assert candidates.schema.remove_metadata().equals(CANDIDATES)
    passages, queries = EmbeddingCache(work.passages), EmbeddingCache(work.queries)
    pids, pvec = passages.read_all()
    qids = list(dict.fromkeys(candidates["query_id"].to_pylist()))
    sims = unit(queries.take(qids).astype(np.float64)) @ unit(pvec.astype(np.float64)).T
    position = {p: i for i, p in enumerate(pids)}
    got = candidates.to_pandas().groupby("query_id", sort=False)
    assert len(qids) == 35
    swaps = 0
    for row, qid in enumerate(qids):
        group = got.get_group(qid)
        top = np.argsort(-sims[row], kind="stable")[:50]
        returned = np.array([position[p] for p in group["passage_id"]])
        assert group["rank"].tolist() == list(range(1, 51))
        np.testing.assert_allclose(group["score"].to_numpy(), sims[row, returned], atol=1e-5)
        # Same list as the exact float64 top-50, up to order among scores tied within 1e-5.
        np.testing.assert_allclose(sims[row, returned], sims[row, top], atol=1e-5)
        swaps += int((returned != top).sum())
    assert swaps <= 2


def test_trec_run_matches_the_candidates_table(adi_embedded):
    work = Workdir(adi_embedded)
    table = read_ranked(work.candidates("test"))
    run = read_trec(work.run("test", "first_stage"))
    assert sum(len(v) for v in run.values()) == table.num_rows
    first = table.slice(0, 1).to_pylist()[0]
    assert run[first["query_id"]][first["passage_id"]] == pytest.approx(first["score"])
    line = work.run("test", "first_stage").read_text().splitlines()[0].split()
    assert line[1] == "Q0" and line[3] == "1" and line[5] == "listcon-first-stage"


def test_reruns_leave_index_and_candidates_unchanged(adi_embedded, caplog):
    work = Workdir(adi_embedded)
    before = (lance.dataset(work.candidates("test")).version, (work.index / "index.faiss").stat().st_mtime_ns)
    common = ["--workdir", str(adi_embedded), "--no-progress"]
    with caplog.at_level(logging.INFO):
        assert main(["index", *common]) == 0
        assert main(["retrieve", str(data_dir("adi")), *common, "--split", "test", "--k", "50"]) == 0
    after = (lance.dataset(work.candidates("test")).version, (work.index / "index.faiss").stat().st_mtime_ns)
    assert before == after
    assert "up to date" in caplog.text


def test_candidates_depend_on_their_queries_vectors_not_the_cache_version(adi_embedded, tmp_path, caplog):
    work = Workdir(shutil.copytree(adi_embedded, tmp_path / "work"))
    queries = EmbeddingCache(work.queries)
    row = queries.dataset.to_table().slice(0, 1)
    version = lance.dataset(work.candidates("test")).version
    # Another split's query lands in the cache: a new table version, the same vectors for this split.
    queries.upsert(row.set_column(row.schema.get_field_index("id"), "id", pa.array(["train-q1"])))
    common = ["--workdir", str(work.root), "--no-progress"]
    with caplog.at_level(logging.INFO):
        assert main(["retrieve", str(data_dir("adi")), *common, "--split", "test", "--k", "50"]) == 0
    assert "candidates for test are up to date" in caplog.text
    assert lance.dataset(work.candidates("test")).version == version
    # One of this split's queries edited: it is re-encoded, and the candidates are redone.
    data = shutil.copytree(data_dir("adi"), tmp_path / "adi")
    lines = (data / "queries.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    lines[0] = json.dumps({**first, "text": first["text"] + " (edited)"})
    (data / "queries.jsonl").write_text("\n".join(lines) + "\n")
    assert main(["retrieve", str(data), *common, "--split", "test", "--k", "50"]) == 0
    assert lance.dataset(work.candidates("test")).version == version + 1


def test_approximate_indexes_agree_with_flat(adi_embedded):
    work = Workdir(adi_embedded)
    pids, pvec = EmbeddingCache(work.passages).read_all()
    queries = EmbeddingCache(work.queries)
    qids = queries.ids()
    qvec = queries.take(qids)
    exact = retrieve(faiss_index.build(pvec, IndexSpec()), pids, qids, qvec, 10, IndexSpec(), progress=False)
    for spec in (IndexSpec(kind="ivf", nlist=4, nprobe=4), IndexSpec(kind="hnsw")):
        approx = retrieve(faiss_index.build(pvec, spec), pids, qids, qvec, 10, spec, progress=False)
        assert approx["passage_id"].to_pylist() == exact["passage_id"].to_pylist()


def test_k_larger_than_the_corpus_is_clamped_with_a_warning(adi_embedded, caplog):
    work = Workdir(adi_embedded)
    index, pids, _ = faiss_index.load(work.index)
    queries = EmbeddingCache(work.queries)
    qids = queries.ids()[:3]
    with caplog.at_level(logging.WARNING):
        table = retrieve(index, pids, qids, queries.take(qids), 500, IndexSpec(), progress=False)
    assert "k=500 is larger than the 82 indexed passages; clamped to 82" in caplog.text
    assert table.num_rows == 3 * 82


def test_a_stale_index_or_other_query_encoder_is_refused(adi_embedded, tmp_path, caplog):
    common = ["--workdir", str(adi_embedded), "--no-progress", "--split", "test"]
    with caplog.at_level(logging.ERROR):
        code = main(["retrieve", str(data_dir("adi")), *common, "--pooling", "cls"])
    assert code == 2 and "queries must be encoded like the passages" in caplog.text

    stale = tmp_path / "stale"
    (stale / "index").mkdir(parents=True)
    faiss_index.save(stale / "index", *faiss_index.load(Workdir(adi_embedded).index)[:2],
                     faiss_index.Manifest(table_version=999, count=82, dim=384, spec={"kind": "flat", "metric": "cosine"}))
    lance.write_dataset(lance.dataset(Workdir(adi_embedded).passages).to_table(), str(stale / "passages.lance"))
    caplog.clear()
    with caplog.at_level(logging.ERROR):
        code = main(["retrieve", str(data_dir("adi")), "--workdir", str(stale), "--split", "test"])
    assert code == 2 and "covers passages version 999" in caplog.text


def test_evaluation_counts_missing_queries_as_zero():
    qrels = pa.table({"query_id": ["q1", "q1", "q2", "q3"], "passage_id": ["a", "b", "c", "x"], "relevance": [1, 1, 1, 0]},
                     schema=QRELS)
    run = {"q1": {"a": 3.0, "z": 2.0, "b": 1.0}}  # q2 failed to produce a run
    values = per_query(qrels, run, ["nDCG@10", "RR@10", "R@100"])
    assert set(values["RR@10"]) == {"q1", "q2"}  # q3 has no relevant passage
    ndcg_q1 = (1 + 1 / np.log2(4)) / (1 + 1 / np.log2(3))
    assert values["nDCG@10"]["q1"] == pytest.approx(ndcg_q1)
    assert aggregate(values) == pytest.approx({"nDCG@10": ndcg_q1 / 2, "RR@10": 0.5, "R@100": 0.5})


def test_evaluate_job_writes_the_report(adi_embedded):
    assert main(["evaluate", str(data_dir("adi")), "--workdir", str(adi_embedded), "--split", "test"]) == 0
    report = (adi_embedded / "reports" / "test" / "report.md").read_text()
    assert "| first_stage |" in report and "nDCG@10" in report


def test_an_index_does_not_cover_a_rebuilt_table_with_the_same_version():
    manifest = faiss_index.Manifest(table_version=3, count=2, dim=4, spec={}, encoder={"fingerprint": "a", "pooling": "mean"})
    assert manifest.covers(3, {"fingerprint": "a", "pooling": "mean"})
    assert not manifest.covers(3, {"fingerprint": "a", "pooling": "cls"})
    assert not manifest.covers(4, {"fingerprint": "a", "pooling": "mean"})
