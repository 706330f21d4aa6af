"""Hostile input to the command line: a one-line error (exit 2) naming what is wrong, no traceback,
nothing written, and nothing started (no Ray) before the input has been checked."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from conftest import data_dir
from listcon.jobs.cli import main
from listcon.jobs.lock import LOCK_FILE
from listcon.model import ListConRanker, ListConRankerConfig


def tree(root: Path) -> dict[str, float]:
    """Every file and its mtime, except the writer lock a job takes and releases and the run records it appends."""
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in sorted(root.rglob("*"))
            if p.name not in (LOCK_FILE, "runs.jsonl")}


@pytest.fixture(scope="module")
def heads(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bad-heads")
    torch.manual_seed(0)
    ListConRanker(ListConRankerConfig(embed_dim=16, hidden_size=16, num_heads=2, ffn_size=32)).save_pretrained(root / "narrow")
    ListConRanker(ListConRankerConfig(hidden_size=16, num_heads=2, ffn_size=32)).save_pretrained(root / "fits")
    for name, config in (("array", [1, 2]), ("zero-heads", {"format": "listcon-head/1", "num_heads": 0}),
                         ("string", {"format": "listcon-head/1", "hidden_size": "wide"})):
        shutil.copytree(root / "narrow", root / name)
        (root / name / "config.json").write_text(json.dumps(config))
    shutil.copytree(root / "fits", root / "unfinished")  # a training that started (its marker) and never ended
    (root / "unfinished" / "checkpoints").mkdir()
    (root / "unfinished" / "checkpoints" / "provenance.json").write_text("{}")
    return root


@pytest.fixture(scope="module")
def bad(tmp_path_factory, adi_embedded) -> Path:
    """adi data directories with one thing wrong each (corpus and queries linked), and bad external runs."""
    root = tmp_path_factory.mktemp("bad-data")
    adi = data_dir("adi")
    qrels = (adi / "qrels" / "test.tsv").read_text()
    variants = {
        "phantom-query": qrels + "9999\t17\t1\n",          # a query that is not in queries.jsonl
        "unknown-passage": qrels + "1\t99999\t1\n",        # a passage that is not in the corpus
        "header-only": "query-id\tcorpus-id\tscore\n",      # no judgment: every measure would be 0
    }
    for name, text in variants.items():
        (root / name / "qrels").mkdir(parents=True)
        for f in ("corpus.jsonl", "queries.jsonl"):
            (root / name / f).symlink_to(adi / f)
        (root / name / "qrels" / "test.tsv").write_text(text)
    corpus = [json.loads(line) for line in (adi / "corpus.jsonl").read_text().splitlines()]
    for name, rows in (("changed-passage", [{**corpus[0], "text": corpus[0]["text"] + " revised"}, *corpus[1:]]),
                       ("removed-passage", corpus[1:])):
        (root / name / "qrels").mkdir(parents=True)
        (root / name / "queries.jsonl").symlink_to(adi / "queries.jsonl")
        (root / name / "qrels" / "test.tsv").write_text(qrels.replace(f"\t{corpus[0]['_id']}\t", "\t2\t"))
        (root / name / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    lexical = (adi_embedded / "runs" / "test.lexical.trec").read_text().splitlines()
    (root / "empty.trec").write_text("")
    (root / "one-query.trec").write_text("\n".join(l for l in lexical if l.split()[0] == "1") + "\n")
    (root / "unknown-query.trec").write_text("\n".join(lexical + ["9999 Q0 17 1 3.5 other"]) + "\n")
    return root


CASES = [
    # names the pipeline writes itself are not a user's to take
    (["rerank", "{data}", "--workdir", "{work}", "--model-dir", "{heads}/fits", "--run-name", "first_stage"],
     "run name 'first_stage' is reserved: the retrieve step writes"),
    (["rerank", "{data}", "--workdir", "{work}", "--model-dir", "{heads}/fits", "--run-name", "hybrid-rrf"],
     "run name 'hybrid-rrf' is reserved"),
    (["rerank", "{data}", "--workdir", "{work}", "--model-dir", "{heads}/fits", "--run-name", "listcon-top20"],
     "run name 'listcon-top20' is reserved: <run>-top<N> names"),
    # a run that would replace the candidates with nothing, a fragment, or ids nobody knows
    (["retrieve", "{data}", "--workdir", "{work}", "--from-run", "{bad}/empty.trec"], "the run is empty"),
    (["retrieve", "{data}", "--workdir", "{work}", "--from-run", "{bad}/one-query.trec"],
     "the run lacks 34 of the split's 35 queries"),
    (["retrieve", "{data}", "--workdir", "{work}", "--from-run", "{bad}/unknown-query.trec"],
     "query '9999' is not in the collection's queries"),
    (["retrieve", "{data}", "--workdir", "{work}", "--run-order", "pool"],
     "run_order = 'pool' needs from_run: the run that gives each query's candidate pool"),
    # qrels that do not match the data
    (["evaluate", "{bad}/phantom-query", "--workdir", "{work}"], "1 query id(s) are not in the query collection"),
    (["evaluate", "{bad}/unknown-passage", "--workdir", "{work}"], "1 corpus id(s) are not in the corpus, e.g. ['99999']"),
    (["retrieve", "{bad}/unknown-passage", "--workdir", "{work}"], "pass --unknown-passages count"),
    (["evaluate", "{bad}/header-only", "--workdir", "{work}"], "no judgments"),
    (["evaluate", "{data}", "--workdir", "{work}", "--measures", "nDCG@ten"], "measure 'nDCG@ten' is not an ir-measures"),
    # a corpus changed since embed: every step that ranks or scores refuses the stale cache
    *[([step, "{bad}/changed-passage", "--workdir", "{work}", *extra],
       "changed since the passage cache in") for step, extra in (("retrieve", []), ("mine", ["--split", "test"]),
                                                                 ("rerank", ["--model-dir", "{heads}/fits"]), ("evaluate", []))],
    (["rerank", "{bad}/removed-passage", "--workdir", "{work}", "--model-dir", "{heads}/fits"],
     "(0 new, 0 changed, 1 removed); rerank would rank with the old passages"),
    # stale or missing state, and unclear errors made clear
    (["rerank", "{data}", "--workdir", "{work}", "--model-dir", "{heads}/unfinished"],
     "did not finish (no train_result.json): its head is a mid-training epoch's"),
    (["retrieve", "{data}", "--workdir", "{bad}/never-embedded"], "no passage cache at"),
    (["index", "--workdir", "{work}", "--kind", "ivf", "--nlist", "1000"],
     "nlist=1000 IVF lists need at least 1000 passages to train, but the cache holds 82"),
    (["train", "{data}", "--workdir", "{work}", "--split", "test", "--extra", "ghost=/nonexistent/ghost@{bad}/ghost-work"],
     "[[train.extra]] 'ghost': its data /nonexistent/ghost does not exist"),
    # numbers out of their range, refused before any work, alike from flags and TOML
    (["embed", "{data}", "--workdir", "{work}", "--max-length", "0"], "max_length must be an integer at least 1; got 0"),
    (["index", "--workdir", "{work}", "--k1", "-1"], "k1 must be a finite number at least 0; got -1.0"),
    (["index", "--workdir", "{work}", "--b", "1.5"], "b must be a finite number at least 0 and at most 1"),
    (["retrieve", "{data}", "--workdir", "{work}", "--fusion", "rrf", "--rrf-k", "-60"], "rrf_k must be an integer at least 0"),
    (["retrieve", "{data}", "--workdir", "{work}", "--convex-weight", "nan"], "convex_weight must be a finite number"),
    (["retrieve", "{data}", "--workdir", "{work}", "--k", "0"], "k must be an integer at least 1; got 0"),
    (["train", "{data}", "--workdir", "{work}", "--split", "test", "--lr", "nan"], "lr must be a finite number at least 0; got nan"),
    (["train", "{data}", "--workdir", "{work}", "--split", "test", "--lr", "inf"], "lr must be a finite number at least 0; got inf"),
    (["train", "{data}", "--workdir", "{work}", "--split", "test", "--epochs", "0"], "epochs must be an integer at least 1"),
    (["train", "{data}", "--workdir", "{work}", "--split", "test", "--dropout", "1.5"], "dropout must be a finite number"),
    (["mine", "{data}", "--workdir", "{work}", "--split", "test", "--holdout-fraction", "1.5"],
     "holdout_fraction must be a finite number at least 0 and at most 0.9"),
    (["rerank", "{data}", "--workdir", "{work}", "--model-dir", "{heads}/fits", "--beta", "0"],
     "beta must be a finite number above 0 and at most 1; got 0.0"),
    (["rerank", "{data}", "--workdir", "{work}", "--model-dir", "{heads}/fits", "--theta", "-5"],
     "theta must be an integer at least 1"),
    (["embed", "{data}", "--workdir", "{work}", "--concurrency", "0"], "concurrency must be at least 1 encoder actor"),
    (["embed", "{data}", "--workdir", "{work}", "--cpus-per-actor", "0"], "cpus_per_actor must be positive"),
    (["rerank", "{data}", "--workdir", "{work}", "--model-dir", "{heads}/fits", "--run-name", "x/../../../ESCAPED"],
     "run name 'x/../../../ESCAPED' may only use letters, digits"),
    (["retrieve", "{data}", "--workdir", "{work}", "--split", "../test"], "split '../test' may only use letters"),
    (["rerank", "{data}", "--workdir", "{work}", "--model-dir", "{heads}/narrow"],
     "the checkpoint expects embed_dim=16, but the passage cache"),
    (["rerank", "{data}", "--workdir", "{work}", "--model-dir", "{heads}/array"], "is not a listcon-head/1 config"),
    (["rerank", "{data}", "--workdir", "{work}", "--model-dir", "{heads}/zero-heads"], "num_heads must be an integer at least 1; got 0"),
    (["rerank", "{data}", "--workdir", "{work}", "--model-dir", "{heads}/string"], "hidden_size"),
    (["rerank", "{data}", "--workdir", "{work}", "--model-dir", "{heads}/fits", "--precision", "fp16"],
     "precision fp16 needs a CUDA device, but this runs on cpu"),
]


@pytest.mark.parametrize("args,message", CASES, ids=[" ".join(a[:1] + a[3:]) for a, _ in CASES])
def test_bad_input_is_one_clear_line_and_changes_nothing(adi_embedded, heads, bad, caplog, args, message):
    before = tree(adi_embedded)
    filled = [a.format(data=data_dir("adi"), work=adi_embedded, heads=heads, bad=bad) for a in args]
    assert main(filled) == 2
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and message in errors[0].getMessage() and "\n" not in errors[0].getMessage()
    assert not errors[0].exc_info  # no traceback without -v
    assert tree(adi_embedded) == before
    assert not (adi_embedded.parent / "ESCAPED.trec").exists()


def test_a_workdir_that_is_a_file_is_refused_before_anything_runs(tmp_path, caplog):
    (tmp_path / "w").write_text("not a directory")
    assert main(["embed", str(data_dir("adi")), "--workdir", str(tmp_path / "w")]) == 2
    assert "workdir" in caplog.text and "exists and is not a directory" in caplog.text


@pytest.mark.parametrize("damage", ["empty", "truncated"])
def test_a_broken_encoder_directory_is_a_named_error(tiny_bert_dir, tmp_path, caplog, damage):
    broken = tmp_path / "encoder"
    if damage == "empty":
        broken.mkdir()
    else:
        shutil.copytree(tiny_bert_dir, broken)
        weights = broken / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    assert main(["embed", str(data_dir("adi")), "--workdir", str(tmp_path / "w"), "--model", str(broken)]) == 2
    assert f"encoder {broken} cannot be loaded" in caplog.text and "Traceback" not in caplog.text
    assert not (tmp_path / "w" / "passages.lance").exists()



# -- inputs that are not errors, and what they give ------------------------------------------------


@pytest.fixture
def copy(adi_embedded, tmp_path) -> Path:
    return Path(shutil.copytree(adi_embedded, tmp_path / "w"))


def _metrics(work: Path) -> dict:
    return json.loads((work / "reports" / "test" / "metrics.json").read_text())


def test_the_self_match_rule_drops_only_a_passage_that_is_its_query(copy, tmp_path):
    """adi judges 4 (query, passage) pairs whose ids coincide; they are real answers, not the query itself."""
    from listcon.pipeline.data.readers import read_qrels
    from listcon.pipeline.evaluation.evaluate import per_query, without_self
    from listcon.pipeline.store.ranked_lists import read_trec

    adi = data_dir("adi")
    qrels = read_qrels(adi, "test")
    same_id = [(q, p) for q, p, r in zip(*(qrels[c].to_pylist() for c in ("query_id", "passage_id", "relevance")))
               if q == p and r > 0]
    assert len(same_id) == 4
    assert main(["evaluate", str(adi), "--workdir", str(copy)]) == 0
    run = read_trec(copy / "runs" / "test.first_stage.trec")
    kept = per_query(qrels, run, ["nDCG@10"])["nDCG@10"]
    assert _metrics(copy)["runs"]["first_stage"]["nDCG@10"]["mean"] == pytest.approx(sum(kept.values()) / len(kept))
    assert _metrics(copy)["self_dropped_queries"] == 0
    # a collection whose query 1 is passage 1's own text: auto drops that passage from query 1's lists only
    data = tmp_path / "selfish"
    (data / "qrels").mkdir(parents=True)
    (data / "corpus.jsonl").symlink_to(adi / "corpus.jsonl")
    (data / "qrels" / "test.tsv").symlink_to(adi / "qrels" / "test.tsv")
    passage = json.loads((adi / "corpus.jsonl").read_text().splitlines()[0])
    lines = [json.loads(l) for l in (adi / "queries.jsonl").read_text().splitlines()]
    lines = [{**q, "text": " ".join(t for t in (passage["title"], passage["text"]) if t)} if q["_id"] == passage["_id"] else q
             for q in lines]
    (data / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in lines))
    assert main(["evaluate", str(data), "--workdir", str(copy)]) == 0
    dropped = per_query(qrels, without_self(run, {passage["_id"]}), ["nDCG@10"])["nDCG@10"]
    assert _metrics(copy)["self_dropped_queries"] == 1
    assert _metrics(copy)["runs"]["first_stage"]["nDCG@10"]["mean"] == pytest.approx(sum(dropped.values()) / len(dropped))
    assert main(["evaluate", str(adi), "--workdir", str(copy), "--drop-self", "always"]) == 0
    assert _metrics(copy)["self_dropped_queries"] == 35  # every query has a same-id passage in adi: all dropped


def test_a_stray_file_among_the_runs_is_named_and_left_out(copy, caplog):
    (copy / "runs" / "test.notes.trec").write_text("these are my notes\n")
    assert main(["evaluate", str(data_dir("adi")), "--workdir", str(copy)]) == 0
    assert "test.notes.trec is not a TREC run and is left out of the report" in caplog.text
    assert "notes" not in _metrics(copy)["runs"] and "Left out, not TREC runs: test.notes.trec" in \
        (copy / "reports" / "test" / "report.md").read_text()


def test_a_run_lacking_queries_ranks_them_empty_only_when_asked(copy, bad, caplog):
    from listcon.pipeline.store.ranked_lists import read_ranked

    assert main(["retrieve", str(data_dir("adi")), "--workdir", str(copy), "--from-run", str(bad / "one-query.trec"),
                 "--missing-queries", "empty", "--no-progress"]) == 0
    assert set(read_ranked(str(copy / "candidates" / "test.lance"))["query_id"].to_pylist()) == {"1"}
    assert "the external run lacks 34 of the split's 35 queries" in caplog.text


def test_unknown_judged_passages_are_counted_when_asked(copy, bad, caplog):
    assert main(["evaluate", str(bad / "unknown-passage"), "--workdir", str(copy), "--unknown-passages", "count"]) == 0
    assert "1 judged passage(s) are not in the corpus (e.g. ['99999'])" in caplog.text


def test_a_stale_cache_is_used_only_when_asked_and_then_named(copy, bad, caplog):
    assert main(["evaluate", str(bad / "changed-passage"), "--workdir", str(copy), "--stale-corpus", "proceed"]) == 0
    assert "(0 new, 1 changed, 0 removed)" in caplog.text and "proceeding: --stale-corpus proceed" in caplog.text


def test_an_unreachable_cluster_is_one_line_within_a_bounded_wait(tmp_path):
    """Ray retries an address nobody answers at for ever; the job gives up at once (refused) or after
    CONNECT_TIMEOUT_S, naming the address (a process of its own: the test session's Ray is up)."""
    import subprocess
    import sys
    import time

    from listcon.jobs.runtime import check_reachable

    with pytest.raises(ValueError, match=r"--ray-address 'nowhere' is not host:port"):
        check_reachable("nowhere")
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "listcon.jobs.cli", "embed", str(data_dir("adi")), "--workdir",
                           str(tmp_path / "w"), "--ray-address", "127.0.0.1:1", "--no-progress"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and time.monotonic() - started < 60
    lines = [l for l in done.stderr.splitlines() if l.strip()]
    assert "no Ray cluster answers at --ray-address 127.0.0.1:1" in lines[-1] and "Traceback" not in done.stderr


def test_a_failed_training_leaves_no_head_and_no_marker(adi_embedded, bad, tmp_path, caplog):
    """A training that fails (here: its --init checkpoint does not exist) leaves nothing a rerank could take
    for a head, nor the marker of an unfinished training."""
    out = tmp_path / "head"
    work = Path(shutil.copytree(adi_embedded, tmp_path / "w2"))
    assert main(["mine", str(data_dir("adi")), "--workdir", str(work), "--split", "test"]) == 0
    code = main(["train", str(data_dir("adi")), "--workdir", str(work), "--split", "test", "--out", str(out),
                 "--init", str(tmp_path / "no-such-head"), "--epochs", "1"])
    assert code == 2
    assert not (out / "checkpoints").exists() and not (out / "config.json").exists()
    assert not (out / "model.safetensors").exists()
