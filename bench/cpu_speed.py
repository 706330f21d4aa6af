"""CPU speed at equal quality: encoder backends (torch, onnx, onnx-int8) and the int8 head.

1. Encoding: passages/s of each backend on the same scifact abstracts (sorted by length,
   batch 32, the model's 256-token limit) in this process, as ratios to torch fp32, with the
   cosine of each backend's vectors to torch's.
2. Quality: scifact test nDCG@10 of the dense first stage and of the full pipeline (hybrid
   candidates reranked by the demo's head at 1,000) with the corpus and queries embedded
   by each backend. torch is the demo's workdir (work/scifact); each ONNX backend gets its
   own workdir under work/cpu_speed/ (embed, index, retrieve there; the demo head reranks).
3. Head: iterative reranking of 1,000 candidates per query, fp32 vs ``--precision int8``:
   the head alone (ListScorer on fixed features, batch 1 and 16, interleaved repeats), and
   the Reranker over the demo workdir (features, signals and head) on the same 300 queries
   with the nDCG@10 of each run.

Needs `make demo` to have run (work/scifact with its head). Writes bench/results/cpu_speed.json.

    python -m bench.cpu_speed [--n 400] [--queries 300] [--skip-quality]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from bench.common import print_table, run_bench, write_results
from listcon.jobs.config import load_config
from listcon.jobs.embed_job import embed
from listcon.jobs.evaluate_job import evaluate
from listcon.jobs.index_job import index
from listcon.jobs.rerank_job import rerank
from listcon.jobs.retrieve_job import retrieve
from listcon.jobs.runtime import setup_logging
from listcon.model import ListConRanker, ListScorer, OnnxEncoder, TextEncoder
from listcon.pipeline.data.readers import read_corpus, read_qrels
from listcon.pipeline.evaluation.evaluate import per_query, without_self
from listcon.pipeline.rerank.reranker import Reranker
from listcon.pipeline.rerank.settings import RerankSettings
from listcon.pipeline.store.ranked_lists import read_trec

ROOT = Path(__file__).resolve().parents[1]
BACKENDS = ("torch", "onnx", "onnx-int8")
MEASURE = "nDCG@10"


def encoders(export_dir: Path) -> dict:
    return {"torch": TextEncoder(device="cpu", batch_size=32),
            "onnx": OnnxEncoder(batch_size=32, export_dir=export_dir),
            "onnx-int8": OnnxEncoder(batch_size=32, backend="onnx-int8", export_dir=export_dir)}


def encode_rows(texts: list[str]) -> list[dict]:
    """Throughput and fidelity of each backend on ``texts``, interleaved so load hits all alike."""
    with tempfile.TemporaryDirectory() as tmp:
        models = encoders(Path(tmp))
        for model in models.values():  # warm-up: thread pools, allocator, first-call setup
            model.encode(texts[:32])
        seconds = {name: [] for name in models}
        vectors = {}
        for _ in range(2):
            for name, model in models.items():
                start = time.perf_counter()
                vectors[name] = model.encode(texts)
                seconds[name].append(time.perf_counter() - start)
    base = min(seconds["torch"])
    reference = vectors["torch"]
    rows = []
    for name in models:
        v = vectors[name]
        cos = (v * reference).sum(1) / np.linalg.norm(v, axis=1) / np.linalg.norm(reference, axis=1)
        best = min(seconds[name])
        rows.append({"backend": name, "texts": len(texts), "passages_per_s": len(texts) / best,
                     "vs_torch": base / best, "cos_mean": float(cos.mean()), "cos_min": float(cos.min())})
    return rows


def quality_rows(config_path: Path) -> list[dict]:
    """Dense and full-pipeline nDCG@10 on scifact test with each backend's vectors."""
    demo = load_config(config_path)
    head = demo.train_out
    rows = []
    for backend in BACKENDS:
        config = demo
        if backend != "torch":
            config = replace(demo, workdir=str(ROOT / "work" / "cpu_speed" / backend),
                             encoder=replace(demo.encoder, backend=backend),
                             rerank=replace(demo.rerank, model_dir=head, depths=()))
            start = time.perf_counter()
            embed(config, progress=False)
            embed_seconds = time.perf_counter() - start
            index(config)
            retrieve(config, progress=False)
            rerank(config, progress=False)
        else:
            embed_seconds = None
        summary = evaluate(config).summary
        rows.append({"backend": backend, "dense": summary["dense"][MEASURE]["mean"],
                     "hybrid-convex": summary["hybrid-convex"][MEASURE]["mean"],
                     "listcon": summary[config.rerank.run_name][MEASURE]["mean"],
                     "embed_corpus_s": embed_seconds})
    return rows


def head_only_rows(config_path: Path, n: int = 1000) -> list[dict]:
    """Seconds per query of iterative inference with the demo head over fixed features."""
    config = load_config(config_path)
    head = ListConRanker.from_pretrained(config.train_out)
    width = head.config.embed_dim + len(head.config.signals)
    rng = np.random.default_rng(0)
    rows = []
    for batch in (1, 16):
        queries = rng.standard_normal((batch, head.config.embed_dim)).astype(np.float32)
        lists = [rng.random((n, width), dtype=np.float32) for _ in range(batch)]
        scorers = {p: ListScorer(head, config.schedule, precision=p, device="cpu") for p in ("fp32", "int8")}
        seconds = {p: [] for p in scorers}
        for p, scorer in scorers.items():
            scorer.rank(queries, lists)  # warm-up
        for _ in range(3):
            for p, scorer in scorers.items():
                start = time.perf_counter()
                scorer.rank(queries, lists)
                seconds[p].append((time.perf_counter() - start) / batch)
        for p in scorers:
            rows.append({"head": p, "candidates": n, "batch": batch, "s_per_query": float(np.median(seconds[p])),
                         "vs_fp32": float(np.median(seconds["fp32"]) / np.median(seconds[p]))})
    return rows


def head_rows(config_path: Path, queries: int) -> list[dict]:
    """Rerank s/query at the full candidate depth, fp32 vs int8, same queries, same process."""
    config = load_config(config_path)
    work = config.work
    first_stage = read_trec(work.run(config.split, "first_stage"))
    lists = {q: sorted(docs, key=docs.get, reverse=True) for q, docs in sorted(first_stage.items())[:queries]}
    qrels = read_qrels(config.data, config.split)
    rows, top10 = [], {}
    for precision in ("fp32", "int8"):
        reranker = Reranker.from_pretrained(config.train_out, work, settings=RerankSettings(precision=precision),
                                            schedule=config.schedule)
        reranker.rerank(dict(list(lists.items())[:2]))  # warm-up (and the int8 copy is made)
        start = time.perf_counter()
        ranked = reranker.rerank(lists)
        seconds = time.perf_counter() - start
        run: dict[str, dict[str, float]] = {}
        for q, p, score in zip(ranked["qid"], ranked["docno"], ranked["score"]):
            run.setdefault(q, {})[p] = float(score)
        top10[precision] = {q: set(sorted(docs, key=docs.get, reverse=True)[:10]) for q, docs in run.items()}
        scores = per_query(qrels, without_self(run), (MEASURE,))[MEASURE]
        rows.append({"head": precision, "queries": len(lists), "candidates": int(np.mean([len(v) for v in lists.values()])),
                     "s_per_query": seconds / len(lists), MEASURE: float(np.mean([scores[q] for q in lists if q in scores]))})
    same_top10 = np.mean([len(top10["fp32"][q] & top10["int8"][q]) / 10 for q in lists])
    base = rows[0]["s_per_query"]
    for row in rows:
        row["vs_fp32"] = base / row["s_per_query"]
        row["top10_overlap_with_fp32"] = float(same_top10) if row["head"] == "int8" else 1.0
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=ROOT / "jobs" / "demo.toml")
    parser.add_argument("--n", type=int, default=400, help="abstracts for the encoding throughput")
    parser.add_argument("--queries", type=int, default=300, help="queries for the head timing")
    parser.add_argument("--skip-quality", action="store_true", help="skip the full-corpus embeddings per backend")
    args = parser.parse_args()
    setup_logging()
    logging.getLogger("listcon").setLevel(logging.WARNING)
    config = load_config(args.config)
    corpus = read_corpus(config.data)
    texts = sorted(corpus.texts()[: args.n], key=len, reverse=True)
    encode = encode_rows(texts)
    print_table(encode, ["backend", "texts", "passages_per_s", "vs_torch", "cos_mean", "cos_min"])
    head_only = head_only_rows(args.config)
    print_table(head_only, ["head", "candidates", "batch", "s_per_query", "vs_fp32"])
    head = head_rows(args.config, args.queries)
    print_table(head, ["head", "queries", "candidates", "s_per_query", "vs_fp32", MEASURE, "top10_overlap_with_fp32"])
    quality = [] if args.skip_quality else quality_rows(args.config)
    if quality:
        print_table(quality, ["backend", "dense", "hybrid-convex", "listcon", "embed_corpus_s"])
    path = write_results("cpu_speed", {"threads": torch.get_num_threads(), "encode": encode, "head_only": head_only, "head": head,
                                       "quality": quality, "measure": MEASURE})
    print(f"wrote {path}")


if __name__ == "__main__":
    run_bench(main)
