"""SIGINT and SIGTERM stop any step cleanly: the job's process group exits within 10 s with 130 / 143,
commits nothing half-done, leaves no process of its session (its private Ray included) 10 s later, and a
rerun resumes to exactly what an uninterrupted run gives. The signal goes to the whole process group, as
a terminal's Ctrl-C and a scheduler stopping a job send it. One case per step runs in `make test`.
"""

from __future__ import annotations

import shutil
import signal
import time
from pathlib import Path

import lance
import numpy as np
import pytest

from conftest import kill_when, session_processes
from listcon.jobs.lock import LOCK_FILE
from listcon.jobs.run_records import read_records
from listcon.pipeline.store.workdir import Workdir
from listcon.pipeline.store.ranked_lists import read_trec
from test_faults import CLI, DATA, ENV, base, run  # noqa: F401 (base: the embedded, mined adi workdir and a head)


def stopped(argv: list[str], ready, sig: int, log: Path) -> None:
    """Signal the step's process group once ``ready()``: exit 128 + sig within 10 s, nothing of it left 10 s later."""
    result = kill_when([*CLI, *argv, "--no-progress"], ready, ENV, timeout=600, sig=sig, stderr=log)
    assert result is not None, "the step finished before it could be interrupted"
    code, seconds, session = result
    assert code == 128 + sig and seconds < 10, (code, seconds, log.read_text()[-2000:])
    deadline = time.time() + 10
    while session_processes(session) and time.time() < deadline:
        time.sleep(0.5)
    assert not session_processes(session), f"alive 10 s after the job: {session_processes(session)}"


def holding(work: Path, job: str) -> bool:
    """Whether ``job`` holds the workdir's writer lock now (the lock file names its holder while held)."""
    lock = work / LOCK_FILE
    return lock.is_file() and f'"job": "{job}"' in lock.read_text()


def table(uri: Path, key: str):
    return lance.dataset(str(uri)).to_table().sort_by(key)


def case(step: str, sig: int, fast: bool):
    return pytest.param(step, sig, id=f"{step}-{signal.Signals(sig).name}", marks=() if fast else pytest.mark.slow)


CASES = [case("embed", signal.SIGINT, True), case("embed", signal.SIGTERM, False),
         case("retrieve", signal.SIGTERM, True), case("retrieve", signal.SIGINT, False),
         case("train", signal.SIGINT, True), case("train", signal.SIGTERM, False),
         case("rerank", signal.SIGTERM, True), case("rerank", signal.SIGINT, False)]


@pytest.mark.parametrize("step, sig", CASES)
def test_a_signal_stops_the_step_and_a_rerun_resumes_to_the_same_output(base, tmp_path, step, sig):
    head = str(base.parent / "head")
    work, log = tmp_path / "w", tmp_path / "stderr.log"
    shutil.copytree(base, work, ignore=shutil.ignore_patterns(LOCK_FILE))
    if step == "embed":  # a fresh cache, committed 8 rows at a time: stopped between two commits
        argv = lambda w: ["embed", DATA, "--workdir", str(w), "--chunk-rows", "8", "--batch-size", "8"]  # noqa: E731
        run(argv(tmp_path / "ref"))
        shutil.rmtree(work / "passages.lance")
        stopped(argv(work), lambda: (work / "passages.lance").is_dir(), sig, log)
        run(argv(work))
        got, expected = table(work / "passages.lance", "id"), table(tmp_path / "ref" / "passages.lance", "id")
        assert got.drop_columns(["vector"]).equals(expected.drop_columns(["vector"]))  # every row once, none lost
        # the resumed rows were batched with other texts (padding): equal to float rounding
        np.testing.assert_allclose(np.stack(got["vector"].to_numpy(zero_copy_only=False)),
                                   np.stack(expected["vector"].to_numpy(zero_copy_only=False)), rtol=0, atol=1e-5)
    elif step == "retrieve":
        shutil.rmtree(work / "candidates")
        argv = ["retrieve", DATA, "--workdir", str(work), "--split", "test", "--k", "50"]
        stopped(argv, lambda: holding(work, "retrieve"), sig, log)  # it holds the workdir: loading, or retrieving
        run(argv)
        assert table(work / "candidates" / "test.lance", "passage_id").sort_by([("query_id", "ascending"), (
            "rank", "ascending")]).equals(table(base / "candidates" / "test.lance", "passage_id").sort_by(
            [("query_id", "ascending"), ("rank", "ascending")]))
    elif step == "train":
        args = lambda out: ["train", DATA, "--workdir", str(work), "--split", "test", "--epochs", "4",  # noqa: E731
                            "--patience", "10", "--out", str(out), "--first-stage-prior"]
        run(args(tmp_path / "ref"))
        stopped(args(tmp_path / "head"), (tmp_path / "head" / "checkpoints" / "epoch-0001").is_dir, sig, log)
        assert not (tmp_path / "head" / "train_result.json").exists()  # unfinished: nothing reranks with it
        run(args(tmp_path / "head"))
        for name in ("model.safetensors", "config.json"):
            assert (tmp_path / "head" / name).read_bytes() == (tmp_path / "ref" / name).read_bytes()
    else:
        argv = lambda w: ["rerank", DATA, "--workdir", str(w), "--model-dir", head, "--shard-size", "2"]  # noqa: E731
        reference = Path(shutil.copytree(base, tmp_path / "ref", ignore=shutil.ignore_patterns(LOCK_FILE)))
        run(argv(reference))
        marks = work / "rankings" / ".test.listcon.shards"
        stopped(argv(work), lambda: len(list(marks.rglob("shard-*.parquet"))) >= 2, sig, log)
        run(argv(work))
        assert read_trec(work / "runs" / "test.listcon.trec") == read_trec(reference / "runs" / "test.listcon.trec")
        assert table(work / "rankings" / "test.lance", "passage_id").equals(
            table(reference / "rankings" / "test.lance", "passage_id"))
    ends = [(r["step"], r["status"], r["exit"]) for r in read_records(Workdir(work))]
    assert (step, "interrupted", 128 + sig) in ends and ends[-1] == (step, "done", 0)  # the run records say so


def test_an_error_raised_once_a_stop_signal_arrived_is_the_interruption(adi_embedded, tmp_path, monkeypatch, caplog):
    """A library may turn the handler's KeyboardInterrupt into its own error (lance: an OSError when it surfaces in
    a stream lance pulls; an error in some cleanup on the way out): the step still exits 128 + signal, says it
    was interrupted, is recorded so, commits nothing, and a rerun resumes. Not a bad-input exit 2."""
    from listcon.jobs import retrieve_job
    from listcon.jobs.cli import main

    work = Path(shutil.copytree(adi_embedded, tmp_path / "w", ignore=shutil.ignore_patterns(LOCK_FILE, "runs.jsonl")))
    shutil.rmtree(work / "candidates")
    argv = ["retrieve", DATA, "--workdir", str(work), "--split", "test", "--k", "50", "--no-progress"]

    def stopped_inside_a_library(reader, uri, provenance):
        try:
            signal.raise_signal(signal.SIGTERM)  # delivered to the handler the command line installs
        except KeyboardInterrupt as err:
            raise OSError(f"LanceError(Arrow): Python exception: {err!r}") from err

    monkeypatch.setattr(retrieve_job, "write_ranked", stopped_inside_a_library)
    before = signal.getsignal(signal.SIGTERM)
    assert main(argv) == 128 + signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) == before  # an in-process caller gets its handler back
    assert "interrupted by SIGTERM: nothing half-done was committed" in caplog.text
    assert not (work / "candidates" / "test.lance").exists()
    assert [(r["status"], r["exit"]) for r in read_records(Workdir(work))] == [("interrupted", 128 + signal.SIGTERM)]
    monkeypatch.undo()
    assert main(argv) == 0
    assert table(work / "candidates" / "test.lance", "passage_id").sort_by([("query_id", "ascending"), (
        "rank", "ascending")]).equals(table(adi_embedded / "candidates" / "test.lance", "passage_id").sort_by(
            [("query_id", "ascending"), ("rank", "ascending")]))
