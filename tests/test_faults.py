"""SIGKILL at seeded points, then resume: the output equals an uninterrupted run's.

Each case copies the embedded adi workdir twice, runs the step uninterrupted in one copy and,
in the other, starts it as a process group that is killed once its own progress markers (rerank
shards, training epoch checkpoints) reach the drawn point, or after a drawn delay for steps that
commit at the end (retrieve, mine). One point per step runs in `make test`, the rest are slow.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import lance
import numpy as np
import pytest
import torch

from conftest import data_dir, kill_when
from listcon.jobs.lock import LOCK_FILE
from listcon.model import ListConRanker, ListConRankerConfig
from listcon.pipeline.store.ranked_lists import read_trec

DATA = str(data_dir("adi"))
CLI = [sys.executable, "-m", "listcon.jobs.cli"]
ENV = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "HF_HUB_OFFLINE": "1"}


@pytest.fixture(scope="module")
def base(adi_embedded, tmp_path_factory) -> Path:
    """The embedded adi workdir with mined lists and a head to rerank with."""
    root = tmp_path_factory.mktemp("faults")
    work = root / "base"
    shutil.copytree(adi_embedded, work, ignore=shutil.ignore_patterns(LOCK_FILE))
    run(["mine", DATA, "--workdir", str(work), "--split", "test", "--holdout-fraction", "0.3"])
    torch.manual_seed(0)
    ListConRanker(ListConRankerConfig(hidden_size=32, num_heads=4, ffn_size=64)).save_pretrained(root / "head")
    return work


def run(args: list[str]) -> None:
    out = subprocess.run([*CLI, *args, "--no-progress"], env=ENV, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-2000:]


def copy(base: Path, to: Path) -> Path:
    shutil.copytree(base, to, ignore=shutil.ignore_patterns(LOCK_FILE))
    return to


def killed(args: list[str], ready, timeout: float = 300) -> bool:
    """Start the step; SIGKILL its process group once ``ready()``; False if it finished first."""
    return kill_when([*CLI, *args, "--no-progress"], ready, ENV, timeout) is not None


def after(seconds: float):
    start = time.time()
    return lambda: time.time() - start >= seconds


RERANK_POINTS = [2, pytest.param(5, marks=pytest.mark.slow), pytest.param(9, marks=pytest.mark.slow),
                 pytest.param(13, marks=pytest.mark.slow), pytest.param(16, marks=pytest.mark.slow)]


@pytest.mark.parametrize("shards", RERANK_POINTS)
def test_rerank_killed_after_some_shards_resumes_to_the_same_run(base, tmp_path, shards):
    head = str(base.parent / "head")
    args = lambda w: ["rerank", DATA, "--workdir", str(w), "--model-dir", head, "--shard-size", "2"]  # noqa: E731
    reference, resumed = copy(base, tmp_path / "ref"), copy(base, tmp_path / "kill")
    run(args(reference))
    marks = resumed / "rankings" / ".test.listcon.shards"
    killed(args(resumed), lambda: len(list(marks.rglob("shard-*.parquet"))) >= shards)
    run(args(resumed))
    assert read_trec(resumed / "runs" / "test.listcon.trec") == read_trec(reference / "runs" / "test.listcon.trec")
    assert lance.dataset(str(resumed / "rankings" / "test.lance")).to_table().equals(
        lance.dataset(str(reference / "rankings" / "test.lance")).to_table())
    assert not marks.exists()


@pytest.mark.parametrize("epoch", [1, *(pytest.param(e, marks=pytest.mark.slow) for e in (2, 3, 4, 5))])
def test_training_killed_after_an_epoch_resumes_to_the_same_weights(base, tmp_path, epoch):
    args = lambda out: ["train", DATA, "--workdir", str(base), "--split", "test", "--epochs", "6", "--patience", "10",  # noqa: E731
                        "--out", str(out), "--first-stage-prior"]
    run(args(tmp_path / "ref"))
    checkpoint = tmp_path / "kill" / "checkpoints" / f"epoch-{epoch:04d}"
    killed(args(tmp_path / "kill"), checkpoint.is_dir)
    run(args(tmp_path / "kill"))
    import json

    history = lambda d: [(h["epoch"], h["loss"], h["val_ndcg@10"]) for h in  # noqa: E731
                         json.loads((tmp_path / d / "train_result.json").read_text())["history"]]
    assert history("kill") == history("ref")
    for name in ("model.safetensors", "config.json"):
        assert (tmp_path / "kill" / name).read_bytes() == (tmp_path / "ref" / name).read_bytes()


@pytest.mark.parametrize("seed", [0, *(pytest.param(s, marks=pytest.mark.slow) for s in (1, 2, 3, 4))])
def test_retrieve_and_mine_killed_at_a_random_moment_rerun_to_the_same_tables(base, tmp_path, seed):
    delay = random.Random(seed).uniform(1.0, 8.0)
    reference, resumed = copy(base, tmp_path / "ref"), copy(base, tmp_path / "kill")
    for work in (reference, resumed):
        shutil.rmtree(work / "candidates")
        shutil.rmtree(work / "training")
    steps = [["retrieve", DATA, "--split", "test", "--k", "50"],
             ["mine", DATA, "--split", "test", "--holdout-fraction", "0.3"]]
    for step in steps:
        run([*step, "--workdir", str(reference)])
        killed([*step, "--workdir", str(resumed)], after(delay))
        run([*step, "--workdir", str(resumed)])
    for table in ("candidates/test.lance", "training/test.lance"):
        a = lance.dataset(str(resumed / table)).to_table()
        b = lance.dataset(str(reference / table)).to_table()
        assert a.drop_columns(["signals"] if "signals" in a.column_names else []).equals(
            b.drop_columns(["signals"] if "signals" in b.column_names else []))
        if "signals" in a.column_names:  # NaN (no external run) never equals itself in Arrow
            np.testing.assert_array_equal(np.array(a["signals"].to_pylist(), dtype=object).astype(str),
                                          np.array(b["signals"].to_pylist(), dtype=object).astype(str))
