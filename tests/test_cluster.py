"""A real two-node Ray cluster on 127.0.0.1 (two raylets, one CPU each): every step runs on nodes
smaller than the driver's machine, instead of waiting forever for a 2-CPU actor no node can host.

Slow (two `ray start`s and a dozen CLI runs, about three minutes): `make test-slow`.
"""

from __future__ import annotations

import ast
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import adi_job, data_dir
from listcon.pipeline.store.ranked_lists import read_trec
from listcon.pipeline.store.workdir import Workdir

pytestmark = pytest.mark.slow
RAY = str(Path(sys.executable).parent / "ray")
LISTCON = str(Path(sys.executable).parent / "listcon")
ENV = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "HF_HUB_OFFLINE": "1",
       "TOKENIZERS_PARALLELISM": "false"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TwoNodes:
    """A head and a worker node (1 CPU each), each `ray start --block` in its own process group,
    stopped by killing those groups (never `ray stop`, which would stop every Ray on the machine)."""

    def __init__(self, logs: Path) -> None:
        self.address = f"127.0.0.1:{free_port()}"
        self.logs = logs
        self.head: subprocess.Popen | None = None
        self.worker: subprocess.Popen | None = None

    def _start(self, args: list[str], log: str) -> subprocess.Popen:
        common = ["--num-cpus", "1", "--num-gpus", "0", "--block", "--disable-usage-stats", "--node-ip-address",
                  "127.0.0.1", "--object-store-memory", str(300 * 2**20)]
        return subprocess.Popen([RAY, "start", *args, *common], env=ENV, stdout=open(self.logs / log, "a"),
                                stderr=subprocess.STDOUT, start_new_session=True)

    def start(self) -> None:
        self.head = self._start(["--head", "--port", self.address.split(":")[1], "--include-dashboard", "false"],
                                "head.log")
        _wait_for_nodes(self.address, 1)
        self.start_worker()

    def start_worker(self) -> None:
        self.worker = self._start(["--address", self.address], "worker.log")
        _wait_for_nodes(self.address, 2)

    def kill_worker(self) -> None:
        """SIGKILL the worker node: its raylet, object store and workers, as when a machine is lost."""
        _kill(self.worker, (signal.SIGKILL,))

    def stop(self) -> None:
        for proc in (self.worker, self.head):
            _kill(proc, (signal.SIGTERM, signal.SIGKILL))


def _kill(proc: subprocess.Popen | None, signals) -> None:
    for sig in signals if proc is not None else ():
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=20)
            return
        except (ProcessLookupError, subprocess.TimeoutExpired):
            continue


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory):
    cluster = TwoNodes(tmp_path_factory.mktemp("cluster"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def _wait_for_nodes(address: str, count: int, timeout: float = 60) -> None:
    probe = ("import ray, sys; ray.init(address=sys.argv[1], logging_level='ERROR', log_to_driver=False); "
             "print(sum(1 for n in ray.nodes() if n['Alive']))")
    deadline = time.time() + timeout
    while time.time() < deadline:
        out = subprocess.run([sys.executable, "-c", probe, address], env=ENV, capture_output=True, text=True)
        if out.returncode == 0 and out.stdout.strip().endswith(str(count)):
            return
        time.sleep(1)
    raise RuntimeError(f"the Ray cluster at {address} did not reach {count} node(s) in {timeout}s")


def listcon(*args: str) -> str:
    out = subprocess.run([LISTCON, *args], env=ENV, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, f"listcon {' '.join(args)} failed:\n{out.stderr[-3000:]}"
    return out.stderr


def test_every_step_runs_on_two_one_cpu_nodes(two_nodes, tmp_path):
    data, work = str(data_dir("adi")), str(tmp_path / "adi")
    on = ["--workdir", work, "--ray-address", two_nodes.address, "--no-progress"]
    log = listcon("embed", data, *on)
    assert "encoder actors: 2 x (1.0 CPU, 0.0 GPU) on cpu" in log and "(1 CPU, 0 GPU)" in log
    listcon("index", *on)
    listcon("retrieve", data, *on, "--split", "test", "--k", "30")
    listcon("mine", data, *on, "--split", "test", "--list-size", "8", "--depth", "30", "--holdout-fraction", "0.2")
    log = listcon("train", data, *on, "--split", "test", "--num-workers", "2", "--epochs", "1", "--batch-size", "4",
                  "--val-depth", "20", "--out", str(tmp_path / "head"))
    assert "2 Ray Train workers x (1 CPU, 0 GPU)" in log
    log = listcon("rerank", data, *on, "--model-dir", str(tmp_path / "head"), "--workers", "2")
    assert "2 workers x (1 CPU, 0 GPU)" in log
    # stage 2 (encoder + head, DDP over gloo on both nodes), a token budget: it must finish, not hang
    log = listcon("train", data, *on, "--split", "test", "--num-workers", "2", "--stage", "2", "--epochs", "1",
                  "--batch-size", "1", "--max-steps-per-epoch", "1", "--val-depth", "8",
                  "--init", str(tmp_path / "head"), "--out", str(tmp_path / "e2e"))
    result = json.loads((tmp_path / "e2e" / "train_result.json").read_text())
    assert result["epochs_run"] == 1


def test_a_request_no_node_can_host_fails_fast(two_nodes, tmp_path):
    out = subprocess.run([LISTCON, "embed", str(data_dir("adi")), "--workdir", str(tmp_path / "w"), "--ray-address",
                          two_nodes.address, "--cpus-per-actor", "2", "--no-progress"],
                         env=ENV, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert "asks for 2 CPUs, but the largest node that could run it has 1" in out.stderr
    assert "Traceback" not in out.stderr


RUNS = ["first_stage", "dense", "lexical", "hybrid-rrf", "hybrid-convex", "listcon"]


def per_node(log: str, what: str) -> dict[str, int]:
    """The first '<what> per node: {...}' the log reports (embed's passages come before the queries)."""
    found = re.findall(what + r" per node: (\{.*\})", log)
    assert found, f"no '{what} per node' line in the log"
    return ast.literal_eval(found[0])


def test_the_main_job_on_two_nodes_equals_the_local_run_and_survives_losing_a_node(two_nodes, tmp_path):
    data = data_dir("adi")
    local, remote = tmp_path / "local", tmp_path / "remote"
    spread = "[encoder]\nbatch_size = 8\n\n[embed]\nconcurrency = 2\n"  # blocks for both encoder actors
    for work, ray in ((local, ""), (remote, f'[ray]\naddress = "{two_nodes.address}"\n')):
        (tmp_path / f"{work.name}.toml").write_text(
            adi_job(work, top=ray + spread, train="num_workers = 2", rerank="workers = 2\nshard_size = 4"))
    listcon("run", str(tmp_path / "local.toml"), "--no-progress")
    log = listcon("run", str(tmp_path / "remote.toml"), "--no-progress")
    # both nodes did work, and the result is the single-node run's
    assert len(per_node(log, "texts encoded")) == 2 and len(per_node(log, "queries")) == 2
    for name in RUNS:
        assert read_trec(Workdir(remote).run("test", name)) == read_trec(Workdir(local).run("test", name)), name

    # lose the worker node mid-rerank: a one-line failure (or Ray finishing it); restarted, a rerun resumes
    rerank = [LISTCON, "rerank", str(data), "--workdir", str(remote), "--ray-address", two_nodes.address, "--split",
              "test", "--model-dir", str(remote / "head"), "--run-name", "lost", "--workers", "2", "--shard-size", "4",
              "--no-progress"]
    proc = subprocess.Popen(rerank, env=ENV, stderr=subprocess.PIPE, text=True)
    shards = remote / "rankings" / ".test.lost.shards"
    deadline = time.time() + 300
    while proc.poll() is None and not list(shards.glob("*/*.parquet")) and time.time() < deadline:
        time.sleep(0.05)
    two_nodes.kill_worker()
    _, err = proc.communicate(timeout=300)
    assert proc.returncode in (0, 3), err[-3000:]
    assert "Traceback" not in err
    if proc.returncode == 3:
        assert "a Ray worker or node failed" in err and "rerun the same command to resume" in err
    two_nodes.start_worker()
    listcon(*rerank[1:])
    assert read_trec(Workdir(remote).run("test", "lost")) == read_trec(Workdir(local).run("test", "listcon"))
