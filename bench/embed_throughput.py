"""Embedding throughput: the Ray Data embed job vs the plain encoder vs sentence-transformers.

Same model (packaged all-MiniLM-L6-v2), same texts (``--n`` scifact abstracts), same torch
threads, in one process: passages/s of ``SentenceTransformer.encode``, of listcon's
``TextEncoder.encode`` (the plain call), and of the embed job (Ray actor pool + Lance
commits, Ray already started), with their ratios and peak memory.

    python -m bench.embed_throughput [--n 300] [--device cuda]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from pathlib import Path

import psutil
import torch

from bench.common import peak_rss_mib, print_table, run_bench, write_results
from listcon.jobs.runtime import setup_logging, start_ray
from listcon.model import default_model_path
from listcon.jobs.config import EmbedOptions, RayOptions
from listcon.jobs.embed_job import ray_encoder
from listcon.pipeline.encoding.embed import embed_texts
from listcon.pipeline.encoding.encode_batch import EncoderSettings
from listcon.pipeline.data.readers import read_corpus

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "scifact"


class TreeMemory:
    """Peak total RSS of this process and all its descendants (Ray workers included), sampled."""

    def __init__(self) -> None:
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for proc in [me, *me.children(recursive=True)]:
                try:
                    total += proc.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total / 2**20)
            time.sleep(0.2)

    def __enter__(self) -> "TreeMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    setup_logging()
    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    corpus = read_corpus(DATA, limit=args.n)
    ids, texts = corpus.table["id"].to_pylist(), corpus.texts()
    settings = EncoderSettings(batch_size=args.batch_size)
    rows = []

    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(default_model_path()), device=args.device)
    st.encode(texts[:8])
    start = time.perf_counter()
    st.encode(texts, batch_size=args.batch_size)
    st_s = time.perf_counter() - start
    rows.append({"method": "sentence-transformers encode", "seconds": st_s, "passages_per_s": len(texts) / st_s})

    encoder = settings.load(device=args.device)
    encoder.encode(texts[:8])
    start = time.perf_counter()
    encoder.encode(texts)
    plain_s = time.perf_counter() - start
    rows.append({"method": "listcon TextEncoder.encode", "seconds": plain_s, "passages_per_s": len(texts) / plain_s})
    driver_peak = peak_rss_mib()

    start = time.perf_counter()
    start_ray(num_cpus=threads)
    ray_init_s = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp, TreeMemory() as memory:
        report = embed_texts(ids, texts, f"{tmp}/passages.lance", settings,
                             ray_encoder(RayOptions(), EmbedOptions(
                                 cpus_per_actor=threads if args.device == "cpu" else None,
                                 gpus_per_actor=1.0 if args.device == "cuda" else 0.0)), progress=False)
    rows.append({"method": "listcon embed job (Ray Data + Lance)", "seconds": report.seconds,
                 "passages_per_s": len(texts) / report.seconds})
    for row in rows:
        row["vs_sentence_transformers"] = row["passages_per_s"] / rows[0]["passages_per_s"]
    print_table(rows, ["method", "seconds", "passages_per_s", "vs_sentence_transformers"])
    print(f"job overhead vs the plain encoder call: {report.seconds - plain_s:.1f}s ({report.seconds / plain_s:.2f}x); "
          f"ray.init {ray_init_s:.1f}s; peak RSS driver {driver_peak:.0f} MiB, job process tree {memory.peak:.0f} MiB")
    path = write_results("embed_throughput" + ("" if args.device == "cpu" else "_" + args.device), {"device": args.device,
        "texts": len(texts), "threads": threads, "batch_size": args.batch_size, "rows": rows,
        "job_over_plain": report.seconds / plain_s, "job_overhead_s": report.seconds - plain_s,
        "ray_init_s": ray_init_s, "peak_rss_driver_mib": driver_peak, "peak_rss_job_tree_mib": memory.peak,
    })
    print(f"wrote {path}")


if __name__ == "__main__":
    run_bench(main)
