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
from listcon.pipeline.data.readers import read_queries
from listcon.pipeline.evaluation.evaluate import aggregate, per_query
from listcon.pipeline.retrieval.faiss_index import IndexSpec
from listcon.pipeline.retrieval.lexical import LexicalIndex
from listcon.pipeline.retrieval.retrieve import FirstStage, RetrieveOptions
from listcon.pipeline.store.embedding_cache import EmbeddingCache
from listcon.pipeline.store.ranked_lists import read_ranked, read_trec, rows_by_query
from listcon.pipeline.store.text_table import TextTable
from listcon.pipeline.store.workdir import Workdir
from listcon.schemas import CANDIDATES, QRELS


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def lexical_of(work: Workdir) -> LexicalIndex:
    return LexicalIndex.load(work.lexical)


def first_stage(work: Workdir, spec: IndexSpec, k: int, method: str = "dense", index=None, qids=None):
    """Candidates of ``qids`` (all cached queries) from a FirstStage over the workdir's caches."""
    passages, queries = EmbeddingCache(work.passages), EmbeddingCache(work.queries)
    pids, pvec = passages.read_all()
    qids = qids or queries.ids()
    texts = dict(zip(*[read_queries(data_dir("adi"))[c].to_pylist() for c in ("id", "text")]))
    stage = FirstStage(index if index is not None else faiss_index.build(pvec, spec), pids, spec, lexical_of(work),
                       passages, RetrieveOptions(k=k, method=method))
    return pa.concat_tables([c for c, _ in stage.run(qids, [texts[q] for q in qids], queries.take(qids), progress=False)])


def test_a_pairs_dense_score_is_the_same_bits_whatever_else_is_scored_with_it():
    """A (query, passage) dense signal must not depend on its list: a pool of 7, a training list of 20 and a
    rerank of 1,000 all store the same float32 (a matrix product's last bits moved with the row count)."""
    from listcon.pipeline.retrieval.retrieve import dense_scores

    rng = np.random.default_rng(0)
    passages, query = rng.normal(size=(1000, 384)).astype(np.float32), rng.normal(size=384).astype(np.float32)
    for metric in ("cosine", "ip"):
        whole = dense_scores(query, passages, metric)
        np.testing.assert_allclose(whole, faiss_index.prepare(passages, metric) @ faiss_index.prepare(query[None], metric)[0],
                                   rtol=1e-5, atol=1e-5)
        for size in (1, 7, 20, 30, 82, 999):
            rows = rng.choice(1000, size, replace=False)
            np.testing.assert_array_equal(dense_scores(query, passages[rows], metric), whole[rows])


def test_dense_run_equals_exact_numpy_top_k_and_every_candidate_has_exact_signals(adi_embedded):
    work = Workdir(adi_embedded)
    candidates = read_ranked(work.candidates("test"))
    assert candidates.schema.remove_metadata().equals(CANDIDATES)
    passages, queries = EmbeddingCache(work.passages), EmbeddingCache(work.queries)
    pids, pvec = passages.read_all()
    qids = list(dict.fromkeys(candidates["query_id"].to_pylist()))
    sims = unit(queries.take(qids).astype(np.float64)) @ unit(pvec.astype(np.float64)).T
    position = {p: i for i, p in enumerate(pids)}
    dense = read_trec(work.run("test", "dense"))
    assert len(qids) == 35
    swaps = 0
    for row, qid in enumerate(qids):
        top = np.argsort(-sims[row], kind="stable")[:50]
        returned = np.array([position[p] for p in sorted(dense[qid], key=lambda p: -dense[qid][p])])
        # Same list as the exact float64 top-50, up to order among scores tied within 1e-5.
        np.testing.assert_allclose(sims[row, returned], sims[row, top], atol=1e-5)
        swaps += int((returned != top).sum())
    assert swaps <= 2
    # Whichever side found a candidate, its dense score is the exact cosine, its BM25 the exact score.
    lexical = lexical_of(work)
    texts = dict(zip(*[read_queries(data_dir("adi"))[c].to_pylist() for c in ("id", "text")]))
    for qid, rows in list(rows_by_query(candidates).items())[:5]:
        ids = rows["passage_id"].to_pylist()
        row = qids.index(qid)
        np.testing.assert_allclose(rows["dense_score"].to_numpy(), sims[row, [position[p] for p in ids]], atol=1e-5)
        np.testing.assert_allclose(rows["lexical_score"].to_numpy(), lexical.scores(texts[qid], ids), rtol=1e-6)


def bm25_reference(docs: list[list[str]], query: list[str], k1: float = 1.5, b: float = 0.75) -> np.ndarray:
    """Lucene BM25 (Lucene 8+: no constant (k1 + 1) factor) computed document by document, term by term."""
    n, avgdl = len(docs), sum(len(d) for d in docs) / len(docs)
    df = {t: sum(1 for d in docs if t in d) for t in set(query)}
    out = np.zeros(n)
    for i, doc in enumerate(docs):
        for term in query:
            tf = doc.count(term)
            if tf:
                idf = np.log(1 + (n - df[term] + 0.5) / (df[term] + 0.5))
                out[i] += idf * tf / (tf + k1 * (1 - b + b * len(doc) / avgdl))
    return out


def test_lexical_scores_equal_a_slow_per_document_bm25(adi_embedded):
    work = Workdir(adi_embedded)
    ids, _, texts = TextTable(work.texts).read()
    lexical = lexical_of(work)
    assert lexical.ids == ids
    docs = lexical.tokens(texts)
    for query in ("information retrieval systems", "computer indexing of documents", "the of and"):
        expected = bm25_reference(docs, lexical.tokens([query])[0])
        np.testing.assert_allclose(lexical.scores(query, ids), expected, rtol=1e-5, atol=1e-6)
        positions, scores = lexical.search([query], 10)
        order = np.lexsort((np.arange(len(ids)), -expected))[:10]
        order = order[expected[order] > 0]
        assert positions[0, : len(order)].tolist() == order.tolist()


def test_fused_ranks_equal_a_hand_computation(adi_embedded):
    work = Workdir(adi_embedded)
    candidates = read_ranked(work.candidates("test"))  # hybrid, convex, k=50
    rrf_run, convex_run = read_trec(work.run("test", "hybrid-rrf")), read_trec(work.run("test", "hybrid-convex"))
    dense_run, lexical_run = read_trec(work.run("test", "dense")), read_trec(work.run("test", "lexical"))
    for qid in list(dense_run)[:8]:
        dense_rank = {p: r for r, p in enumerate(sorted(dense_run[qid], key=lambda p: -dense_run[qid][p]), 1)}
        lexical_rank = {p: r for r, p in enumerate(sorted(lexical_run[qid], key=lambda p: -lexical_run[qid][p]), 1)}
        pool = list(dense_rank) + [p for p in lexical_rank if p not in dense_rank]
        rrf = {p: sum(1 / (60 + r[p]) for r in (dense_rank, lexical_rank) if p in r) for p in pool}
        hand = sorted(pool, key=lambda p: (-rrf[p], dense_rank.get(p, 51), lexical_rank.get(p, 51), p))[:50]
        assert sorted(rrf_run[qid], key=lambda p: -rrf_run[qid][p]) == hand
        rows = rows_by_query(candidates)[qid].to_pylist()
        signal = {r["passage_id"]: r for r in rows}
        assert list(convex_run[qid]) == [r["passage_id"] for r in rows]  # the candidates are the convex run
        d = np.array([signal[p]["dense_score"] for p in signal])
        x = np.array([signal[p]["lexical_score"] for p in signal])
        assert all(signal[p]["dense_rank"] == dense_rank.get(p, 51) for p in signal)
        assert all(signal[p]["lexical_rank"] == lexical_rank.get(p, 51) for p in signal)
        assert d.size == 50 and x.size == 50


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
    assert "retrieve: up to date (35 queries); nothing to do" in caplog.text
    assert lance.dataset(work.candidates("test")).version == version
    # One of this split's queries edited: it is re-encoded, and its candidates are redone.
    data = shutil.copytree(data_dir("adi"), tmp_path / "adi")
    lines = (data / "queries.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    lines[0] = json.dumps({**first, "text": first["text"] + " (edited)"})
    (data / "queries.jsonl").write_text("\n".join(lines) + "\n")
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert main(["retrieve", str(data), *common, "--split", "test", "--k", "50"]) == 0
    assert "retrieve: 1 of 35 queries to do (1 changed text; 34 up to date)" in caplog.text
    assert lance.dataset(work.candidates("test")).version > version


def test_approximate_indexes_agree_with_flat(adi_embedded):
    work = Workdir(adi_embedded)
    exact = first_stage(work, IndexSpec(), 10)
    for spec in (IndexSpec(kind="ivf", nlist=4, nprobe=4), IndexSpec(kind="hnsw")):
        approx = first_stage(work, spec, 10)
        assert approx["passage_id"].to_pylist() == exact["passage_id"].to_pylist()


def test_k_larger_than_the_corpus_takes_every_passage_without_a_warning(adi_embedded, caplog):
    """The default k=1,000 over a small corpus needs no one's attention: said at INFO, not as a warning."""
    work = Workdir(adi_embedded)
    index, _, _ = faiss_index.load(work.index)
    qids = EmbeddingCache(work.queries).ids()[:3]
    with caplog.at_level(logging.INFO):
        table = first_stage(work, IndexSpec(), 500, method="hybrid", index=index, qids=qids)
    said = [r for r in caplog.records if "k=500 is above the 82 indexed passages: every passage is a candidate" in r.getMessage()]
    assert len(said) == 1 and said[0].levelname == "INFO"
    assert table.num_rows == 3 * 82


def test_a_stale_index_or_other_query_encoder_is_refused(adi_embedded, tmp_path, caplog):
    common = ["--workdir", str(adi_embedded), "--no-progress", "--split", "test"]
    with caplog.at_level(logging.ERROR):
        code = main(["retrieve", str(data_dir("adi")), *common, "--pooling", "cls"])
    assert code == 2 and "queries must be encoded like the passages" in caplog.text

    stale = tmp_path / "stale"
    (stale / "index").mkdir(parents=True)
    faiss_index.save(stale / "index", *faiss_index.load(Workdir(adi_embedded).index)[:2],
                     faiss_index.Manifest(table_version=999, count=82, dim=384, spec={"kind": "flat", "metric": "cosine"}),
                     faiss_index.saved_hashes(Workdir(adi_embedded).index))
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
    # the candidate source is the convex fusion: one row, named both ways (metrics.json keeps both runs)
    assert "| first_stage (= hybrid-convex) |" in report and "| hybrid-convex |" not in report and "nDCG@10" in report


def test_an_index_does_not_cover_a_rebuilt_table_with_the_same_version():
    manifest = faiss_index.Manifest(table_version=3, count=2, dim=4, spec={}, encoder={"fingerprint": "a", "pooling": "mean"})
    assert manifest.covers(3, {"fingerprint": "a", "pooling": "mean"})
    assert not manifest.covers(3, {"fingerprint": "a", "pooling": "cls"})
    assert not manifest.covers(4, {"fingerprint": "a", "pooling": "mean"})


def test_a_ranked_list_streamed_in_pieces_lands_in_one_commit(tmp_path, monkeypatch):
    import lance

    from listcon.pipeline.store import ranked_lists
    from listcon.pipeline.store.ranked_lists import read_provenance, read_ranked, write_ranked

    monkeypatch.setattr(ranked_lists, "FRAGMENT_ROWS", 3)
    uri = str(tmp_path / "c.lance")
    table = pa.table({"query_id": ["a"] * 5 + ["b"] * 4, "rank": [*range(1, 6), *range(1, 5)]})
    first = write_ranked(pa.RecordBatchReader.from_batches(table.schema, table.to_batches(max_chunksize=2)), uri, {"v": 1})
    assert read_ranked(uri).equals(table) and read_provenance(uri) == {"v": 1}
    assert len(lance.dataset(uri).get_fragments()) == 3  # a data file per piece of >= 3 rows: 2+2, 2+2, 1
    second = write_ranked(table.slice(0, 4), uri, {"v": 2})
    assert second == first + 1  # the whole new list is one version; the old one stays readable as it was
    assert lance.dataset(uri, version=first).to_table().equals(table) and read_ranked(uri).equals(table.slice(0, 4))
    # a new version may change the schema (lists mined again with one more signal): still one commit
    wider = pa.table({"query_id": ["a"], "signals": pa.array([[[1.0, 2.0, 3.0]]], pa.list_(pa.list_(pa.float32(), 3)))})
    third = write_ranked(wider, uri, {"v": 3})
    assert third == second + 1 and read_ranked(uri).equals(wider) and read_provenance(uri) == {"v": 3}


def test_queries_are_encoded_on_the_embed_steps_actor_layout(adi_embedded, tmp_path, caplog):
    """A query's vector is the arithmetic of the actors ``[embed]`` lays out (here 2 actors of one
    thread, as on two one-CPU nodes), not of one actor with every thread: a cluster run then holds
    the local run's vectors bit for bit."""
    import torch

    from listcon.pipeline.encoding.encode_batch import EncodeBatch, EncoderSettings

    work = Workdir(shutil.copytree(adi_embedded, tmp_path / "work"))
    shutil.rmtree(work.queries)
    shutil.rmtree(work.candidates("test"))
    with caplog.at_level(logging.INFO):
        assert main(["retrieve", str(data_dir("adi")), "--workdir", str(work.root), "--no-progress", "--split", "test",
                     "--k", "50", "--batch-size", "8", "--concurrency", "2"]) == 0
    assert "encoder actors: 2 x (1.0 CPU, 0.0 GPU) on cpu" in caplog.text
    queries = read_queries(data_dir("adi"))
    ids, texts = queries["id"].to_pylist(), queries["text"].to_pylist()
    order = sorted(range(len(ids)), key=lambda i: -len(texts[i]))  # embed's batches: longest texts first
    ids, texts = [ids[i] for i in order], [texts[i] for i in order]
    threads = torch.get_num_threads()
    try:
        encode = EncodeBatch(EncoderSettings(batch_size=8), threads=1)
        expected = np.concatenate([encode({"id": np.array(ids[i:i + 8]), "text": np.array(texts[i:i + 8]),
                                           "content_hash": np.array(ids[i:i + 8])})["vector"]
                                   for i in range(0, len(ids), 8)])
    finally:
        torch.set_num_threads(threads)
    np.testing.assert_array_equal(EmbeddingCache(work.queries).take(ids), expected)
