"""One writer per workdir: a second job fails naming the first (or waits with --wait); a killed
holder leaves no stale lock; the lock is re-entrant within a process."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

import pytest

from listcon.jobs.cli import main
from listcon.jobs.lock import WorkdirLocked, workdir_lock

HOLD = textwrap.dedent("""
    import sys, time
    from listcon.jobs.lock import workdir_lock
    with workdir_lock(sys.argv[1], "embed"):
        print("held", flush=True)
        time.sleep(float(sys.argv[2]))
""")


def holder(root, seconds: float) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(root), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_writer_fails_naming_the_first_then_a_killed_holder_leaves_no_lock(tmp_path, caplog):
    proc = holder(tmp_path, 60)
    try:
        assert main(["index", "--workdir", str(tmp_path)]) == 2
        assert f"workdir {tmp_path} is being written by listcon embed (pid {proc.pid}" in caplog.text
        assert "--wait" in caplog.text
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with workdir_lock(tmp_path, "index"):  # the kernel released the dead holder's lock: nothing stale
        pass


def test_wait_queues_behind_the_holder(tmp_path, caplog):
    proc = holder(tmp_path, 2)
    with caplog.at_level("INFO"):
        with workdir_lock(tmp_path, "rerank", wait=True):
            pass
    assert proc.wait(timeout=30) == 0  # the holder finished its work undisturbed
    assert "rerank: waiting for listcon embed" in caplog.text  # and we were queued behind it


def test_the_lock_is_reentrant_within_a_process_and_exclusive_across(tmp_path):
    with workdir_lock(tmp_path, "run"):
        with workdir_lock(tmp_path, "embed"):  # `listcon run` holds it across its steps
            pass
        other = subprocess.run([sys.executable, "-c", HOLD, str(tmp_path), "0"], capture_output=True, text=True)
        assert other.returncode != 0 and "WorkdirLocked" in other.stderr
    with pytest.raises(WorkdirLocked, match="being written by listcon embed"):
        proc = holder(tmp_path, 60)
        try:
            with workdir_lock(tmp_path, "train"):
                pass
        finally:
            proc.kill()
            proc.wait()


@pytest.mark.slow
def test_two_embeds_and_two_reranks_at_once_never_duplicate_or_delete(tmp_path, tiny_bert_dir, adi_embedded):
    """The reported overlaps: two embeds of one workdir (220 rows for 150 ids before), two reranks of
    one split (one deleted the other's shards). Both kinds now serialise (--wait) or refuse cleanly."""
    import shutil

    import lance

    from conftest import data_dir
    from listcon.jobs.lock import LOCK_FILE

    data = str(data_dir("adi"))
    listcon = [sys.executable, "-m", "listcon.jobs.cli"]

    def together(*commands):
        procs = [subprocess.Popen(c, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for c in commands]
        return [(p.wait(timeout=600), p.stderr.read()) for p in procs]

    embed = [*listcon, "embed", data, "--workdir", str(tmp_path / "e"), "--model", str(tiny_bert_dir), "--no-progress"]
    results = together([*embed, "--wait"], [*embed, "--wait"])
    assert [code for code, _ in results] == [0, 0], results
    table = lance.dataset(str(tmp_path / "e" / "passages.lance")).to_table(columns=["id"])
    assert table.num_rows == len(set(table["id"].to_pylist())) == 82
    results = together(embed, [*embed, "--rebuild"])  # without --wait: serial by luck, or one clean refusal
    assert sorted(code for code, _ in results) in ([0, 0], [0, 2])
    assert all("being written by listcon embed" in err for code, err in results if code == 2)

    work = tmp_path / "r"
    shutil.copytree(adi_embedded, work, ignore=shutil.ignore_patterns(LOCK_FILE))
    head = tmp_path / "head"
    torch_head(head)
    rerank = [*listcon, "rerank", data, "--workdir", str(work), "--model-dir", str(head), "--no-progress",
              "--shard-size", "4", "--wait"]
    results = together(rerank, rerank)
    assert [code for code, _ in results] == [0, 0], results
    assert sum("nothing to do" in err for _, err in results) == 1  # the one that waited found the work done
    assert (work / "runs" / "test.listcon.trec").is_file()
    assert not list((work / "rankings").glob(".*.shards"))


def torch_head(directory) -> None:
    import torch

    from listcon.model import ListConRanker, ListConRankerConfig

    torch.manual_seed(0)
    ListConRanker(ListConRankerConfig(hidden_size=32, num_heads=4, ffn_size=64)).save_pretrained(directory)


@pytest.mark.slow
@pytest.mark.parametrize("step", [
    ["index"],
    ["retrieve", "{data}", "--split", "test", "--k", "50"],
    ["mine", "{data}", "--split", "test", "--holdout-fraction", "0.3"],
    ["train", "{data}", "--split", "test", "--epochs", "2", "--out", "{work}/head-overlap"],
    ["evaluate", "{data}"],
])
def test_two_writers_of_every_other_step_serialise_to_one_runs_result(tmp_path, adi_embedded, step):
    import shutil

    from conftest import data_dir
    from listcon.jobs.lock import LOCK_FILE

    work, alone = tmp_path / "together", tmp_path / "alone"
    for target in (work, alone):
        shutil.copytree(adi_embedded, target, ignore=shutil.ignore_patterns(LOCK_FILE))
        if step[0] == "train":  # training needs mined lists
            run = [sys.executable, "-m", "listcon.jobs.cli", "mine", str(data_dir("adi")), "--workdir", str(target),
                   "--split", "test", "--holdout-fraction", "0.3", "--no-progress"]
            subprocess.run(run, check=True, capture_output=True)
    command = lambda w: [sys.executable, "-m", "listcon.jobs.cli",  # noqa: E731
                         *[a.format(data=data_dir("adi"), work=w) for a in step], "--workdir", str(w), "--no-progress"]
    procs = [subprocess.Popen([*command(work), "--wait"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    assert [p.wait(timeout=600) for p in procs] == [0, 0], [p.stderr.read()[-1500:] for p in procs]
    subprocess.run(command(alone), check=True, capture_output=True)
    outputs = {"index": "index/manifest.json", "retrieve": "runs/test.first_stage.trec", "mine": "training/test.lance",
               "train": "head-overlap/model.safetensors", "evaluate": "reports/test/metrics.json"}[step[0]]
    if outputs.endswith(".lance"):
        import lance

        a = lance.dataset(str(work / outputs)).to_table().drop_columns(["signals"])
        assert a.equals(lance.dataset(str(alone / outputs)).to_table().drop_columns(["signals"]))
    elif outputs.endswith(".json") and step[0] == "evaluate":
        import json

        assert json.loads((work / outputs).read_text())["runs"] == json.loads((alone / outputs).read_text())["runs"]
    elif step[0] == "index":
        assert (work / "index" / "ids.arrow").read_bytes() == (alone / "index" / "ids.arrow").read_bytes()
    else:
        assert (work / outputs).read_bytes() == (alone / outputs).read_bytes()
