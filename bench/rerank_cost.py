"""Cost of iterative reranking with the listwise head over cached features (no text encoder).

For E=384, 2 layers: ms per query at N=100 and 1,000 candidates (batch 1 and 16) and 5,000
(batch 1), the FLOPs actually executed (counted from the shapes of every round, padding
included) over measured time, as a fraction of a dense matmul rate measured in this process.
On CUDA it also runs under fp16/bf16 autocast (SDPA); on CPU only fp32 (bf16 is slow here).

    python -m bench.rerank_cost [--device cuda]
"""

from __future__ import annotations

import argparse
import contextlib

import torch

from bench.common import matmul_gflops, peak_rss_mib, print_table, run_bench, timed, write_results
from listcon.model import ListConRanker, ListConRankerConfig, iterative_rerank
from listcon.model.ranker import head_flops

CASES = [(100, 1), (100, 16), (1000, 1), (1000, 16), (5000, 1)]


def run_case(model: ListConRanker, n: int, b: int, device: str, dtype: torch.dtype | None) -> dict:
    cfg = model.config
    q = torch.randn(b, cfg.embed_dim, device=device)
    p = torch.randn(b, n, cfg.embed_dim, device=device)
    mask = torch.ones(b, n, dtype=torch.bool, device=device)
    flops = []

    def score(query, passages, m):
        flops.append(head_flops(cfg, passages.shape[0], passages.shape[1]))
        autocast = torch.autocast(device, dtype=dtype) if dtype else contextlib.nullcontext()
        with autocast:
            return model(query, passages, m).float()

    def once() -> None:
        flops.clear()
        with torch.inference_mode():
            iterative_rerank(score, q, p, mask)
        if device == "cuda":
            torch.cuda.synchronize()

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    seconds = timed(once, repeats=3 if n < 5000 else 1)
    total = sum(flops)
    row = {"N": n, "batch": b, "dtype": str(dtype or torch.float32).replace("torch.", ""),
           "rounds": len(flops), "ms_per_query": 1e3 * seconds / b, "gflop": total / 1e9,
           "gflops_per_s": total / seconds / 1e9}
    # CUDA: this case's peak allocation; CPU: the process's peak RSS so far (cases run in order).
    row["peak_mib"] = (torch.cuda.max_memory_allocated() / 2**20) if device == "cuda" else peak_rss_mib()
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    torch.manual_seed(0)
    cfg = ListConRankerConfig(embed_dim=384, hidden_size=384, num_heads=12, num_layers=2, ffn_size=2048)
    model = ListConRanker(cfg).to(args.device).eval()
    dtypes: list[torch.dtype | None] = [None]
    if args.device == "cuda":
        dtypes += [torch.float16, torch.bfloat16]
    rows = []
    for dtype in dtypes:
        peak = matmul_gflops(4096 if args.device == "cuda" else 2048, dtype or torch.float32, args.device)
        for n, b in CASES:
            row = run_case(model, n, b, args.device, dtype)
            row["matmul_gflops_per_s"] = peak
            row["fraction_of_matmul"] = row["gflops_per_s"] / peak
            rows.append(row)
    print_table(rows, ["N", "batch", "dtype", "rounds", "ms_per_query", "gflop", "gflops_per_s",
                       "matmul_gflops_per_s", "fraction_of_matmul", "peak_mib"])
    path = write_results(f"rerank_cost_{args.device}" if args.device != "cpu" else "rerank_cost",
                         {"config": vars(cfg), "device": args.device, "rows": rows})
    print(f"wrote {path}")


if __name__ == "__main__":
    run_bench(main)
