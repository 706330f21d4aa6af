"""Memory as the work grows: a synthetic million-passage collection through embed, index,
retrieve (1,000 -> 10,000 -> 50,000 queries x top-1,000) and rerank (1,000 -> 10,000 queries).

Each step runs as its own `listcon` process, as a scheduled job would; a sampler records the
peak resident memory of that process (the driver) and of the Ray workers it started (processes
named ``ray::...`` below it). Passage and query vectors come from the ``hash`` backend (each
text's vector from its content hash: no model, no encoding cost, no meaning), so the numbers
are about the pipeline around the encoder; the texts are random words, so BM25 and the fused
candidates do real work. The head is small (it measures memory; `rerank_throughput` measures
the model's cost). The driver's peak must stay within 20% from the smallest query set to the
largest.

    python -m bench.scale                          # 1M passages (about an hour on 2 cores)
    python -m bench.scale --passages 20000 --queries 200 1000 --rerank 200 1000   # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import torch

from bench.common import print_table, run_bench, write_results

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "HF_HUB_OFFLINE": "1",
       "TOKENIZERS_PARALLELISM": "false"}


def make_collection(path: Path, passages: int, queries: int, seed: int = 0) -> None:
    """BEIR layout: random-word passages and 6-word queries (Zipf-like word frequencies), one random
    passage judged per query (only so every query is a judged one: quality here means nothing), and
    one qrels split per query count (``q<N>``)."""
    if (path / "done").is_file() and json.loads((path / "done").read_text()) == [passages, queries, seed]:
        return
    rng = np.random.default_rng(seed)
    vocab = np.array([f"w{i:x}z" for i in range(50_000)])
    weights = 1.0 / np.arange(1, len(vocab) + 1) ** 1.05
    cdf = np.cumsum(weights / weights.sum())
    draw = lambda shape: vocab[np.minimum(np.searchsorted(cdf, rng.random(shape)), len(vocab) - 1)]  # noqa: E731
    path.mkdir(parents=True, exist_ok=True)
    with open(path / "corpus.jsonl", "w") as out:
        for start in range(0, passages, 100_000):
            words = draw((min(100_000, passages - start), 40))
            out.writelines(json.dumps({"_id": f"p{start + i}", "title": "", "text": " ".join(row)}) + "\n"
                           for i, row in enumerate(words))
    targets = rng.integers(0, passages, size=queries)
    with open(path / "queries.jsonl", "w") as out:
        out.writelines(json.dumps({"_id": f"q{i}", "text": " ".join(row)}) + "\n" for i, row in enumerate(draw((queries, 6))))
    (path / "qrels").mkdir(exist_ok=True)
    (path / "done").unlink(missing_ok=True)
    for count in sorted({*QUERY_SETS, queries}):
        if count <= queries:
            lines = (f"q{i}\tp{targets[i]}\t1\n" for i in range(count))
            (path / "qrels" / f"q{count}.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(lines))
    (path / "done").write_text(json.dumps([passages, queries, seed]))


QUERY_SETS: list[int] = []


def _rss_parts(pid: int) -> dict[str, float]:
    """RSS split as Linux reports it (KiB): private heap, mapped files, and shared memory (Ray's object
    store pages a process touched count in its RSS but belong to the store)."""
    parts = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in ("RssAnon", "RssFile", "RssShmem"):
                parts[name] = float(value.split()[0])
    return parts


class Sampler:
    """Peak RSS (MiB) of one process and, separately, of the Ray workers below it, every 0.2 s."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.driver = self.workers = 0.0
        self.split = {"RssAnon": 0.0, "RssFile": 0.0, "RssShmem": 0.0}  # the driver's peak of each part
        self.running = True
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while self.running:
            try:
                self.driver = max(self.driver, self.process.memory_info().rss / 2**20)
                for part, kib in _rss_parts(self.process.pid).items():
                    self.split[part] = max(self.split[part], kib / 1024)
                total = 0.0
                for child in self.process.children(recursive=True):
                    try:
                        if child.name().startswith("ray::"):
                            total += child.memory_info().rss / 2**20
                    except psutil.Error:
                        continue
                self.workers = max(self.workers, total)
            except psutil.Error:
                pass
            time.sleep(0.2)

    def stop(self) -> None:
        self.running = False
        self.thread.join()


def step(name: str, args: list[str], rows: int) -> dict:
    """Run one `listcon` step; its wall time and peak memory."""
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "listcon.jobs.cli", *args, "--no-progress"], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    sampler = Sampler(proc.pid)
    _, err = proc.communicate()
    sampler.stop()
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed:\n{err[-3000:]}")
    row = {"step": name, "rows": rows, "seconds": round(time.perf_counter() - started, 1),
           "driver_peak_mib": round(sampler.driver), "workers_peak_mib": round(sampler.workers),
           **{f"driver_{part[3:].lower()}_mib": round(v) for part, v in sampler.split.items()}}
    print(row, flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--passages", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, nargs="+", default=[1000, 10_000, 50_000])
    parser.add_argument("--rerank", type=int, nargs="+", default=[1000, 10_000])
    parser.add_argument("--k", type=int, default=1000)
    parser.add_argument("--root", type=Path, default=ROOT / "work" / "scale", help="data and workdir (not in git)")
    parser.add_argument("--keep-workdir", action="store_true",
                        help="reuse the workdir (steps with nothing new to do then measure a no-op)")
    args = parser.parse_args()
    QUERY_SETS[:] = sorted({*args.queries, *args.rerank})
    data, work = args.root / f"data-{args.passages}", args.root / f"work-{args.passages}"
    started = time.perf_counter()
    make_collection(data, args.passages, max(QUERY_SETS))
    if not args.keep_workdir:
        shutil.rmtree(work, ignore_errors=True)  # every step does its whole work
    print(f"synthetic collection: {args.passages} passages, {max(QUERY_SETS)} queries "
          f"({time.perf_counter() - started:.0f} s); vectors from the hash backend (content hashes, no model)", flush=True)
    on = ["--workdir", str(work)]
    rows = [step("embed", ["embed", str(data), *on, "--backend", "hash", "--batch-size", "4096",
                           "--chunk-rows", "250000"], args.passages)]
    nlist = int(4 * args.passages ** 0.5)
    rows.append(step("index", ["index", *on, "--kind", "ivf", "--nlist", str(nlist), "--nprobe", "16"], args.passages))
    for count in args.queries:
        rows.append(step(f"retrieve {count} x top-{args.k}",
                         ["retrieve", str(data), *on, "--backend", "hash", "--split", f"q{count}", "--k", str(args.k)],
                         count))
    head = work / "head"
    if not (head / "config.json").is_file():
        from listcon.model import ListConRanker, ListConRankerConfig

        torch.manual_seed(0)
        ListConRanker(ListConRankerConfig(hidden_size=64, num_heads=4, ffn_size=128)).save_pretrained(head)
    for count in args.rerank:
        if count not in args.queries:
            step(f"retrieve {count}", ["retrieve", str(data), *on, "--backend", "hash", "--split", f"q{count}",
                                       "--k", str(args.k)], count)
        rows.append(step(f"rerank {count} x {args.k}", ["rerank", str(data), *on, "--split", f"q{count}",
                                                         "--model-dir", str(head), "--shard-size", "256"], count))
    retrieval = [r for r in rows if r["step"].startswith("retrieve")]
    growth = retrieval[-1]["driver_peak_mib"] / retrieval[0]["driver_peak_mib"] if len(retrieval) > 1 else 1.0
    print_table(rows, ["step", "rows", "seconds", "driver_peak_mib", "workers_peak_mib"])
    print(f"retrieve driver peak, {retrieval[-1]['rows']} vs {retrieval[0]['rows']} queries: x{growth:.3f} "
          f"({'within' if growth <= 1.2 else 'ABOVE'} the 1.2 bound)")
    write_results("scale", {"passages": args.passages, "k": args.k, "nlist": nlist, "nprobe": 16,
                            "vectors": "hash backend: each text's vector from its content hash (no model, no encoding "
                                       "cost, no meaning); texts are random words, so BM25 and fusion do real work",
                            "head": "hidden 64, 4 heads, ffn 128, 2 layers (memory, not the model's cost)",
                            "steps": rows, "retrieve_driver_growth": round(growth, 3)})


if __name__ == "__main__":
    run_bench(main)
