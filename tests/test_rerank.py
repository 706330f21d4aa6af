"""The rerank step and job: batched == per query, resumable shards, bad input, the report."""

from __future__ import annotations

import json
import logging
import re
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from scipy.stats import ttest_rel

from conftest import data_dir
from listcon.jobs.cli import main
from listcon.jobs.config import Config, RerankOptions
from listcon.jobs.rerank_job import rerank
from listcon.model import ListConRanker, ListConRankerConfig, PruneSchedule
from listcon.pipeline.store.embedding_cache import EmbeddingCache, MissingPassagesError
from listcon.pipeline.evaluation.evaluate import per_query
from listcon.model.head_config import checkpoint_fingerprint
from listcon.pipeline.rerank.cached import CachedReranker
from listcon.pipeline.rerank.settings import RerankSettings
from listcon.pipeline.store.ranked_lists import (
    candidate_lists,
    iter_lists,
    read_provenance,
    read_ranked,
    read_trec,
    write_ranked,
)
from listcon.pipeline.data.readers import read_qrels, read_queries
from listcon.pipeline.rerank.shard import RerankShard
from listcon.pipeline.store.shards import ShardStore
from listcon.pipeline.store.workdir import Workdir
from listcon.schemas import CANDIDATES, RANKINGS, DataError


@pytest.fixture(scope="module")
def head_dir(tmp_path_factory):
    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("head")
    ListConRanker(ListConRankerConfig(embed_dim=384, hidden_size=64, num_heads=4, ffn_size=128)).save_pretrained(directory)
    return directory


def lists_of(work: Workdir) -> list[tuple[str, list[str]]]:
    candidates = read_ranked(work.candidates("test"))
    return candidate_lists(candidates, list(dict.fromkeys(candidates["query_id"].to_pylist())))


def reranker(work: Workdir, head_dir, theta: int = 20, **settings) -> CachedReranker:
    return CachedReranker(ListConRanker.from_pretrained(head_dir), EmbeddingCache(work.passages),
                          EmbeddingCache(work.queries), RerankSettings(**settings), PruneSchedule(theta=theta))


def candidates_rows(qids, pids, ranks, scores) -> pa.Table:
    """A candidates table whose signals simply repeat the source's score and rank."""
    n = len(qids)
    return pa.table({"query_id": qids, "passage_id": pids, "rank": pa.array(ranks, pa.int32()),
                     "score": pa.array(scores, pa.float32()), "dense_score": pa.array(scores, pa.float32()),
                     "dense_rank": pa.array(ranks, pa.int32()), "lexical_score": pa.array(scores, pa.float32()),
                     "lexical_rank": pa.array(ranks, pa.int32()), "external_score": pa.nulls(n, pa.float32()),
                     "external_rank": pa.nulls(n, pa.int32())}, schema=CANDIDATES)


def job_config(work: Workdir, head_dir, run_name: str = "listcon", shard_size: int = 32) -> Config:
    return Config(data=str(data_dir("adi")), workdir=str(work.root),
                  rerank=RerankOptions(model_dir=str(head_dir), run_name=run_name, shard_size=shard_size))


@pytest.mark.parametrize("ragged", [False, True])
def test_batched_rerank_equals_per_query_rerank(adi_embedded, head_dir, ragged):
    work = Workdir(adi_embedded)
    lists = lists_of(work)  # 35 queries x 50 candidates, as retrieval at a fixed K gives
    if ragged:
        lists = [(q, c[: 10 + i]) for i, (q, c) in enumerate(lists)]
    together = reranker(work, head_dir, memory_budget_mb=4096).rerank(lists)
    alone = pa.concat_tables([reranker(work, head_dir).rerank([item]) for item in lists])
    assert together.schema == RANKINGS
    assert together["query_id"].to_pylist() == [q for q, c in lists for _ in c]
    assert together["passage_id"].to_pylist() == alone["passage_id"].to_pylist()
    assert together["round"].to_pylist() == alone["round"].to_pylist()
    # Scores agree to float32 rounding: BLAS tiles rows, and a row at a tile's edge may be
    # summed in another order when batched (seen: 4 of 2,800 scores off by 6e-8).
    np.testing.assert_allclose(together["score"].to_numpy(), alone["score"].to_numpy(), rtol=0, atol=1e-6)


def test_theta_at_least_n_is_a_single_pass_over_the_head(adi_embedded, head_dir):
    work = Workdir(adi_embedded)
    (query, candidates), = lists_of(work)[:1]
    table = reranker(work, head_dir, theta=len(candidates)).rerank([(query, candidates)])
    head = ListConRanker.from_pretrained(head_dir)
    with torch.no_grad():
        probs = head(torch.tensor(EmbeddingCache(work.queries).take([query])),
                     torch.tensor(EmbeddingCache(work.passages).take(candidates))[None],
                     torch.ones(1, len(candidates), dtype=torch.bool))[0]
    expected = sorted(range(len(candidates)), key=lambda j: (-float(probs[j]), j))
    assert table["passage_id"].to_pylist() == [candidates[j] for j in expected]
    assert set(table["round"].to_pylist()) == {0}


def test_missing_passages_are_an_error_or_skipped_with_a_count(adi_embedded, head_dir):
    work = Workdir(adi_embedded)
    query, candidates = lists_of(work)[0]
    broken = [(query, candidates[:5] + ["ghost-1", "ghost-2"])]
    with pytest.raises(MissingPassagesError, match=r"2 id\(s\) are not in the embedding cache .*\['ghost-1', 'ghost-2'\]"):
        reranker(work, head_dir).rerank(broken)
    skipping = reranker(work, head_dir, skip_missing=True)
    table = skipping.rerank(broken)
    assert skipping.skipped_missing == 2 and sorted(table["passage_id"].to_pylist()) == sorted(candidates[:5])


def test_queries_with_no_candidates_stay_empty(adi_embedded, head_dir):
    work = Workdir(adi_embedded)
    lists = lists_of(work)[:2]
    table = reranker(work, head_dir).rerank([(lists[0][0], []), lists[1]])
    assert set(table["query_id"].to_pylist()) == {lists[1][0]}
    assert reranker(work, head_dir).rerank([(lists[0][0], [])]).num_rows == 0
    assert candidate_lists(read_ranked(work.candidates("test")), ["no-such-query"]) == [("no-such-query", [])]


def test_candidate_lists_stream_from_the_table(adi_embedded, tmp_path):
    work = Workdir(adi_embedded)
    expected = lists_of(work)
    ids = [q for q, _ in expected]
    # 7-row batches: every query's 50 rows span several batches.
    assert list(iter_lists(work.candidates("test"), ids, batch_rows=7)) == expected
    wanted = [ids[3], "no-such-query", ids[0]]  # table order first, then the ones the table lacks
    assert list(iter_lists(work.candidates("test"), wanted, batch_rows=7)) == [expected[0], expected[3], ("no-such-query", [])]
    shuffled = candidates_rows(["a", "a", "b", "b"], ["p2", "p1", "p1", "p3"], [2, 1, 1, 2], [0.5, 0.9, 0.8, 0.1])
    write_ranked(shuffled, str(tmp_path / "ranks.lance"), {})
    assert list(iter_lists(str(tmp_path / "ranks.lance"), ["a", "b"])) == [("a", ["p1", "p2"]), ("b", ["p1", "p3"])]
    split = pa.concat_tables([shuffled, shuffled.slice(0, 1)])
    write_ranked(split, str(tmp_path / "split.lance"), {})
    with pytest.raises(DataError, match=r"split.lance.*row 4 \(query 'a'\).*query_id.*must be contiguous"):
        list(iter_lists(str(tmp_path / "split.lance"), ["a", "b"]))


def test_a_head_for_other_features_is_refused(adi_embedded, tmp_path, caplog):
    ListConRanker(ListConRankerConfig(embed_dim=768, hidden_size=64, num_heads=4)).save_pretrained(tmp_path / "wide")
    with pytest.raises(ValueError, match="expects embed_dim=768, but the passage cache .* holds 384-d vectors"):
        reranker(Workdir(adi_embedded), tmp_path / "wide")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text((tmp_path / "wide" / "config.json").read_text())
    (tmp_path / "bad" / "model.safetensors").write_bytes(b"PK\x03\x04 a zip, not safetensors")
    with caplog.at_level(logging.ERROR):
        code = main(["rerank", str(data_dir("adi")), "--workdir", str(adi_embedded), "--split", "test",
                     "--model-dir", str(tmp_path / "bad")])
    assert code == 2 and "not a readable safetensors file" in caplog.text


def test_a_head_trained_on_another_encoders_features_is_refused(adi_embedded, head_dir, tmp_path, caplog):
    """Same width, other weights (e.g. a stage-2 head's tuned encoder): rerank, the Reranker and adapt --init
    refuse the cache in one line, instead of ranking by features the head never saw."""
    from listcon.pipeline.heads.directory import ENCODER_FILE
    from listcon.pipeline.rerank.reranker import Reranker
    from listcon.pipeline.store.embedding_cache import CacheMismatchError

    other = Path(shutil.copytree(head_dir, tmp_path / "other"))
    meta = EmbeddingCache(adi_embedded / "passages.lance").metadata
    (other / ENCODER_FILE).write_text(json.dumps({**meta, "fingerprint": "0" * 64}))
    line = (f"the head in {other} was trained on features of encoder {meta['model']}, but "
            f"{adi_embedded / 'passages.lance'} was embedded by {meta['model']} (head vs cache: fingerprint "
            f"'000000000000' vs '{meta['fingerprint'][:12]}'); rerank a workdir embedded with the head's encoder")
    with caplog.at_level(logging.ERROR):
        code = main(["rerank", str(data_dir("adi")), "--workdir", str(adi_embedded), "--split", "test",
                     "--model-dir", str(other), "--run-name", "other", "--no-progress"])
    assert code == 2 and len(caplog.records) == 1 and line in caplog.records[0].getMessage()
    assert not Workdir(adi_embedded).run("test", "other").exists()
    with pytest.raises(CacheMismatchError, match=re.escape(line)):
        Reranker.from_pretrained(other, adi_embedded)
    caplog.clear()
    work = shutil.copytree(adi_embedded, tmp_path / "work")
    with caplog.at_level(logging.ERROR):
        code = main(["adapt", str(data_dir("adi")), "--workdir", str(work), "--init", str(other), "--no-progress"])
    assert code == 2 and line.replace(str(adi_embedded), str(work)) in caplog.text
    assert not (work / "adaptation.json").exists() and not (work / "adaptation").exists()  # refused before any work
    (other / ENCODER_FILE).write_text(json.dumps(meta))  # the cache's own encoder: accepted
    assert Reranker.from_pretrained(other, adi_embedded).head.config == ListConRanker.from_pretrained(head_dir).config


def test_the_job_resumes_from_finished_shards(adi_embedded, head_dir, caplog, ray_session):
    work = Workdir(adi_embedded)
    data = str(data_dir("adi"))
    reference = read_ranked(rerank(job_config(work, head_dir, "reference", 4), progress=False).uri)
    # A finished run tells the provenance its shards are keyed by; then recreate what a killed
    # run leaves behind: a few finished shards (made by the same worker) and no final run file.
    rerank(job_config(work, head_dir, "resumed", 4), progress=False)
    shards_dir = Path(work.shards("test", "resumed"))
    assert not shards_dir.exists()  # cleared after a successful run
    store = ShardStore(shards_dir, read_provenance(work.rankings("test.resumed")))
    worker = RerankShard(str(head_dir), work.passages, work.queries, RerankSettings(), PruneSchedule(), store)
    lists = list(iter_lists(work.candidates("test"), _judged(data)))
    for shard in (0, 2, 5):
        worker.run(shard, lists[shard * 4 : shard * 4 + 4])
    work.run("test", "resumed").unlink()
    with caplog.at_level(logging.INFO):
        resumed = read_ranked(rerank(job_config(work, head_dir, "resumed", 4), progress=False).uri)
    assert "35 queries in 9 shards, 3 already done" in caplog.text
    assert resumed.equals(reference)
    assert read_trec(work.run("test", "resumed")) == read_trec(work.run("test", "reference"))
    assert read_provenance(work.rankings("test.resumed"))["checkpoint"] == checkpoint_fingerprint(head_dir)
    # the rankings record the arithmetic they came from, resolved ("auto" on CPU is fp32) ...
    assert read_provenance(work.rankings("test.resumed"))["arithmetic"] == {"device": "cpu", "precision": "fp32"}
    # ... so a run in other arithmetic redoes the work instead of resuming into a mixed result
    int8 = job_config(work, head_dir, "resumed", 4)
    int8 = replace(int8, rerank=replace(int8.rerank, settings=RerankSettings(precision="int8")))
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert not rerank(int8, progress=False).up_to_date
    assert "35 queries in 9 shards, 0 already done" in caplog.text
    assert read_provenance(work.rankings("test.resumed"))["arithmetic"] == {
        "device": "cpu", "precision": "int8", "int8_scoring": "one list's live candidates per call"}
    # int8 scores each list alone, so the shards' size (which lists share a batch) does not move a ranking
    rerank(replace(int8, rerank=replace(int8.rerank, run_name="int8-shards-of-7", shard_size=7)), progress=False)
    assert read_trec(work.run("test", "int8-shards-of-7")) == read_trec(work.run("test", "resumed"))
    work.run("test", "int8-shards-of-7").unlink()  # the workdir is shared: later reports must not see this copy
    shutil.rmtree(work.rankings("test.int8-shards-of-7"))
    half = replace(int8, rerank=replace(int8.rerank, settings=RerankSettings(precision="fp16")))
    with pytest.raises(ValueError, match="precision fp16 needs a CUDA device, but this runs on cpu"):
        rerank(half, progress=False)


def _judged(data: str) -> list[str]:
    from listcon.pipeline.data.readers import judged_queries

    return judged_queries(data, "test")[0]["id"].to_pylist()


def test_the_report_compares_runs_with_a_paired_test(adi_embedded, head_dir, ray_session):
    work = Workdir(adi_embedded)
    data = str(data_dir("adi"))
    rerank(job_config(work, head_dir), progress=False)
    rerank(job_config(work, head_dir), depth=20, run_name="listcon-top20", progress=False)
    assert main(["evaluate", data, "--workdir", str(adi_embedded), "--split", "test"]) == 0
    reports = work.reports("test")
    metrics = json.loads((reports / "metrics.json").read_text())
    qrels = read_qrels(data, "test")
    # adi's queries are not passages (their ids are another numbering): BEIR's self-match rule does not apply
    ours = per_query(qrels, read_trec(work.run("test", "listcon")), ["nDCG@10"])["nDCG@10"]
    base = per_query(qrels, read_trec(work.run("test", "first_stage")), ["nDCG@10"])["nDCG@10"]
    queries = sorted(ours)
    expected_p = ttest_rel([ours[q] for q in queries], [base[q] for q in queries]).pvalue
    assert metrics["runs"]["listcon"]["nDCG@10"]["p_vs_baseline"] == pytest.approx(expected_p)
    assert metrics["queries"] == 35
    for plot in ("metric_per_run.png", "metric_vs_depth.png", "delta_histogram.png"):
        assert (reports / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (reports / "report.md").read_text()
    assert "| listcon-top20 |" in report and metrics["drop_self"] == "auto" and metrics["self_dropped_queries"] == 0
    assert "No passage is dropped as its query's own" in report
    runs = list(metrics["runs"])
    assert runs.index("first_stage") < runs.index("listcon-top20") < runs.index("listcon")  # first stages, then by depth
    assert metrics["runs"]["listcon"]["nDCG@10"]["ci95"] > 0 and metrics["same_as"] == {"hybrid-convex": "first_stage"}
    assert set(metrics["main_vs_first_stages"]) == {"dense", "lexical", "hybrid-rrf", "first_stage"}
    check_html_report(reports / "report.html", work, data)


def check_html_report(path: Path, work: Workdir, data: str) -> None:
    """report.html is one file (no address outside it), and its per-query view holds every judged query's
    text, its judged passages with their texts and grades, and each run's top 5 as its TREC run has them."""
    page = path.read_text()
    assert "http://" not in page and "https://" not in page and page.count("data:image/png;base64,") == 3
    view = json.loads(re.search(r'<script type="application/json" id="data">(.*?)</script>', page, re.S)[1])
    qrels = read_qrels(data, "test")
    assert len(view["rows"]) == 35 and view["main"] == "listcon" and view["first"] in view["runs"]
    assert "first_stage (= hybrid-convex)" in view["runs"] and "hybrid-convex" not in view["runs"]
    queries = dict(zip(*(read_queries(data)[c].to_pylist() for c in ("id", "text"))))
    assert view["queries"] == {r["qid"]: queries[r["qid"]] for r in view["rows"]}
    judged = {(q, p): g for q, p, g in zip(*(qrels[c].to_pylist() for c in ("query_id", "passage_id", "relevance")))}
    assert {(q, p): g for q, grades in view["judged"].items() for p, g in grades.items()} == judged
    assert all(view["texts"][p] for _, p in judged)
    listcon = read_trec(work.run("test", "listcon"))
    for row in view["rows"]:
        q = row["qid"]
        best = sorted(listcon[q].items(), key=lambda item: (-item[1], item[0]))[:5]
        assert [tuple(x) for x in view["top"]["listcon"][q]] == [(p, pytest.approx(s)) for p, s in best]
        assert row["delta"] == pytest.approx(row["main"] - row["first"])


def test_a_shard_store_deletes_nothing_until_asked(tmp_path):
    stale = tmp_path / "shards" / "other-inputs"
    stale.mkdir(parents=True)
    store = ShardStore(tmp_path / "shards", {"run": "a"})
    assert stale.exists()  # constructing it is side-effect free
    store.discard_others()
    assert not stale.exists()


def test_the_report_leaves_matplotlib_as_it_found_it(tmp_path):
    import matplotlib

    from listcon.pipeline.evaluation.report import write_report

    before = matplotlib.rcParams["backend"]
    per_run = {"first_stage": {"nDCG@10": {"q1": 0.5, "q2": 0.7}}, "listcon": {"nDCG@10": {"q1": 0.6, "q2": 0.9}}}
    write_report(tmp_path, "t", per_run, ["nDCG@10"], "first_stage", "listcon", {})
    assert matplotlib.rcParams["backend"] == before and (tmp_path / "metric_per_run.png").is_file()


def test_a_mean_over_queries_is_the_same_in_every_process():
    """Means sum in sorted query order: with a set's order (per-process string hashing) a resumed
    training run picked another best epoch over a 1e-16 difference in validation nDCG."""
    import subprocess
    import sys

    script = (
        "import random\n"
        "import pyarrow as pa\n"
        "from listcon.pipeline.evaluation.evaluate import aggregate, per_query\n"
        "from listcon.schemas import QRELS\n"
        "r = random.Random(0)\n"
        "qrels = pa.Table.from_pylist([{'query_id': f'q{i}', 'passage_id': f'p{r.randrange(50)}', 'relevance': 1}"
        " for i in range(300)], schema=QRELS)\n"
        "run = {f'q{i}': {f'p{j}': r.random() for j in range(50)} for i in range(300)}\n"
        "print(repr(aggregate(per_query(qrels, run, ['nDCG@10']))['nDCG@10']))\n")
    means = {subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                            env={**__import__("os").environ, "PYTHONHASHSEED": str(seed)}).stdout for seed in range(4)}
    assert len(means) == 1, means
