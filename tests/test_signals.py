"""Signals and candidate sources: one signal path for mining and rerank, external runs, depth tails."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from conftest import data_dir
from listcon.jobs.cli import main
from listcon.model import ListConRanker, ListConRankerConfig, PruneSchedule
from listcon.pipeline.data.readers import read_queries
from listcon.pipeline.retrieval.signals import SIGNAL_SOURCE, QuerySignals, with_signals
from listcon.pipeline.data.runs import read_run
from listcon.pipeline.rerank.cached import CachedReranker
from listcon.pipeline.rerank.settings import RerankSettings
from listcon.pipeline.store.embedding_cache import EmbeddingCache
from listcon.pipeline.store.ranked_lists import iter_lists, read_provenance, read_ranked, read_trec, rows_by_query
from listcon.pipeline.store.workdir import Workdir
from listcon.schemas import CANDIDATES, SIGNALS, DataError

SIGNAL_HEAD = ("fused", "lexical", "dense", "dense_rank", "lexical_rank")


@pytest.fixture(scope="module")
def work(adi_embedded, tmp_path_factory) -> Workdir:
    """A private copy of the embedded adi workdir, mined (these tests add tables to it)."""
    root = tmp_path_factory.mktemp("signals") / "w"
    shutil.copytree(adi_embedded, root)
    assert main(["mine", str(data_dir("adi")), "--workdir", str(root), "--split", "test", "--holdout-fraction", "0.3"]) == 0
    return Workdir(root)


def cached_reranker(work: Workdir, head: ListConRanker, **settings) -> CachedReranker:
    return CachedReranker(head, EmbeddingCache(work.passages), EmbeddingCache(work.queries), RerankSettings(**settings),
                          PruneSchedule())


def signal_lists(work: Workdir, qids: list[str] | None = None):
    candidates = read_ranked(work.candidates("test"))
    qids = qids or list(dict.fromkeys(candidates["query_id"].to_pylist()))
    return list(with_signals(iter_lists(work.candidates("test"), qids, rows=SIGNAL_SOURCE),
                             read_provenance(work.candidates("test"))["k"]))


def test_mining_and_rerank_compute_identical_signals(work):
    lists = {q: dict(zip(ids, matrix)) for q, ids, matrix in signal_lists(work)}
    training = read_ranked(work.training("test")).to_pylist()
    compared = missed = 0
    for row in training:
        for passage, vector in zip(row["passage_ids"], row["signals"]):
            if passage in lists[row["query_id"]]:
                np.testing.assert_array_equal(np.asarray(vector, np.float32), lists[row["query_id"]][passage])
                compared += 1
            else:  # a judged positive the first stage missed: exact scores, below-top-k ranks, fused 0
                assert vector[SIGNALS.index("fused")] == 0.0 and vector[SIGNALS.index("dense_rank")] == pytest.approx(1 / np.log2(52))
                missed += 1
    assert compared > 500 and not np.isnan([v for r in training for s in r["signals"] for v in s[:5]]).any()
    assert np.isnan([s[SIGNALS.index("external")] for r in training for s in r["signals"]]).all()  # no external run


def test_an_untrained_signal_head_ranks_like_the_fused_first_stage(work):
    torch.manual_seed(0)
    head = ListConRanker(ListConRankerConfig(hidden_size=64, num_heads=4, ffn_size=128, signals=SIGNAL_HEAD))
    lists = signal_lists(work)
    table = cached_reranker(work, head).rerank(lists)
    ranked = {q: rows["passage_id"].to_pylist() for q, rows in rows_by_query(table).items()}
    fused = {q: [p for p, _ in sorted(zip(ids, m[:, SIGNALS.index("fused")]), key=lambda x: -x[1])] for q, ids, m in lists}
    same = sum(ranked[q][:10] == fused[q][:10] for q in ranked)
    assert same == len(ranked)


def test_depth_reranks_the_top_and_keeps_the_rest_in_first_stage_order(work):
    torch.manual_seed(0)
    head = ListConRanker(ListConRankerConfig(hidden_size=64, num_heads=4, ffn_size=128))
    lists = [item[:2] for item in signal_lists(work)]
    table = cached_reranker(work, head, depth=10).rerank(lists)
    by_query = rows_by_query(table)
    for qid, candidates in lists:
        rows = by_query[qid].to_pylist()
        assert len(rows) == len(candidates) == 50
        assert [r["passage_id"] for r in rows[10:]] == candidates[10:] and {r["round"] for r in rows[10:]} == {-1}
        assert sorted(r["passage_id"] for r in rows[:10]) == sorted(candidates[:10])
        scores = [r["score"] for r in rows]
        assert all(a > b for a, b in zip(scores, scores[1:])) and min(scores[:10]) > max(scores[10:])


def test_a_head_needing_a_signal_the_candidates_lack_is_refused(work, tmp_path, caplog):
    ListConRanker(ListConRankerConfig(hidden_size=64, num_heads=4, ffn_size=128,
                                      signals=("fused", "external"))).save_pretrained(tmp_path / "head")
    with caplog.at_level(logging.ERROR):
        code = main(["rerank", str(data_dir("adi")), "--workdir", str(work.root), "--model-dir", str(tmp_path / "head"),
                     "--run-name", "needs-external"])
    assert code == 2 and "the head needs signal(s) ['external']" in caplog.text
    assert not work.run("test", "needs-external").exists()


def test_an_external_run_round_trips_as_candidates(work, tmp_path):
    hybrid = read_ranked(work.candidates("test"))
    external = tmp_path / "bm25.trec"
    shutil.copy(work.run("test", "lexical"), external)  # another system's run: here, the BM25 run itself
    other = Workdir(shutil.copytree(work.root, tmp_path / "w"))
    assert main(["retrieve", str(data_dir("adi")), "--workdir", str(other.root), "--split", "test", "--k", "50",
                 "--from-run", str(external), "--no-progress"]) == 0
    got = read_ranked(other.candidates("test"))
    run = read_trec(external)
    for qid, rows in rows_by_query(got).items():
        rows = rows.to_pylist()
        expected = sorted(run[qid].items(), key=lambda x: -x[1])[:50]
        assert [r["passage_id"] for r in rows] == [p for p, _ in expected]
        assert [r["external_score"] for r in rows] == pytest.approx([s for _, s in expected])
        assert [r["external_rank"] for r in rows] == list(range(1, len(rows) + 1))
    # The dense and lexical signals of a pair are the same whichever source brought it in.
    before = {(r["query_id"], r["passage_id"]): r for r in hybrid.to_pylist()}
    shared = [(r, before[(r["query_id"], r["passage_id"])]) for r in got.to_pylist() if (r["query_id"], r["passage_id"]) in before]
    assert len(shared) > 100
    for a, b in shared:
        assert (a["dense_score"], a["lexical_score"], a["dense_rank"], a["lexical_rank"]) == \
               (b["dense_score"], b["lexical_score"], b["dense_rank"], b["lexical_rank"])
    first = read_trec(other.run("test", "first_stage"))  # the candidates' run file follows the external order
    assert all(sorted(first[q], key=lambda p: -first[q][p]) == [p for p, _ in sorted(run[q].items(), key=lambda x: -x[1])][:50]
               for q in first)


def test_an_external_runs_pools_are_retrieved_from_like_the_corpus_and_their_order_counts_for_nothing(work, tmp_path,
                                                                                                    caplog):
    """``--run-order pool``: each query's candidates are its pool, ranked exactly as hybrid retrieval ranks the
    whole corpus, each side ranking the pool alone (the slow reference: every passage's exact scores from a
    whole-corpus retrieval, restricted to the pool). The run's scores and order change nothing, not even the
    plan: a rerun with the pools reshuffled does no work."""
    rng = np.random.default_rng(3)
    everything = Workdir(shutil.copytree(work.root, tmp_path / "all"))
    assert main(["retrieve", str(data_dir("adi")), "--workdir", str(everything.root), "--split", "test", "--k", "100",
                 "--no-progress"]) == 0  # adi's 82 passages: every one a candidate, with its exact scores
    exact = {q: {r["passage_id"]: r for r in rows.to_pylist()}
             for q, rows in rows_by_query(read_ranked(everything.candidates("test"))).items()}
    pools = {q: sorted(rng.choice(sorted(rows), size=30, replace=False).tolist()) for q, rows in exact.items()}
    runs = []
    for name in ("a", "b"):  # the same pools, given in two unrelated orders with unrelated scores
        lines = [f"{q} Q0 {p} {i + 1} {score:.6f} other"
                 for q, pool in pools.items()
                 for i, (p, score) in enumerate(zip(rng.permutation(pool), sorted(rng.normal(size=30), reverse=True)))]
        runs.append(tmp_path / f"{name}.trec")
        runs[-1].write_text("\n".join(lines) + "\n")
    pooled = Workdir(shutil.copytree(work.root, tmp_path / "pooled"))
    retrieve = lambda w, run: main(["retrieve", str(data_dir("adi")), "--workdir", str(w.root), "--split", "test",  # noqa: E731
                                    "--k", "20", "--from-run", str(run), "--run-order", "pool", "--no-progress"])
    assert retrieve(pooled, runs[0]) == 0
    got = rows_by_query(read_ranked(pooled.candidates("test")))
    assert got.keys() == pools.keys()
    for qid, pool in pools.items():
        side_rank = {}
        for side in ("dense_score", "lexical_score"):
            order = sorted(pool, key=lambda p: (-exact[qid][p][side], p))
            side_rank[side] = {p: i + 1 if i < 20 else 21 for i, p in enumerate(order)}
        union = [p for p in pool if min(side_rank["dense_score"][p], side_rank["lexical_score"][p]) <= 20]
        minmax = lambda v: (v - v.min()) / (v.max() - v.min())  # noqa: E731
        convex = 0.5 * minmax(np.array([exact[qid][p]["dense_score"] for p in union], np.float64)) + \
            0.5 * minmax(np.array([exact[qid][p]["lexical_score"] for p in union], np.float64))
        expected = sorted(zip(union, convex), key=lambda x: (-x[1], side_rank["dense_score"][x[0]],
                                                              side_rank["lexical_score"][x[0]], x[0]))[:20]
        rows = got[qid].to_pylist()
        assert [r["passage_id"] for r in rows] == [p for p, _ in expected], qid
        assert [r["score"] for r in rows] == pytest.approx([c for _, c in expected], abs=1e-6)
        for r in rows:
            assert (r["dense_score"], r["lexical_score"]) == (exact[qid][r["passage_id"]]["dense_score"],
                                                              exact[qid][r["passage_id"]]["lexical_score"])
            assert (r["dense_rank"], r["lexical_rank"]) == (side_rank["dense_score"][r["passage_id"]],
                                                            side_rank["lexical_score"][r["passage_id"]])
            assert r["external_score"] is None and r["external_rank"] is None
    # recorded as pools, not an external run: outside a head's domain the fallback is the head's own anchor
    retrieved = read_provenance(pooled.candidates("test"))["retrieve"]
    assert (retrieved["from_run"], retrieved["run_order"]) == (False, "pool")
    table = read_ranked(pooled.candidates("test"))
    with caplog.at_level(logging.INFO):
        assert retrieve(pooled, runs[1]) == 0
    assert "retrieve: up to date (35 queries); nothing to do" in caplog.text
    again = Workdir(shutil.copytree(work.root, tmp_path / "again"))
    assert retrieve(again, runs[1]) == 0
    assert read_ranked(again.candidates("test")).equals(table)


@pytest.mark.parametrize("lines, message", [
    ("1 Q0 1 1 2.0 x\n1 Q0 9999 2 1.0 x\n", "line 2, column 'passage_id': passage '9999' is not in the corpus"),
    ("1 Q0 1 1 2.0 x\n1 Q0 1 2 1.0 x\n", "line 2, column 'passage_id': query '1' lists passage '1' twice"),
    ("1 Q0 1 1 high x\n", "line 1, column 'score': score 'high' is not a number"),
    ("1 Q0 1 1 nan x\n", "line 1, column 'score': score nan is not a finite number"),
    ("1 Q0 1 1 2.0\n", "line 1: expected 6 fields"),
])
def test_bad_external_runs_are_clear_errors(tmp_path, lines, message):
    path = tmp_path / "run.trec"
    path.write_text(lines)
    with pytest.raises(DataError) as caught:
        read_run(path, {"1", "2"}, {str(i) for i in range(1, 83)})
    assert message in str(caught.value) and str(path) in str(caught.value)


def test_the_notebook_reranker_takes_a_signal_heads_signals_from_the_workdir(work, tmp_path, monkeypatch):
    import listcon
    from listcon.pipeline.rerank import reranker as reranker_module

    torch.manual_seed(3)
    ListConRanker(ListConRankerConfig(hidden_size=64, num_heads=4, ffn_size=128, signals=SIGNAL_HEAD,
                                      head_cap=1.0)).save_pretrained(tmp_path / "head")
    reranker = listcon.Reranker.from_pretrained(tmp_path / "head", work.root)
    lists = signal_lists(work)[:5]
    expected = cached_reranker(work, ListConRanker.from_pretrained(tmp_path / "head")).rerank(lists)
    built = []

    class Counted(QuerySignals):
        def __init__(self, *args) -> None:
            built.append(args)
            super().__init__(*args)

    monkeypatch.setattr(reranker_module, "QuerySignals", Counted)
    got = reranker.rerank({q: ids for q, ids, _ in lists})
    assert got["docno"].tolist() == expected["passage_id"].to_pylist()
    assert len(built) == len(lists)  # one per query, not one per candidate
    monkeypatch.undo()
    # A passage outside the query's candidates gets exact scores, which need the query's text.
    qid, ids, _ = lists[0]
    outside = next(p for p in map(str, range(1, 83)) if p not in ids)
    with pytest.raises(KeyError, match=rf"outside its candidates .*'{outside}'.*pass queries="):
        reranker.rerank({qid: [*ids[:5], outside]})
    texts = dict(zip(*[read_queries(data_dir("adi"))[c].to_pylist() for c in ("id", "text")]))
    assert len(reranker.rerank({qid: [*ids[:5], outside]}, queries=texts)) == 6
    # A new query (no candidates table): its own list is scored as its candidates; the untrained
    # head then ranks by the convex fusion of the list's exact dense and BM25 scores.
    fresh = listcon.Reranker.from_pretrained(tmp_path / "head", work.root)
    fresh.head.signal_prior.data[:] = torch.tensor([4.0, 0, 0, 0, 0, -2.0])
    fresh.head.prior.data[1] = 0.0  # no learned part: the prior alone
    got = fresh.rerank({"new": ids[:8]}, queries={"new": texts[qid]})
    rows = {r["passage_id"]: r for r in rows_by_query(read_ranked(work.candidates("test")))[qid].to_pylist()}
    dense = np.array([rows[p]["dense_score"] for p in ids[:8]])  # exact scores, as the candidates table holds them
    bm25 = np.array([rows[p]["lexical_score"] for p in ids[:8]])
    norm = lambda v: (v - v.min()) / (v.max() - v.min())  # noqa: E731
    convex = 0.5 * norm(dense) + 0.5 * norm(bm25)
    assert got["docno"].tolist() == [ids[i] for i in np.argsort(-convex, kind="stable")]


def test_the_rrf_signal_is_reciprocal_rank_fusion_of_both_sides_by_hand(work):
    k = read_provenance(work.candidates("test"))["k"]
    for table in list(rows_by_query(read_ranked(work.candidates("test"))).values())[:5]:
        rows = table.to_pylist()
        matrix = QuerySignals(table, k).matrix([r["passage_id"] for r in rows])
        for row, vector in zip(rows, matrix):
            by_hand = sum(1 / (60 + r) for r in (row["dense_rank"], row["lexical_rank"]) if r <= k) * 61 / 2
            assert vector[SIGNALS.index("rrf")] == pytest.approx(by_hand, rel=1e-6)
        assert any(r["dense_rank"] > k or r["lexical_rank"] > k for r in rows)  # one side's miss counts 0


def _anchor_order(lists, weights: dict[str, float]) -> dict[str, list[str]]:
    fused = lambda m: sum(w * m[:, SIGNALS.index(n)].astype(np.float64) for n, w in weights.items())  # noqa: E731
    return {q: [p for p, _ in sorted(zip(ids, fused(m)), key=lambda x: -x[1])] for q, ids, m in lists}


ANCHORED = dict(hidden_size=64, num_heads=4, ffn_size=128, signals=("fused", "rrf", "lexical", "dense"),
                anchor={"fused": 1.0, "rrf": 0.5}, head_cap=2.0)


def _trained_looking(seed: int) -> ListConRanker:
    """A signal head whose every weight has moved (as after training): its ranking leaves the anchor's."""
    torch.manual_seed(seed)
    head = ListConRanker(ListConRankerConfig(**ANCHORED))
    with torch.no_grad():
        for p in head.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    return head.eval()


def test_an_anchored_head_ranks_exactly_like_its_anchor_fusion(work):
    lists = signal_lists(work)
    expected = _anchor_order(lists, ANCHORED["anchor"])
    head = _trained_looking(1)
    for model, same in ((ListConRanker(ListConRankerConfig(**ANCHORED)), True), (head.anchored(), True), (head, False)):
        table = cached_reranker(work, model).rerank(lists)
        ranked = {q: rows["passage_id"].to_pylist()[:10] for q, rows in rows_by_query(table).items()}
        assert (sum(ranked[q] == expected[q][:10] for q in ranked) == len(ranked)) is same
    assert torch.equal(head.anchored().score_out.weight, head.score_out.weight)  # a copy: only the prior is reset
    with pytest.raises(ValueError, match=r"anchor weighs signals the head takes .* got \{'external': 1.0\}"):
        ListConRankerConfig(signals=("fused",), anchor={"external": 1.0})


@pytest.mark.parametrize("verdict, flags, learned", [
    ("other corpus", [], False),                  # a corpus nobody validated: the anchor ranks
    ("other corpus", ["--outside-domain", "head"], True),
    ("helps here", [], True),                     # validated, and the learned part beat the anchor here
    ("hurts here", [], False),                    # validated, and it did not: the anchor ranks
])
def test_outside_its_domain_a_head_ranks_by_its_anchor(work, tmp_path, caplog, verdict, flags, learned):
    from listcon.pipeline.heads.domain import corpus_digest, write_domain

    head = _trained_looking(2)
    head.save_pretrained(tmp_path / "head")
    digest = corpus_digest(work) if verdict != "other corpus" else "0" * 64
    write_domain(tmp_path / "head", {digest: {"name": "adi", "learned_helps": verdict == "helps here",
                                              "anchor": 0.5, "head": 0.6}})
    run = f"domain-{len(flags)}-{verdict.replace(' ', '-')}"
    with caplog.at_level(logging.WARNING):
        assert main(["rerank", str(data_dir("adi")), "--workdir", str(work.root), "--model-dir", str(tmp_path / "head"),
                     "--run-name", run, "--no-progress", *flags]) == 0
    lists = signal_lists(work)
    expected = cached_reranker(work, head if learned else head.anchored()).rerank(lists)
    got = read_ranked(work.rankings(f"test.{run}"))
    assert got["passage_id"].to_pylist() == expected["passage_id"].to_pylist()
    assert read_provenance(work.rankings(f"test.{run}"))["learned_part"] is learned
    assert ("outside the head's domain" in caplog.text) is (verdict != "helps here")


def _candidates(dense_rank, lexical_rank, external_rank=None):
    n = len(dense_rank)
    external = [None] * n if external_rank is None else external_rank
    return pa.table({"query_id": ["q"] * n, "passage_id": [f"p{i}" for i in range(n)],
                     "rank": list(range(1, n + 1)), "score": [float(n - i) for i in range(n)],
                     "dense_score": [0.9 - 0.1 * i for i in range(n)], "dense_rank": dense_rank,
                     "lexical_score": [float(i + 1) for i in range(n)], "lexical_rank": lexical_rank,
                     "external_score": [None if r is None else float(-r) for r in external], "external_rank": external},
                    schema=CANDIDATES)


def test_rrf_fuses_every_first_stage_the_list_carries():
    k, rrf = 3, SIGNALS.index("rrf")
    hybrid = QuerySignals(_candidates([1, 2, 4], [4, 1, 2]), k).matrix(["p0", "p1", "p2"])[:, rrf]
    # two sides: 1/(60 + rank) in each side's top-k, scaled by (60 + 1) / 2 (first on both = 1)
    np.testing.assert_allclose(hybrid, np.array([1 / 61, 1 / 62 + 1 / 61, 1 / 62]) * 61 / 2, rtol=1e-6)
    external = QuerySignals(_candidates([1, 2, 4], [4, 1, 2], [3, None, 1]), k).matrix(["p0", "p1", "p2"])[:, rrf]
    # an external run is a third side, alike: scaled by (60 + 1) / 3; a passage it lacks gets nothing from it
    np.testing.assert_allclose(external, np.array([1 / 61 + 1 / 63, 1 / 62 + 1 / 61, 1 / 62 + 1 / 61]) * 61 / 3,
                               rtol=1e-6)
    assert QuerySignals(_candidates([1], [1], [1]), k).matrix(["p0"])[0, rrf] == pytest.approx(1.0)


def test_list_features_depend_on_the_whole_list_not_its_order():
    from listcon.pipeline.retrieval.signals import LIST_FEATURES, list_features

    rows = _candidates([1, 2, 3, 5, 4], [5, 1, 2, 3, 4])
    vectors = np.random.default_rng(0).normal(size=(5, 8)).astype(np.float32)
    features = list_features(rows, 4, vectors, (3, 0.5, 0.9))
    assert features.shape == (5, len(LIST_FEATURES)) and np.isfinite(features).all()
    order = [3, 0, 4, 2, 1]  # the same list, stored in another order: every passage keeps its vector
    shuffled = list_features(rows.take(order), 4, vectors[order], (3, 0.5, 0.9))
    np.testing.assert_allclose(shuffled, features[order], rtol=1e-6, atol=1e-7)
    column = {name: features[:, i] for i, name in enumerate(LIST_FEATURES)}
    dense = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    np.testing.assert_allclose(column["dense_z"], (dense - dense.mean()) / dense.std(), atol=1e-5)
    np.testing.assert_allclose(column["dense_gap"], dense - 0.9, atol=1e-6)
    np.testing.assert_allclose(column["lexical_rel"], np.arange(1, 6) / 5, rtol=1e-6)
    assert list(column["query_terms"]) == [3] * 5 and column["query_idf_max"][0] == pytest.approx(0.9)


def test_outside_its_domain_a_head_on_an_external_run_ranks_by_rrf_of_every_side(work, tmp_path, caplog):
    """With an external run the fallback is RRF over external, dense and lexical alike: the head's own anchor
    (the candidate source's min-max score first) would let the external run outweigh the other two."""
    from listcon.pipeline.heads.domain import write_domain

    other = Workdir(shutil.copytree(work.root, tmp_path / "w"))
    external = tmp_path / "bm25.trec"
    shutil.copy(work.run("test", "lexical"), external)
    assert main(["retrieve", str(data_dir("adi")), "--workdir", str(other.root), "--split", "test", "--k", "50",
                 "--from-run", str(external), "--no-progress"]) == 0
    head = _trained_looking(3)
    head.save_pretrained(tmp_path / "head")
    write_domain(tmp_path / "head", {"0" * 64: {"name": "elsewhere", "learned_helps": True, "anchor": 0.5, "head": 0.6}})
    with caplog.at_level(logging.INFO):
        assert main(["rerank", str(data_dir("adi")), "--workdir", str(other.root), "--model-dir", str(tmp_path / "head"),
                     "--run-name", "external-fallback", "--no-progress"]) == 0
    assert "RRF" in caplog.text or "'rrf'" in caplog.text
    got = rows_by_query(read_ranked(other.rankings("test.external-fallback")))
    for qid, rows in rows_by_query(read_ranked(other.candidates("test"))).items():
        ranks = [rows[c].to_numpy().astype(float) for c in ("dense_rank", "lexical_rank", "external_rank")]
        rrf = sum(np.where(r <= 50, 1 / (60 + r), 0.0) for r in ranks[:2]) + 1 / (60 + ranks[2])
        ids = rows["passage_id"].to_pylist()
        expected = [ids[i] for i in np.lexsort((np.arange(len(ids)), -np.round(rrf, 9)))]
        assert got[qid]["passage_id"].to_pylist()[:10] == expected[:10], qid
    assert read_provenance(other.rankings("test.external-fallback"))["fallback"] == {"rrf": 1.0}

    # a head without the rrf signal keeps its own anchor there and says so, once (the Python API asked twice)
    from listcon import Reranker

    no_rrf = ListConRanker(ListConRankerConfig(**{**ANCHORED, "signals": ("fused", "lexical", "dense"),
                                                  "anchor": {"fused": 1.0}}))
    no_rrf.save_pretrained(tmp_path / "no-rrf")
    write_domain(tmp_path / "no-rrf", {"0" * 64: {"name": "elsewhere", "learned_helps": True, "anchor": 0.5, "head": 0.6}})
    caplog.clear()
    Reranker.from_pretrained(tmp_path / "no-rrf", other.root)
    assert caplog.text.count("does not take the rrf signal: its fallback is its own anchor {'fused': 1.0}") == 1


def test_z_fusion_weighs_the_list_features_z_scores_and_an_external_copy_of_bm25_changes_nothing():
    from listcon.pipeline.retrieval.signals import LIST_FEATURES, list_features, z_fusion

    rows = _candidates([1, 2, 3, 5, 4], [5, 1, 2, 3, 4])
    features = list_features(rows, 4, np.random.default_rng(0).normal(size=(5, 8)).astype(np.float32), (3, 0.5, 0.9))
    dense_z, lexical_z = (features[:, LIST_FEATURES.index(name)] for name in ("dense_z", "lexical_z"))
    signals = QuerySignals(rows, 4)
    for weight in (0.0, 0.35, 1.0):
        fused = z_fusion(signals.dense, signals.lexical, weight)
        np.testing.assert_allclose(fused, weight * dense_z + (1 - weight) * lexical_z, atol=1e-5)
        # an external run that is BM25 on another scale (the usual --from-run) moves no candidate
        np.testing.assert_allclose(z_fusion(signals.dense, signals.lexical, weight, 3.0 * signals.lexical + 7.0), fused,
                                   atol=1e-9)


def test_after_adapt_a_head_outside_its_domain_ranks_by_the_adapted_fusion_and_adapt_reads_no_query(work, tmp_path,
                                                                                                      caplog):
    """`listcon adapt` chooses from the corpus alone (garbled queries and qrels: the same record); rerank then ranks
    each list by that z-score fusion over the whole list, exactly as a per-query reference does, and goes back to
    the anchor when the record is gone."""
    import json

    from listcon.pipeline.adaptation.record import ADAPTATION_FILE
    from listcon.pipeline.heads.domain import write_domain

    other = Workdir(shutil.copytree(work.root, tmp_path / "w"))
    garbled = Path(shutil.copytree(data_dir("adi"), tmp_path / "adi-garbled"))
    (garbled / "queries.jsonl").write_text("".join(json.dumps({"_id": f"g{i}", "text": f"nothing {i}"}) + "\n"
                                                   for i in range(5)))
    (garbled / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\ng0\t1\t1\n")
    records = []
    for data in (garbled, data_dir("adi")):
        assert main(["adapt", str(data), "--workdir", str(other.root), "--no-progress"]) == 0
        records.append(json.loads((other.root / ADAPTATION_FILE).read_text()))
        (other.root / ADAPTATION_FILE).unlink()
    assert records[0]["choice"] == records[1]["choice"] and records[0]["corpus"] == records[1]["corpus"]
    assert records[1]["choice"]["chosen"] == "z0.5" and records[1]["choice"]["queries"] == 82
    assert main(["adapt", str(data_dir("adi")), "--workdir", str(other.root), "--no-progress"]) == 0

    head = _trained_looking(4)
    head.save_pretrained(tmp_path / "head")
    write_domain(tmp_path / "head", {"0" * 64: {"name": "elsewhere", "learned_helps": True, "anchor": 0.5, "head": 0.6}})
    rerank = ["rerank", str(data_dir("adi")), "--workdir", str(other.root), "--model-dir", str(tmp_path / "head"),
              "--run-name", "adapted", "--no-progress"]
    with caplog.at_level(logging.INFO):
        assert main(rerank) == 0
    assert "ranking by the fusion `listcon adapt` chose" in caplog.text
    got = rows_by_query(read_ranked(other.rankings("test.adapted")))
    candidates = rows_by_query(read_ranked(other.candidates("test")))
    for qid, rows in candidates.items():
        z = lambda v: (v - v.mean()) / v.std()  # noqa: E731
        fused = 0.5 * z(rows["dense_score"].to_numpy().astype(float)) + 0.5 * z(rows["lexical_score"].to_numpy().astype(float))
        ids = rows["passage_id"].to_pylist()
        assert got[qid]["passage_id"].to_pylist() == [ids[i] for i in np.lexsort((np.arange(len(ids)), -fused))], qid
        assert got[qid]["round"].to_pylist() == [0] * len(ids)
    provenance = read_provenance(other.rankings("test.adapted"))
    assert provenance["learned_part"] is False and provenance["adapted_fusion"]["dense_weight"] == 0.5
    assert "fallback" not in provenance
    # the Python API over the same workdir ranks alike
    from listcon import Reranker

    api = Reranker.from_pretrained(tmp_path / "head", other.root).rerank(
        {q: rows["passage_id"].to_pylist() for q, rows in candidates.items()})
    for qid, rows in api.groupby("qid"):
        assert rows.sort_values("rank")["docno"].tolist() == got[qid]["passage_id"].to_pylist(), qid

    # `listcon status` with [adapt] enabled (what `listcon run` then does before it reranks)
    from listcon.jobs.config import load_config
    from listcon.jobs.status import status

    job = tmp_path / "job.toml"
    job.write_text(f'data = "{data_dir("adi")}"\nworkdir = "{other.root}"\n\n[adapt]\nenabled = true\n')
    assert [s.detail for s in status(load_config(job)).steps if s.step == "adapt"] == ["adapt: up to date (z0.5)"]

    (other.root / ADAPTATION_FILE).unlink()  # no record: the anchor again, every query redone
    found = {s.step: s for s in status(load_config(job)).steps}
    assert found["adapt"].detail == "adapt: not run yet (no adaptation.json)" and not found["rerank"].up_to_date
    assert main(rerank) == 0
    expected = cached_reranker(other, head.anchored()).rerank(signal_lists(other))
    assert read_ranked(other.rankings("test.adapted"))["passage_id"].to_pylist() == expected["passage_id"].to_pylist()
    assert "adapted_fusion" not in read_provenance(other.rankings("test.adapted"))
