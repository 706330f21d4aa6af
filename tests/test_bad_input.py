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
    """Every file and its mtime, except the writer lock a job takes and releases."""
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in sorted(root.rglob("*")) if p.name != LOCK_FILE}


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
    return root


CASES = [
    (["embed", "{data}", "--workdir", "{work}", "--concurrency", "0"], "concurrency must be at least 1 encoder actor"),
    (["embed", "{data}", "--workdir", "{work}", "--cpus-per-actor", "0"], "cpus_per_actor must be positive"),
    (["rerank", "{data}", "--workdir", "{work}", "--model-dir", "{heads}/fits", "--run-name", "x/../../../ESCAPED"],
     "run name 'x/../../../ESCAPED' may only use letters, digits"),
    (["retrieve", "{data}", "--workdir", "{work}", "--split", "../test"], "split '../test' may only use letters"),
    (["rerank", "{data}", "--workdir", "{work}", "--model-dir", "{heads}/narrow"],
     "the checkpoint expects embed_dim=16, but the passage cache"),
    (["rerank", "{data}", "--workdir", "{work}", "--model-dir", "{heads}/array"], "is not a listcon-head/1 config"),
    (["rerank", "{data}", "--workdir", "{work}", "--model-dir", "{heads}/zero-heads"], "num_heads must be at least 1"),
    (["rerank", "{data}", "--workdir", "{work}", "--model-dir", "{heads}/string"], "hidden_size"),
    (["rerank", "{data}", "--workdir", "{work}", "--model-dir", "{heads}/fits", "--precision", "fp16"],
     "precision fp16 needs a CUDA device, but this runs on cpu"),
]


@pytest.mark.parametrize("args,message", CASES, ids=[" ".join(a[:1] + a[3:]) for a, _ in CASES])
def test_bad_input_is_one_clear_line_and_changes_nothing(adi_embedded, heads, caplog, args, message):
    before = tree(adi_embedded)
    filled = [a.format(data=data_dir("adi"), work=adi_embedded, heads=heads) for a in args]
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

