"""Multi-worker and device correctness on CPU: two gloo DDP ranks, placement, devices, checkpoints.

The DDP test runs the one training loop in two processes joined by gloo (what Ray Train
sets up per worker), with the wrap rule the train job uses, so a rank waiting in an
all-reduce the other never joins fails within the process-group timeout instead of hanging.
"""

from __future__ import annotations

import datetime
import json
import socket
import tomllib
from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from listcon.jobs.placement import NodeResources, PlacementError, cpus_per_actor
from listcon.jobs.train_job import in_process_device
from listcon.model import ListConRankerConfig, PruneSchedule, TextEncoder
from listcon.pipeline.retrieval.faiss_index import GPU_MAX_K, IndexSpec, search_on_gpu
from listcon.pipeline.training.features import EncodedFeatures, Lists, Validation
from listcon.pipeline.training.loop import TrainSettings, ddp_unused_parameters, fit
from listcon.schemas import QRELS

ROOT = Path(__file__).resolve().parents[1]
WORDS = "cell protein gene cancer blood heart lung liver brain drug".split()


def stage_two_data(model_dir: Path, n_lists: int):
    encoder = TextEncoder(model_dir, device="cpu")
    passages = {f"p{i}": f"{WORDS[i % 10]} {WORDS[(i * 3) % 10]} study" for i in range(30)}
    queries = {f"q{i}": WORDS[i % 10] for i in range(n_lists + 1)}
    lists = Lists([f"q{i}" for i in range(n_lists)], [[f"p{(i + k) % 30}" for k in range(6)] for i in range(n_lists)],
                  [[1] + [0] * 5 for _ in range(n_lists)])
    held = f"q{n_lists}"
    validation = Validation([(held, [f"p{k}" for k in range(8)])],
                            pa.Table.from_pylist([{"query_id": held, "passage_id": "p5", "relevance": 1}], schema=QRELS))
    return lists, validation, EncodedFeatures(encoder, passages, queries)


def _rank(rank: int, world: int, port: int, model_dir: str, out: str, n_lists: int) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=60))
    try:
        torch.set_num_threads(1)
        settings = TrainSettings(stage=2, epochs=2, batch_size=1, grad_accum=2, lr=1e-3,
                                 head=ListConRankerConfig(hidden_size=16, num_heads=4, ffn_size=32, num_layers=1))
        lists, validation, features = stage_two_data(Path(model_dir), n_lists)
        reductions = []

        def counting_allreduce(state, bucket):
            reductions.append(1)
            tensor = bucket.buffer().div_(world)
            return dist.all_reduce(tensor, async_op=True).get_future().then(lambda f: f.value()[0])

        def wrap(module):
            ddp = DistributedDataParallel(module, find_unused_parameters=ddp_unused_parameters(settings))
            ddp.register_comm_hook(None, counting_allreduce)
            return ddp

        result = fit(lists, validation, features, settings, Path(out) / f"rank{rank}", wrap=wrap,
                     schedule=PruneSchedule(theta=4, min_drop=2))
        weights = [p.detach().clone() for p in features.encoder.model.parameters()]
        digest = float(sum(w.double().sum() for w in weights))
        steps = sum(h["steps"] for h in result.history)
        (Path(out) / f"rank{rank}.json").write_text(json.dumps({"digest": digest, "steps": steps,
                                                                 "reductions": len(reductions)}))
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_ranks_train_stage_two_on_uneven_shards_in_step(tiny_bert_dir, tmp_path):
    """5 lists over 2 ranks (3 vs 2 before the fix: one rank waited in an all-reduce forever), stage 2
    (the pooler gets no gradient), gradient accumulation (one all-reduce per optimizer step)."""
    mp.spawn(_rank, args=(2, free_port(), str(tiny_bert_dir), str(tmp_path), 5), nprocs=2, join=True)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert ranks[0]["digest"] == ranks[1]["digest"]  # DDP kept the replicas identical
    assert ranks[0]["steps"] == ranks[1]["steps"] == 2  # 2 lists each, accumulated into 1 step, 2 epochs
    assert ranks[0]["reductions"] == ranks[0]["steps"]  # micro-batches inside an accumulation did not sync


def test_ddp_is_told_about_unused_parameters_exactly_where_there_are_some():
    head = ListConRankerConfig()
    assert ddp_unused_parameters(TrainSettings(stage=2))
    assert ddp_unused_parameters(TrainSettings(head=replace(head, features="original")))
    assert not ddp_unused_parameters(TrainSettings(head=replace(head, features="fused")))


NODES = [NodeResources("10.0.0.1", 1.0, 0.0), NodeResources("10.0.0.2", 1.0, 0.0)]


def test_requests_are_sized_from_the_nodes_not_the_driver():
    # two 1-CPU nodes: one encoder actor asks for 1 CPU (not the cluster's 2, which no node has)
    assert cpus_per_actor(NODES, "embed", actors=1) == 1.0
    assert cpus_per_actor(NODES, "rerank", actors=2) == 1.0
    big = [NodeResources("a", 16.0, 0.0), NodeResources("b", 4.0, 0.0)]
    assert cpus_per_actor(big, "embed", actors=2) == 4.0  # capped at the smallest node
    gpu = [NodeResources("head", 2.0, 0.0), NodeResources("gpu", 8.0, 1.0)]
    assert cpus_per_actor(gpu, "train", actors=1, gpus_per_actor=1.0) == 4.0  # 1-4 CPUs feed a GPU


@pytest.mark.parametrize("kwargs,message", [
    ({"actors": 1, "cpus": 2.0}, r"asks for 2 CPUs, but the largest node that could run it has 1"),
    ({"actors": 3}, r"3 actors x \(1 CPU, 0 GPU\) do not fit the cluster at once \(room for 2\)"),
    ({"actors": 1, "gpus_per_actor": 1.0}, r"no node has 1 GPU and 1 CPU for one actor; nodes: 10.0.0.1 \(1 CPU, 0 GPU\)"),
])
def test_a_request_no_node_can_host_fails_fast_with_what_was_asked_and_what_there_is(kwargs, message):
    with pytest.raises(PlacementError, match=message):
        cpus_per_actor(NODES, "embed's encoder actors", **kwargs)


def test_gpu_search_stays_on_the_cpu_above_faiss_k_limit():
    flat = IndexSpec(kind="flat", use_gpu=True)
    assert search_on_gpu(flat, 1000, gpus=1)
    assert not search_on_gpu(flat, GPU_MAX_K + 1, gpus=1)
    assert not search_on_gpu(flat, 1000, gpus=0)
    assert not search_on_gpu(IndexSpec(kind="hnsw", use_gpu=True), 10, gpus=1)


def test_in_process_training_uses_the_gpu_only_when_asked_and_says_when_there_is_none():
    assert in_process_device(False) == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="use_gpu is set, but this machine has no CUDA device"):
            in_process_device(True)


def test_the_encoder_stays_in_an_outer_bf16_autocast(tiny_bert_dir):
    """Stage 2 under bf16: the encoder's own (fp32-resolved) precision must not switch the region off."""
    encoder = TextEncoder(tiny_bert_dir, device="cpu")
    seen = []
    encoder.model.encoder.layer[0].attention.self.query.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    batch = encoder.tokenize(["cell protein", "gene"])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = encoder.features(**batch)
    assert seen == [torch.bfloat16] and out.dtype == torch.float32


def test_a_checkpoint_written_on_another_device_class_resumes_here(tmp_path):
    """An optimizer state saved on a GPU (storage tagged cuda:0) loads on a CPU-only machine."""
    from tests.test_training import SCHEDULE, settings, synthetic

    train, validation, features = synthetic()
    fit(train, validation, features, settings(epochs=1), tmp_path, schedule=SCHEDULE)
    [checkpoint] = (tmp_path / "checkpoints").glob("epoch-*")
    state = torch.load(checkpoint / "optimizer.pt", weights_only=True)
    registry = torch.serialization._package_registry
    entry = (0, lambda obj: "cuda:0" if obj.device.type == "cpu" else None, lambda obj, location: None)
    registry.append(entry)
    registry.sort(key=lambda e: e[0])
    try:
        torch.save(state, checkpoint / "optimizer.pt")  # every storage tagged as on cuda:0
    finally:
        registry.remove(entry)
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(checkpoint / "optimizer.pt", weights_only=True)  # what resume did before
    result = fit(train, validation, features, settings(epochs=2), tmp_path, schedule=SCHEDULE)
    assert [h["epoch"] for h in result.history] == [0, 1, 2]


def test_faiss_cpu_and_faiss_gpu_are_exclusive_extras():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert not [d for d in project["dependencies"] if d.startswith("faiss")]
    extras = project["optional-dependencies"]
    assert any(d.startswith("faiss-cpu") for d in extras["cpu"]) and any(d.startswith("faiss-gpu") for d in extras["gpu"])
    for name, deps in extras.items():
        pulled = " ".join(deps)
        assert not ("faiss-cpu" in pulled and "faiss-gpu" in pulled), name
        assert not ("listcon[" in pulled and any(x in pulled for x in ("cpu", "gpu")) and name == "dev"), name
