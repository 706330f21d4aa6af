"""A real two-node Ray cluster on 127.0.0.1 (two raylets, one CPU each): every step runs on nodes
smaller than the driver's machine, instead of waiting forever for a 2-CPU actor no node can host.

Slow (two `ray start`s and a dozen CLI runs, about three minutes): `make test-slow`.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import data_dir

pytestmark = pytest.mark.slow
RAY = str(Path(sys.executable).parent / "ray")
LISTCON = str(Path(sys.executable).parent / "listcon")
ENV = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "HF_HUB_OFFLINE": "1",
       "TOKENIZERS_PARALLELISM": "false"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory):
    """A head and a worker node (1 CPU each), each `ray start --block` in its own process group,
    torn down by killing those groups (never `ray stop`, which would stop every Ray on the machine)."""
    port = free_port()
    address = f"127.0.0.1:{port}"
    logs = tmp_path_factory.mktemp("cluster")
    common = ["--num-cpus", "1", "--num-gpus", "0", "--block", "--disable-usage-stats"]
    nodes = []
    try:
        nodes.append(subprocess.Popen([RAY, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port),
                                       "--include-dashboard", "false", "--object-store-memory", str(300 * 2**20), *common],
                                      env=ENV, stdout=open(logs / "head.log", "w"), stderr=subprocess.STDOUT,
                                      start_new_session=True))
        _wait_for_nodes(address, 1)
        nodes.append(subprocess.Popen([RAY, "start", "--address", address, "--node-ip-address", "127.0.0.1",
                                       "--object-store-memory", str(300 * 2**20), *common],
                                      env=ENV, stdout=open(logs / "worker.log", "w"), stderr=subprocess.STDOUT,
                                      start_new_session=True))
        _wait_for_nodes(address, 2)
        yield address
    finally:
        for proc in reversed(nodes):
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(proc.pid, sig)
                    proc.wait(timeout=20)
                    break
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    continue


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
    on = ["--workdir", work, "--ray-address", two_nodes, "--no-progress"]
    log = listcon("embed", data, *on)
    assert "encoder actors: 1 x (1.0 CPU, 0.0 GPU) on cpu" in log and "(1 CPU, 0 GPU)" in log
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
                          two_nodes, "--cpus-per-actor", "2", "--no-progress"],
                         env=ENV, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert "asks for 2 CPUs, but the largest node that could run it has 1" in out.stderr
    assert "Traceback" not in out.stderr
