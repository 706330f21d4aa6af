"""Hostile input, tallied: what each bad input or flag does to the command line and the workdir.

Every case runs `listcon` in a subprocess against a fresh copy of the demo's adi workdir
(`make demo` prepares work/adi) and is classified by what happened: a clear error (exit 2,
one error line, no traceback), accepted (exit 0), a traceback, a hang (timeout); and
separately whether the workdir changed (any file but the writer lock), whether passages were
lost and whether anything was written next to the workdir. Writes bench/results/faults.json.

    python -m bench.faults [--timeout 300]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import lance
import torch

from bench.common import print_table, write_results
from listcon.jobs.lock import LOCK_FILE
from listcon.model import ListConRanker, ListConRankerConfig, default_model_path

ROOT = Path(__file__).resolve().parents[1]
ADI = ROOT.parent / "shared" / "data" / "adi"
ENV = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "HF_HUB_OFFLINE": "1",
       "TOKENIZERS_PARALLELISM": "false"}


def hostile_data(root: Path) -> dict[str, Path]:
    """BEIR copies of adi with one defect each."""
    made = {}

    def variant(name: str, edit) -> None:
        target = root / name
        shutil.copytree(ADI, target)
        edit(target)
        made[name] = target

    qrels = (ADI / "qrels" / "test.tsv").read_text().splitlines()
    variant("grade-0.9", lambda d: (d / "qrels" / "test.tsv").write_text("\n".join([qrels[0], qrels[1].rsplit("\t", 1)[0] + "\t0.9", *qrels[2:]]) + "\n"))
    variant("grade-inf", lambda d: (d / "qrels" / "test.tsv").write_text("\n".join([qrels[0], qrels[1].rsplit("\t", 1)[0] + "\tinf", *qrels[2:]]) + "\n"))
    variant("grade-conflict", lambda d: (d / "qrels" / "test.tsv").write_text("\n".join([*qrels, qrels[1].rsplit("\t", 1)[0] + "\t7"]) + "\n"))
    corpus = (ADI / "corpus.jsonl").read_text().splitlines()
    first = json.loads(corpus[0])
    variant("id-whitespace", lambda d: (d / "corpus.jsonl").write_text("\n".join([json.dumps({**first, "_id": "a b"}), *corpus[1:]]) + "\n"))
    variant("empty-corpus", lambda d: (d / "corpus.jsonl").write_text(""))
    return made


def bad_models(root: Path) -> dict[str, Path]:
    made = {"empty-model": root / "empty-model"}
    made["empty-model"].mkdir(parents=True)
    shutil.copytree(default_model_path(), root / "truncated-model")
    weights = root / "truncated-model" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 3])
    made["truncated-model"] = root / "truncated-model"
    torch.manual_seed(0)
    ListConRanker(ListConRankerConfig(embed_dim=16, hidden_size=16, num_heads=2, ffn_size=32)).save_pretrained(root / "narrow")
    ListConRanker(ListConRankerConfig(hidden_size=16, num_heads=2, ffn_size=32)).save_pretrained(root / "head")
    made["narrow"], made["head"] = root / "narrow", root / "head"
    for name, config in (("array", [1, 2]), ("zero-heads", {"format": "listcon-head/1", "num_heads": 0}),
                         ("string", {"format": "listcon-head/1", "hidden_size": "wide"})):
        shutil.copytree(root / "head", root / name)
        (root / name / "config.json").write_text(json.dumps(config))
        made[name] = root / name
    return made


def cases(data: dict[str, Path], models: dict[str, Path]) -> list[tuple[str, list[str]]]:
    adi, m = str(ADI), {k: str(v) for k, v in models.items()}
    rerank = ["rerank", adi, "--model-dir", m["head"]]
    return [
        ("qrels grade 0.9", ["evaluate", str(data["grade-0.9"])]),
        ("qrels grade inf", ["evaluate", str(data["grade-inf"])]),
        ("qrels pair judged twice, differently", ["evaluate", str(data["grade-conflict"])]),
        ("corpus id with whitespace", ["embed", str(data["id-whitespace"])]),
        ("empty corpus", ["embed", str(data["empty-corpus"]), "--prune"]),
        ("--prune with --limit", ["embed", adi, "--prune", "--limit", "10"]),
        ("--limit 0", ["embed", adi, "--limit", "0"]),
        ("--concurrency 0", ["embed", adi, "--concurrency", "0"]),
        ("--workers 0", [*rerank, "--workers", "0"]),
        ("--shard-size 0", [*rerank, "--shard-size", "0"]),
        ("--depth -5", [*rerank, "--depth", "-5"]),
        ("--k 0", ["retrieve", adi, "--k", "0"]),
        ("--theta 0", [*rerank, "--theta", "0"]),
        ("--batch-size 0", ["embed", adi, "--batch-size", "0"]),
        ("--precision fp16 on CPU", [*rerank, "--precision", "fp16"]),
        ("head width differs from the cache", ["rerank", adi, "--model-dir", m["narrow"]]),
        ("head config.json is an array", ["rerank", adi, "--model-dir", m["array"]]),
        ("head num_heads 0", ["rerank", adi, "--model-dir", m["zero-heads"]]),
        ("head: a string where a number belongs", ["rerank", adi, "--model-dir", m["string"]]),
        ("empty encoder directory", ["embed", adi, "--model", m["empty-model"]]),
        ("truncated encoder weights", ["embed", adi, "--model", m["truncated-model"]]),
        ("--run-name escaping the workdir", [*rerank, "--run-name", "x/../../../ESCAPED"]),
        ("--split escaping the workdir", ["retrieve", adi, "--split", "../../ESCAPED"]),
    ]


def snapshot(work: Path) -> dict[str, int]:
    return {str(p.relative_to(work)): p.stat().st_mtime_ns for p in work.rglob("*") if p.name != LOCK_FILE}


def passages(work: Path) -> int:
    return lance.dataset(str(work / "passages.lance")).count_rows()


def run_case(name: str, args: list[str], base: Path, timeout: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        parent = Path(tmp) / "outer"
        work = parent / "w"
        shutil.copytree(base, work, ignore=shutil.ignore_patterns(LOCK_FILE))
        before, rows, beside = snapshot(work), passages(work), set(os.listdir(parent))
        try:
            out = subprocess.run([sys.executable, "-m", "listcon.jobs.cli", *args, "--workdir", str(work)], env=ENV,
                                 capture_output=True, text=True, timeout=timeout)
            code, err = out.returncode, out.stderr
        except subprocess.TimeoutExpired:
            code, err = None, ""
        errors = [line for line in err.splitlines() if " ERROR " in line]
        if code is None:
            outcome = "hang"
        elif "Traceback" in err:
            outcome = "traceback"
        elif code == 2 and len(errors) == 1:
            outcome = "clear error"
        elif code == 0:
            outcome = "accepted"
        else:
            outcome = f"exit {code}"
        return {"case": name, "outcome": outcome, "exit": code, "message": errors[-1].split(": ", 1)[-1][:160] if errors else "",
                "workdir_changed": snapshot(work) != before, "passages_lost": max(0, rows - passages(work)),
                "written_beside_workdir": sorted(set(os.listdir(parent)) - beside)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=ROOT / "work" / "adi", help="an embedded, retrieved adi workdir")
    parser.add_argument("--timeout", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data, models = hostile_data(Path(tmp) / "data"), bad_models(Path(tmp) / "models")
        rows = [run_case(name, argv, args.workdir, args.timeout) for name, argv in cases(data, models)]
    print_table(rows, ["case", "outcome", "exit", "workdir_changed", "passages_lost", "message"])
    tally = {"cases": len(rows), **{k: sum(r["outcome"] == k for r in rows) for k in ("clear error", "accepted", "traceback", "hang")},
             "workdir_changed": sum(r["workdir_changed"] for r in rows),
             "passages_lost": sum(r["passages_lost"] for r in rows),
             "written_beside_workdir": sum(bool(r["written_beside_workdir"]) for r in rows)}
    print(json.dumps(tally))
    print(f"wrote {write_results('faults', {'tally': tally, 'rows': rows})}")


if __name__ == "__main__":
    main()
