#!/usr/bin/env bash
# The GPU-only checks and numbers (issue: correct on GPUs and many workers). Run on a machine
# with a CUDA GPU after `make setup` with faiss-gpu instead of faiss-cpu:
#   .venv/bin/pip uninstall -y faiss-cpu && .venv/bin/pip install -e '.[gpu]'
# and the demo's workdir (work/scifact, `make demo`). Results land in bench/results/*_cuda.json,
# and bench/results/gpu.json gathers them with the same rerank on this machine's CPU for the ratio.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export RAY_USAGE_STATS_ENABLED=0 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false

nvidia-smi --query-gpu=name,memory.total --format=csv
$PY - <<'PY'
import numpy as np, torch, faiss
from listcon.pipeline.retrieval.faiss_index import GPU_MAX_K, IndexSpec, build, for_search, search
assert torch.cuda.is_available(), "no CUDA device visible to torch"
print("faiss GPUs:", faiss.get_num_gpus())
x = np.random.default_rng(0).standard_normal((20000, 384)).astype("float32")
q = x[:16]
cpu = build(x, IndexSpec(kind="flat", use_gpu=False))
for k in (1000, GPU_MAX_K + 952):  # within and above faiss's GPU k limit (above it: searched on the CPU)
    gpu = for_search(build(x, IndexSpec(kind="flat")), IndexSpec(kind="flat"), k)
    a, b = search(cpu, q, k, "cosine")[1], search(gpu, q, k, "cosine")[1]
    print(f"k={k}: on {'GPU' if k <= GPU_MAX_K else 'CPU'}; top-10 equal to CPU search: {(a[:, :10] == b[:, :10]).mean():.3f}")
PY
$PY -m bench.rerank_cost --device cuda
$PY -m bench.embed_throughput --device cuda --n 2000 --batch-size 256
$PY -m bench.rerank_throughput --device cuda
$PY -m bench.train_throughput --device cuda
$PY -m bench.rerank_throughput --device cpu --queries 50
$PY - <<'PY'
import json
from bench.common import write_results, RESULTS
load = lambda name: json.loads((RESULTS / f"{name}.json").read_text())  # noqa: E731
gpu, cpu = load("rerank_throughput_cuda")["rows"][0], load("rerank_throughput")["rows"][0]
rows = {"rerank_end_to_end": gpu, "rerank_cpu_same_workdir": cpu,
        **{name: load(f"{name}_cuda")["rows"] for name in ("rerank_cost", "embed_throughput", "train_throughput")}}
ratio = gpu["queries_per_s"] / cpu["queries_per_s"]
print(f"rerank, {gpu['depth']} candidates, take + model + write: GPU {gpu['queries_per_s']:.0f} queries/s, "
      f"CPU {cpu['queries_per_s']:.2f} queries/s ({ratio:.0f}x); goal 2,000/s: {'met' if gpu['queries_per_s'] >= 2000 else 'not met'}")
print("wrote", write_results("gpu", {"rows": rows, "rerank_gpu_over_cpu": ratio, "goal_2000_qps": gpu["queries_per_s"] >= 2000}))
PY
