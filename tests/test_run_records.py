"""W/runs.jsonl: one record per job, whatever its end, that a scheduler can read."""

from __future__ import annotations

import shutil
import signal
from pathlib import Path

import pytest

from conftest import data_dir
from listcon.jobs import run_records
from listcon.jobs.cli import _interrupt, main
from listcon.jobs.config import config_from_dict
from listcon.jobs.lock import LOCK_FILE
from listcon.jobs.run_records import read_records
from listcon.jobs.runtime import RECEIVED_SIGNALS
from listcon.pipeline.store.workdir import Workdir


def test_every_step_appends_what_it_did_and_how_it_ended(adi_embedded, tmp_path):
    work = Workdir(Path(shutil.copytree(adi_embedded, tmp_path / "w", ignore=shutil.ignore_patterns(LOCK_FILE, "runs.jsonl"))))
    adi = str(data_dir("adi"))
    assert main(["retrieve", adi, "--workdir", str(work.root), "--split", "test", "--k", "50", "--no-progress"]) == 0
    assert main(["retrieve", adi, "--workdir", str(work.root), "--split", "test", "--k", "40", "--no-progress"]) == 0
    assert main(["evaluate", adi, "--workdir", str(work.root), "--measures", "nDCG@10"]) == 0
    (tmp_path / "bad" / "qrels").mkdir(parents=True)
    for name in ("corpus.jsonl", "queries.jsonl"):
        (tmp_path / "bad" / name).symlink_to(data_dir("adi") / name)
    (tmp_path / "bad" / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n9999\t1\t1\n")
    assert main(["evaluate", str(tmp_path / "bad"), "--workdir", str(work.root)]) == 2
    records = read_records(work)
    assert [(r["step"], r["status"], r["exit"]) for r in records] == [
        ("retrieve", "up to date", 0), ("retrieve", "done", 0), ("evaluate", "done", 0), ("evaluate", "error", 2)]
    up_to_date, redone = records[0], records[1]
    assert up_to_date["result"]["queries"] == 35 and up_to_date["result"]["k"] == 50
    assert up_to_date["tables_before"] == up_to_date["tables_after"]  # nothing to do: no version moved
    moved = {t for t in redone["tables_after"] if redone["tables_after"][t] != redone["tables_before"].get(t)}
    assert moved == {"candidates/test.lance"} and redone["result"]["k"] == 40
    assert records[2]["config_digest"] != records[3]["config_digest"]
    assert "1 query id(s) are not in the query collection" in records[3]["error"]
    for record in records:
        assert record["start"] <= record["end"] and record["seconds"] >= 0 and set(record) >= {"git", "pid"}


def test_a_signal_while_the_record_reads_the_tables_is_recorded_as_an_interruption(adi_embedded, tmp_path, monkeypatch):
    """The job holds the lock from before its record starts: a stop landing in between must still leave a record."""
    work = Path(shutil.copytree(adi_embedded, tmp_path / "w", ignore=shutil.ignore_patterns(LOCK_FILE, "runs.jsonl")))
    reads = []

    def versions_then_stopped(w):
        reads.append(w)
        if len(reads) == 1:
            signal.raise_signal(signal.SIGTERM)  # delivered to the handler the command line installs
        return {}

    monkeypatch.setattr(run_records, "table_versions", versions_then_stopped)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        with pytest.raises(KeyboardInterrupt):
            with run_records.recorded("retrieve", config_from_dict({"workdir": str(work)})):
                raise AssertionError("the step must not start")
    finally:
        signal.signal(signal.SIGTERM, previous)
        RECEIVED_SIGNALS.clear()
    [record] = read_records(Workdir(work))
    assert (record["step"], record["status"], record["exit"]) == ("retrieve", "interrupted", 128 + signal.SIGTERM)
