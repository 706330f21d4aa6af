"""Shared fixtures: tiny models built in code, the shared data dir, one Ray per session."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
WORDS = (
    "the a of and in to is for with on by from that this as are was be at an or which it "
    "cell cells protein gene genes cancer patients study results effect effects human blood "
    "risk treatment increased expression disease clinical mice levels associated response "
    "virus brain heart lung liver drug dose trial analysis data model rate high low"
).split()


def data_dir(name: str) -> Path:
    """A BEIR collection from ../shared/data, or skip where it is absent."""
    path = DATA / name
    if not (path / "corpus.jsonl").is_file():
        pytest.skip(f"{path} is not available")
    return path


ADI_JOB = """
data = "{data}"
workdir = "{work}"
split = "test"
{top}
[retrieve]
k = 50

[train]
split = "test"
k = 50
out = "{work}/head"
{train}
[train.mining]
holdout_fraction = 0.3

[train.settings]
epochs = 2
head = {{ first_stage_prior = true, hidden_size = 64, num_heads = 4, ffn_size = 128 }}

[rerank]
depths = [20]
{rerank}"""


def adi_job(work: Path | str, top: str = "", train: str = "", rerank: str = "") -> str:
    """The main job's config on adi (train on its test split, a small head), for end-to-end tests;
    ``top`` adds top-level keys and sections, ``train`` and ``rerank`` keys of those sections."""
    return ADI_JOB.format(data=data_dir("adi"), work=work, top=top, train=train, rerank=rerank)


def kill_when(argv: list[str], ready: Callable[[], bool], env: dict, timeout: float = 300,
              sig: int = signal.SIGKILL, stderr: Path | None = None) -> tuple[int, float, int] | None:
    """Start ``argv`` in its own session and process group; send ``sig`` to the group once ``ready()``.

    Returns (exit code, seconds from the signal to the exit, the session id), or None if it ended first.
    Its stderr goes to the file ``stderr`` (for a failing test to show), else nowhere."""
    with open(stderr or os.devnull, "w") as err:
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
    deadline = time.time() + timeout
    while proc.poll() is None and time.time() < deadline:
        if ready():
            os.killpg(proc.pid, sig)
            sent = time.time()
            code = proc.wait()
            return code, time.time() - sent, proc.pid
        time.sleep(0.05)
    proc.wait()
    return None


def session_processes(sid: int) -> list[str]:
    """Names of the live processes of session ``sid`` (a job started by ``kill_when`` and all it started)."""
    import psutil

    found = []
    for proc in psutil.process_iter(["pid", "name"]):
        try:
            if os.getsid(proc.info["pid"]) == sid:
                found.append(proc.info["name"])
        except (ProcessLookupError, PermissionError):
            continue
    return found


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    """A 2-layer, 32-wide random BERT with a small WordPiece vocab, saved as an HF directory."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    directory = tmp_path_factory.mktemp("tiny-bert")
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)] + [str(d) for d in range(10)]
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, *letters, *("##" + c for c in letters), ".", ","]
    (directory / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizer(vocab=str(directory / "vocab.txt"), model_max_length=128).save_pretrained(directory)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=128,
    )
    BertModel(config).save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def ray_session():
    """One quiet local Ray for the whole test session (ray.init costs ~4.5 s and ~1.3 GB)."""
    import ray

    from listcon.jobs.runtime import start_ray

    start_ray(num_cpus=2, object_store_mb=256)
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def adi_embedded(tmp_path_factory, ray_session):
    """adi embedded, indexed and retrieved (test split, top-50) with the packaged MiniLM, via the CLI.

    A real encoder, because random tiny models embed every text almost alike (ties everywhere)."""
    from listcon.jobs.cli import main

    work = tmp_path_factory.mktemp("adi-work")
    data = str(data_dir("adi"))
    common = ["--workdir", str(work), "--no-progress"]
    assert main(["embed", data, *common, "--chunk-rows", "32"]) == 0
    assert main(["index", *common]) == 0
    assert main(["retrieve", data, *common, "--split", "test", "--k", "50"]) == 0
    return work
