"""What a scheduled rerun costs after a small change, against the full run it follows.

On scifact (the packaged MiniLM, hybrid top-1,000, a head of the demo's shape): a full run over
the test split less 1% of its queries, then (a) those 1% queries arrive, (b) 1% of the passages
change, (c) 0.5% of the passages are removed; each step runs as its own `listcon` process, as a
cron line per step would, and `listcon status` is asked before each. (a) is also timed with
retrieve and rerank in one process, as `listcon run` runs them: a step's process start (Python,
torch, transformers: seconds) is then paid once, and the ratio is the work's. A run from scratch on the final
inputs is compared with the incremental workdir's tables and TREC runs. With ``--synthetic N``
the corpus side is measured on N random-word passages (the hash backend: no model) with 1,000
queries, where (b) and (c) cost most.

The head's weights are random: its cost is the demo head's (same shape), its rankings mean
nothing, and equality with the run from scratch is what is checked.

    python -m bench.incremental                       # scifact (about 20 min on 2 cores)
    python -m bench.incremental --synthetic 1000000   # the corpus side at a million passages
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from bench.common import RESULTS, print_table, run_bench, write_results
from bench.scale import ENV, ROOT, make_collection
from listcon.model import ListConRanker, ListConRankerConfig
from listcon.pipeline.store.ranked_lists import read_ranked, read_trec
from listcon.pipeline.store.workdir import COMPARISON_RUNS, FIRST_STAGE_RUN, Workdir

SHARED = ROOT.parent / "shared" / "data"
DEMO_HEAD = ListConRankerConfig(signals=("fused", "rrf", "lexical", "dense", "dense_rank", "lexical_rank"),
                                anchor={"fused": 1.0, "rrf": 0.5}, head_cap=2.0)
SAID = re.compile(r"(retrieve: .*to do.*|rerank: .*to do.*|rerank: up to date.*|retrieve: up to date.*|index: .*in [0-9.]+s|"
                  r"passages: \d+ to encode.*|queries: \d+ to encode.*)")


def copy_collection(source: Path, to: Path, split: str) -> None:
    (to / "qrels").mkdir(parents=True, exist_ok=True)
    for name in ("corpus.jsonl", "queries.jsonl"):
        shutil.copy(source / name, to / name)
    shutil.copy(source / "qrels" / f"{split}.tsv", to / "qrels" / f"{split}.tsv")


def judged(data: Path, split: str) -> list[str]:
    lines = (data / "qrels" / f"{split}.tsv").read_text().splitlines()[1:]
    return list(dict.fromkeys(line.split("\t")[0] for line in lines))


def set_qrels(data: Path, split: str, full: list[str], leave_out: set[str]) -> None:
    """Rewrite the split's qrels from the saved full file, without the queries ``leave_out``."""
    lines = (data / "qrels" / f"{split}.full.tsv").read_text().splitlines()
    kept = [line for line in lines[1:] if line.split("\t")[0] not in leave_out]
    (data / "qrels" / f"{split}.tsv").write_text("\n".join([lines[0], *kept]) + "\n")


def edit_corpus(data: Path, change: set[str], remove: set[str]) -> None:
    rows = [json.loads(line) for line in (data / "corpus.jsonl").read_text().splitlines()]
    with open(data / "corpus.jsonl", "w") as out:
        for row in rows:
            if row["_id"] in remove:
                continue
            if row["_id"] in change:
                row["text"] = row["text"] + " (revised)"
            out.write(json.dumps(row) + "\n")


def step(name: str, argv: list[str]) -> dict:
    """One `listcon` command as its own process: wall seconds and what it said it did."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "listcon.jobs.cli", *argv], env=ENV, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode not in (0, 1) or (done.returncode == 1 and argv[0] != "status"):
        raise SystemExit(f"{name} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    said = [m.group(1) for m in SAID.finditer(done.stderr)]
    if argv[0] == "status":
        said = [line for line in done.stdout.splitlines() if line.startswith("stale")] or ["everything up to date"]
    row = {"step": name, "seconds": round(seconds, 2), "said": " | ".join(said)}
    print(f"{name:<28} {seconds:8.1f} s  {row['said']}", flush=True)
    return row


IN_PROCESS = """
import json, sys, time
started = time.perf_counter()
from listcon.jobs.config import load_config
from listcon.jobs.rerank_job import rerank
from listcon.jobs.retrieve_job import retrieve
from listcon.jobs.runtime import setup_logging, stop_ray_started_since
setup_logging()
config = load_config(sys.argv[1])
imported = time.perf_counter()
retrieve(config, progress=False)
retrieved = time.perf_counter()
rerank(config, progress=False)
reranked = time.perf_counter()
stop_ray_started_since(False)
print(json.dumps({"imports": imported - started, "retrieve": retrieved - imported, "rerank": reranked - retrieved}))
"""


def in_process(name: str, conf: Path) -> dict:
    """Retrieve then rerank in one process, as `listcon run` does: each step's seconds after the imports."""
    done = subprocess.run([sys.executable, "-c", IN_PROCESS, str(conf)], env=ENV, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{name} failed:\n{done.stderr[-3000:]}")
    seconds = json.loads(done.stdout.strip().splitlines()[-1])
    said = " | ".join(m.group(1) for m in SAID.finditer(done.stderr))
    row = {"step": name, "seconds": round(seconds["retrieve"] + seconds["rerank"], 2), "said": said,
           **{k: round(v, 2) for k, v in seconds.items()}}
    print(f"{name:<28} {row['seconds']:8.1f} s  (imports {seconds['imports']:.1f} s, retrieve {seconds['retrieve']:.1f} s, "
          f"rerank {seconds['rerank']:.1f} s)  {said}", flush=True)
    return row


def run_all(phase: str, conf: Path, steps=("embed", "index", "retrieve", "rerank")) -> list[dict]:
    rows = [step(f"{phase}: status", ["status", str(conf)])]
    for name in steps:
        rows.append(step(f"{phase}: {name}", [name, "--config", str(conf), "--no-progress"]))
    return rows


def outputs(work: Path, split: str) -> dict:
    w = Workdir(work)
    tables = {name: read_ranked(uri).sort_by([("query_id", "ascending"), ("rank", "ascending")])
              for name, uri in (("candidates", w.candidates(split)), ("rankings", w.rankings(split)))}
    return {"tables": tables,
            "runs": {name: read_trec(w.run(split, name)) for name in (FIRST_STAGE_RUN, *COMPARISON_RUNS, "listcon")}}


def compare(mine: dict, scratch: dict) -> dict:
    """Ids and ranks equal (True/False) and the largest score difference, per table and over the runs."""
    found = {}
    for name, table in scratch["tables"].items():
        other = mine["tables"][name]
        same_ids = other.num_rows == table.num_rows and all(
            other[c].to_pylist() == table[c].to_pylist() for c in ("query_id", "passage_id", "rank"))
        gap = float(np.max(np.abs(other["score"].to_numpy() - table["score"].to_numpy()))) if same_ids and table.num_rows else None
        found[name] = {"same_ids_and_ranks": same_ids, "max_score_difference": gap}
    runs_same = all(mine["runs"][n].keys() == r.keys() and all(mine["runs"][n][q].keys() == s.keys() for q, s in r.items())
                    for n, r in scratch["runs"].items())
    gaps = [abs(mine["runs"][n][q][p] - v) for n, r in scratch["runs"].items() for q, s in r.items() for p, v in s.items()
            if runs_same]
    found["trec_runs"] = {"same_queries_and_passages": runs_same, "max_score_difference": max(gaps) if gaps else None}
    return found


def kept_rows_identical(before: dict, after: dict, queries: set[str]) -> bool:
    def rows(table: pa.Table) -> pa.Table:
        return table.filter(pa.array([q in queries for q in table["query_id"].to_pylist()]))

    return all(rows(after["tables"][n]).equals(rows(before["tables"][n])) for n in ("candidates", "rankings"))


def config(path: Path, data: Path, work: Path, head: Path, split: str, k: int, extra: str = "") -> Path:
    path.write_text(f'data = "{data}"\nworkdir = "{work}"\nsplit = "{split}"\n[embed]\nprune = true\n{extra}'
                    f'[retrieve]\nk = {k}\n[rerank]\nmodel_dir = "{head}"\n')
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--collection", default="scifact")
    parser.add_argument("--synthetic", type=int, help="N random-word passages with the hash backend, instead")
    parser.add_argument("--root", type=Path, default=ROOT / "work" / "bench-incremental")
    parser.add_argument("--rerun-a", action="store_true",
                        help="time (a) again on the workdir a finished run left, and add it to that run's JSON")
    args = parser.parse_args()
    name = f"synthetic-{args.synthetic}" if args.synthetic else args.collection
    root = args.root / name
    if args.rerun_a:
        return rerun_a(root, name)
    shutil.rmtree(root, ignore_errors=True)
    data, work, scratch = root / "data", root / "work", root / "scratch"
    if args.synthetic:
        make_collection(args.root / f"source-{args.synthetic}", args.synthetic, 1000)
        shutil.copytree(args.root / f"source-{args.synthetic}", data)
        split, k, extra = "q1000", 100, '[encoder]\nbackend = "hash"\nbatch_size = 4096\n'
    else:
        copy_collection(SHARED / args.collection, data, "test")
        split, k, extra = "test", 1000, ""
    shutil.copy(data / "qrels" / f"{split}.tsv", data / "qrels" / f"{split}.full.tsv")
    head = root / "head"
    torch.manual_seed(0)
    ListConRanker(DEMO_HEAD if not args.synthetic else ListConRankerConfig(hidden_size=64, num_heads=4, ffn_size=128)
                  ).save_pretrained(head)
    conf = config(root / "job.toml", data, work, head, split, k, extra)
    queries = judged(data, split)
    rng = np.random.default_rng(0)
    late = set(rng.choice(queries, size=max(1, len(queries) // 100), replace=False).tolist())
    set_qrels(data, split, queries, late)

    rows = run_all("full", conf)
    full = {r["step"].split(": ")[1]: r["seconds"] for r in rows}
    status_seconds = step("status after the full run", ["status", str(conf)])["seconds"]
    before = outputs(work, split)

    set_qrels(data, split, queries, set())  # (a) the 1% queries arrive
    rows += run_all("(a) +1% queries", conf, ("retrieve", "rerank"))
    after = outputs(work, split)
    a = {r["step"].split(": ")[1]: r["seconds"] for r in rows if r["step"].startswith("(a)")}
    a_ratio = (a["retrieve"] + a["rerank"]) / (full["retrieve"] + full["rerank"])
    a_kept = kept_rows_identical(before, after, set(before["runs"]["listcon"]))
    # the same arrival, with retrieve and rerank in one process (as `listcon run` runs them)
    set_qrels(data, split, queries, late)
    in_process("(a) queries leave again", conf)
    set_qrels(data, split, queries, set())
    a_one = in_process("(a) +1% queries, one process", conf)
    rows.append(a_one)

    passages = [json.loads(line)["_id"] for line in (data / "corpus.jsonl").read_text().splitlines()]
    judged_passages = {line.split("\t")[1] for line in (data / "qrels" / f"{split}.tsv").read_text().splitlines()[1:]}
    free = [p for p in passages if p not in judged_passages]
    order = rng.permutation(len(free))
    changed = {free[i] for i in order[: len(passages) // 100]}
    removed = {free[i] for i in order[len(passages) // 100 : len(passages) // 100 + max(1, len(passages) // 200)]}
    edit_corpus(data, changed, set())  # (b) 1% of the passages change
    rows += run_all("(b) 1% passages changed", conf)
    edit_corpus(data, set(), removed)  # (c) 0.5% of the passages are removed
    rows += run_all("(c) 0.5% passages removed", conf)
    final = outputs(work, split)
    leaked = sorted({p for t in final["tables"].values() for p in t["passage_id"].to_pylist()} & removed)
    leaked += sorted({p for r in final["runs"].values() for s in r.values() for p in s} & removed)

    scratch_conf = config(root / "scratch.toml", data, scratch, head, split, k, extra)
    rows += run_all("from scratch", scratch_conf, ("embed", "index"))
    full_one = in_process("from scratch: retrieve + rerank, one process", scratch_conf)
    rows.append(full_one)
    a_one_ratio = a_one["seconds"] / full_one["seconds"]
    equal = compare(final, outputs(scratch, split))
    print_table(rows, ["step", "seconds"])
    print(f"(a) retrieve + rerank of 1% new queries: {a_ratio:.1%} of the full run's as separate processes, "
          f"{a_one_ratio:.1%} in one process; old rows identical: {a_kept}")
    print(f"(c) removed passages found in any output: {len(leaked)}; incremental vs scratch: {equal}")
    print(f"status on the full run's workdir: {status_seconds:.2f} s")
    write_results(f"incremental-{name}", {
        "collection": name, "split": split, "k": k, "queries": len(queries), "passages": len(passages),
        "late_queries": len(late), "changed_passages": len(changed), "removed_passages": len(removed),
        "head": "random weights, the demo head's shape" if not args.synthetic else "random, hidden 64",
        "steps": rows, "a_retrieve_rerank_share_of_full": round(a_ratio, 4),
        "a_retrieve_rerank_share_of_full_one_process": round(a_one_ratio, 4), "a_old_rows_identical": a_kept,
        "c_removed_passages_in_outputs": len(leaked), "incremental_vs_scratch": equal,
        "status_seconds": status_seconds})


def rerun_a(root: Path, name: str) -> None:
    """(a) once more on a finished run's workdir (its final inputs): 1% of the queries leave, then come
    back and are timed, as separate processes and in one; the shares are of the recorded full run."""
    found = RESULTS / f"incremental-{name}.json"
    recorded = json.loads(found.read_text())
    conf, data, split = root / "job.toml", root / "data", recorded["split"]
    queries = judged(data, split)
    late = set(np.random.default_rng(1).choice(queries, size=max(1, len(queries) // 100), replace=False).tolist())
    full = {r["step"].split(": ")[1]: r["seconds"] for r in recorded["steps"] if r["step"].startswith("full: ")}
    one = next(r["seconds"] for r in recorded["steps"] if r["step"].endswith("retrieve + rerank, one process"))
    set_qrels(data, split, queries, late)
    in_process("(a) again: queries leave", conf)
    set_qrels(data, split, queries, set())
    rows = [step("(a) again: retrieve", ["retrieve", "--config", str(conf), "--no-progress"]),
            step("(a) again: rerank", ["rerank", "--config", str(conf), "--no-progress"])]
    set_qrels(data, split, queries, late)
    in_process("(a) again: queries leave", conf)
    set_qrels(data, split, queries, set())
    rows.append(in_process("(a) again: one process", conf))
    share = (rows[0]["seconds"] + rows[1]["seconds"]) / (full["retrieve"] + full["rerank"])
    print(f"(a) again: {share:.1%} of the full run's as separate processes, {rows[2]['seconds'] / one:.1%} in one process")
    recorded["a_again"] = {"steps": rows, "share_of_full": round(share, 4),
                           "share_of_full_one_process": round(rows[2]["seconds"] / one, 4)}
    found.write_text(json.dumps(recorded, indent=2) + "\n")


if __name__ == "__main__":
    run_bench(main)
