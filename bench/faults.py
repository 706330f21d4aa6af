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

from tqdm import tqdm

from bench.common import print_table, run_bench, write_results
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
    # cross-file consistency: qrels against queries and corpus
    variant("phantom-query", lambda d: (d / "qrels" / "test.tsv").write_text("\n".join([*qrels, "9999\t17\t1"]) + "\n"))
    variant("unknown-passage", lambda d: (d / "qrels" / "test.tsv").write_text("\n".join([*qrels, "1\t99999\t1"]) + "\n"))
    variant("header-only-qrels", lambda d: (d / "qrels" / "test.tsv").write_text(qrels[0] + "\n"))
    variant("qrels-mixed-layouts", lambda d: (d / "qrels" / "test.tsv").write_text(
        "\n".join([" ".join([r.split("\t")[0], "0", *r.split("\t")[1:]]) for r in qrels[1:3]] + qrels[3:]) + "\n"))
    # a corpus changed after embed: one passage edited, one removed, one added
    edited = json.dumps({**first, "text": first["text"] + " (revised)"})
    variant("passage-changed", lambda d: (d / "corpus.jsonl").write_text("\n".join([edited, *corpus[1:]]) + "\n"))
    variant("passage-removed", lambda d: (d / "corpus.jsonl").write_text("\n".join(corpus[1:]) + "\n"))
    variant("passage-added", lambda d: (d / "corpus.jsonl").write_text(
        "\n".join([*corpus, json.dumps({"_id": "new-1", "title": "", "text": "a passage added after embed"})]) + "\n"))
    return made


def hostile_runs(root: Path, work: Path) -> dict[str, Path]:
    """External runs that would replace the candidates with nothing, a fragment, or unknown ids."""
    root.mkdir(parents=True)
    lines = (work / "runs" / "test.lexical.trec").read_text().splitlines()
    runs = {"empty": [], "one-query": [l for l in lines if l.split()[0] == "1"],
            "unknown-query": [*lines, "9999 Q0 17 1 3.5 other"], "unknown-passage": [*lines, "1 Q0 99999 1 3.5 other"],
            "duplicate-pair": [*lines, lines[0]], "nan-score": [*lines, "1 Q0 40 999 nan other"],
            "five-fields": [*lines, "1 Q0 41 999"]}
    made = {}
    for name, body in runs.items():
        made[name] = root / f"{name}.trec"
        made[name].write_text("".join(l + "\n" for l in body))
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
                         ("string", {"format": "listcon-head/1", "hidden_size": "wide"}),
                         ("nan-dropout", {"format": "listcon-head/1", "dropout": float("nan")})):
        shutil.copytree(root / "head", root / name)
        (root / name / "config.json").write_text(json.dumps(config))
        made[name] = root / name
    shutil.copytree(root / "head", root / "unfinished")  # a training that started and never ended
    (root / "unfinished" / "checkpoints").mkdir()
    (root / "unfinished" / "checkpoints" / "provenance.json").write_text("{}")
    made["unfinished"] = root / "unfinished"
    return made


# Every numeric option's range, tried at and beyond its edges (the same rule everywhere it is read).
RANGES = [
    ("embed", ["--max-length", "0"]), ("embed", ["--max-length", "-3"]), ("embed", ["--batch-size", "-1"]),
    ("embed", ["--chunk-rows", "0"]), ("embed", ["--cpus-per-actor", "-1"]), ("embed", ["--prune-limit", "1.5"]),
    ("embed", ["--prune-limit", "nan"]),
    ("index", ["--k1", "-1"]), ("index", ["--k1", "nan"]), ("index", ["--b", "1.5"]), ("index", ["--b", "-0.1"]),
    ("index", ["--b", "inf"]), ("index", ["--nlist", "0"]), ("index", ["--hnsw-m", "1"]), ("index", ["--nprobe", "0"]),
    ("index", ["--ef-search", "0"]),
    ("retrieve", ["--rrf-k", "-60"]), ("retrieve", ["--convex-weight", "1.5"]), ("retrieve", ["--convex-weight", "nan"]),
    ("retrieve", ["--convex-weight=-inf"]), ("retrieve", ["--k", "-1"]),
    ("mine", ["--split", "test", "--holdout-fraction", "1.5"]), ("mine", ["--split", "test", "--holdout-fraction", "nan"]),
    ("mine", ["--split", "test", "--list-size", "1"]), ("mine", ["--split", "test", "--max-positives", "0"]),
    ("mine", ["--split", "test", "--depth", "0"]), ("mine", ["--split", "test", "--seed", "-1"]),
    ("train", ["--split", "test", "--lr", "nan"]), ("train", ["--split", "test", "--lr", "inf"]),
    ("train", ["--split", "test", "--lr=-1e-3"]), ("train", ["--split", "test", "--lr", "-1e-3"]),
    ("train", ["--split", "test", "--encoder-lr", "nan"]), ("train", ["--split", "test", "--weight-decay", "-0.1"]),
    ("train", ["--split", "test", "--gamma", "0"]), ("train", ["--split", "test", "--margin", "nan"]),
    ("train", ["--split", "test", "--epochs", "0"]), ("train", ["--split", "test", "--batch-size", "0"]),
    ("train", ["--split", "test", "--grad-accum", "0"]), ("train", ["--split", "test", "--patience", "0"]),
    ("train", ["--split", "test", "--val-depth", "0"]), ("train", ["--split", "test", "--domain-alpha", "0"]),
    ("train", ["--split", "test", "--domain-alpha", "1.5"]), ("train", ["--split", "test", "--dropout", "1.5"]),
    ("train", ["--split", "test", "--dropout", "nan"]), ("train", ["--split", "test", "--hidden-size", "0"]),
    ("train", ["--split", "test", "--num-layers", "0"]), ("train", ["--split", "test", "--head-cap", "-1"]),
    ("train", ["--split", "test", "--max-steps-per-epoch", "0"]), ("train", ["--split", "test", "--num-workers", "-1"]),
    ("rerank", ["--beta", "0"]), ("rerank", ["--beta", "1.5"]), ("rerank", ["--beta", "nan"]), ("rerank", ["--theta", "-5"]),
    ("rerank", ["--min-drop", "0"]), ("rerank", ["--memory-budget-mb", "0"]),
]


def cases(data: dict[str, Path], models: dict[str, Path], runs: dict[str, Path]) -> list[tuple[str, list[str]]]:
    adi, m = str(ADI), {k: str(v) for k, v in models.items()}
    rerank = ["rerank", adi, "--model-dir", m["head"]]
    ranges = [(f"{step} {' '.join(flags[-2:])}", [step, *([adi] if step != "index" else []), *flags,
                                                   *(["--model-dir", m["head"]] if step == "rerank" else [])])
              for step, flags in RANGES]
    stale = [(f"{step} on a corpus with a passage {change} after embed",
              [step, str(data[f"passage-{change}"]), *extra])
             for change in ("changed", "removed", "added")
             for step, extra in (("retrieve", []), ("mine", ["--split", "test"]), ("rerank", ["--model-dir", m["head"]]),
                                 ("evaluate", []))]
    return [*ranges, *stale,
        *[(f"--run-name {name} (reserved)", [*rerank, "--run-name", name])
          for name in ("first_stage", "dense", "lexical", "hybrid-rrf", "hybrid-convex", "listcon-top20", "mine-top5")],
        *[(f"--from-run: {name}", ["retrieve", adi, "--from-run", str(path)]) for name, path in runs.items()],
        ("qrels: a query not in queries.jsonl", ["evaluate", str(data["phantom-query"])]),
        ("qrels: a passage not in the corpus (evaluate)", ["evaluate", str(data["unknown-passage"])]),
        ("qrels: a passage not in the corpus (retrieve)", ["retrieve", str(data["unknown-passage"])]),
        ("qrels: only a header", ["evaluate", str(data["header-only-qrels"])]),
        ("qrels: TREC and BEIR lines mixed", ["evaluate", str(data["qrels-mixed-layouts"])]),
        ("--measures nDCG@ten", ["evaluate", adi, "--measures", "nDCG@ten"]),
        ("head: NaN dropout", ["rerank", adi, "--model-dir", m["nan-dropout"]]),
        ("head of an unfinished training", ["rerank", adi, "--model-dir", m["unfinished"]]),
        ("IVF --nlist above the passage count", ["index", "--kind", "ivf", "--nlist", "1000"]),
        ("[[train.extra]] whose data is missing", ["train", adi, "--split", "test", "--extra",
                                                   "ghost=/nonexistent/ghost@/nonexistent/ghost-work"]),
        ("--ray-address nobody answers at", ["embed", adi, "--ray-address", "127.0.0.1:1", "--rebuild"]),
        ("--ray-address that is not host:port", ["embed", adi, "--ray-address", "nowhere", "--rebuild"]),
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
    """Every file and its time, but the writer lock and the run records (a refused job is recorded too)."""
    return {str(p.relative_to(work)): p.stat().st_mtime_ns for p in work.rglob("*") if p.name not in (LOCK_FILE, "runs.jsonl")}


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
    parser.add_argument("--workdir", type=Path, default=ROOT / "work" / "adi",
                        help="an embedded, retrieved adi workdir (make demo's; or work/transfer/adi)")
    parser.add_argument("--timeout", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base"
        shutil.copytree(args.workdir, base, ignore=shutil.ignore_patterns(LOCK_FILE))
        # an embed with nothing to encode records the corpus the cache holds (what the stale-corpus cases check)
        subprocess.run([sys.executable, "-m", "listcon.jobs.cli", "embed", str(ADI), "--workdir", str(base),
                        "--no-progress"], env=ENV, check=True, capture_output=True)
        data, models = hostile_data(Path(tmp) / "data"), bad_models(Path(tmp) / "models")
        runs = hostile_runs(Path(tmp) / "runs", base)
        todo = cases(data, models, runs)
        rows = []
        for name, argv in tqdm(todo, desc="hostile inputs", unit="case"):
            rows.append(run_case(name, argv, base, args.timeout))
    print_table(rows, ["case", "outcome", "exit", "workdir_changed", "passages_lost", "message"])
    tally = {"cases": len(rows), **{k: sum(r["outcome"] == k for r in rows) for k in ("clear error", "accepted", "traceback", "hang")},
             "workdir_changed": sum(r["workdir_changed"] for r in rows),
             "passages_lost": sum(r["passages_lost"] for r in rows),
             "written_beside_workdir": sum(bool(r["written_beside_workdir"]) for r in rows)}
    print(json.dumps(tally))
    print(f"wrote {write_results('faults', {'tally': tally, 'rows': rows})}")


if __name__ == "__main__":
    run_bench(main)
