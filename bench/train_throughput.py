"""Training throughput: stage-1 lists/s (cached features), stage-2 examples/s (end to end),
and Ray Train scaling from 1 to 2 CPU workers, on scifact's mined training lists.

Needs a workdir where the train split was retrieved and mined (`make demo` does it). The
stage-2 run starts from the stage-1 head and reports held-out nDCG@10 (top-20 of a sample
of held-out queries) before and after its short budget.

    python -m bench.train_throughput [--workdir work/scifact] [--stage2-steps 6] [--device cuda]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import torch
import pyarrow.compute as pc

from bench.common import print_table, run_bench, write_results
from listcon.jobs.runtime import setup_logging, start_ray
from listcon.jobs.config import Config, TrainOptions
from listcon.jobs.train_job import train
from listcon.model import ListConRanker, ListConRankerConfig, ListScorer, PruneSchedule
from listcon.pipeline.training.data import Source, load_training
from listcon.pipeline.training.features import Validation
from listcon.pipeline.training.loop import TrainSettings, fit, validate

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=ROOT / "work" / "scifact")
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "scifact"))
    parser.add_argument("--stage2-steps", type=int, default=6)
    parser.add_argument("--stage2-val-queries", type=int, default=30)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    setup_logging()
    logging.getLogger("listcon").setLevel(logging.WARNING)
    source = Source("", args.data, str(args.workdir), "train").resolved()
    rows = []

    stage1 = TrainSettings(epochs=1, head=ListConRankerConfig(first_stage_prior=True), lr=3e-3)
    lists = load_training(source, [], stage1).lists
    features = load_training(source, [], stage1).features
    with tempfile.TemporaryDirectory() as tmp:
        result = fit(lists, None, features, stage1, tmp, device=args.device)
    rows.append({"run": "stage 1, in-process", "workers": 1, "examples": len(lists), "examples_per_s": result.examples_per_s})

    start_ray()
    per_worker = {}
    for workers in (1, 2):
        with tempfile.TemporaryDirectory() as tmp:
            started = time.perf_counter()
            config = Config(data=args.data, workdir=str(args.workdir),
                            train=TrainOptions(out=tmp, num_workers=workers, use_gpu=args.device == "cuda",
                                               settings=replace(stage1, val_depth=1)))
            record = train(config)
            seconds = sum(h["train_seconds"] for h in record.history)
            per_worker[workers] = len(lists) / seconds
            rows.append({"run": "stage 1, Ray Train", "workers": workers, "examples": len(lists),
                         "examples_per_s": per_worker[workers], "wall_s_incl_startup": time.perf_counter() - started})

    head_dir = args.workdir / "head"
    stage2 = TrainSettings(stage=2, epochs=1, batch_size=4, max_steps_per_epoch=args.stage2_steps, lr=1e-4,
                           encoder_lr=2e-5, init=str(head_dir), val_depth=20)
    data = load_training(source, [], stage2, args.device)
    lists, validation, features = data.lists, data.validation, data.features
    held = validation.lists[: args.stage2_val_queries]
    # qrels of the sampled queries only: evaluation counts a judged query missing from the run as 0
    sample = Validation(held, validation.qrels.filter(pc.is_in(validation.qrels["query_id"], value_set=pa.array([q for q, _ in held]))))
    before = validate(ListScorer(ListConRanker.from_pretrained(head_dir).to(args.device), PruneSchedule(), device=args.device), features, sample,
                      stage2.val_depth)
    with tempfile.TemporaryDirectory() as tmp:
        result = fit(lists, sample, features, stage2, tmp, device=args.device)
    examples = args.stage2_steps * stage2.batch_size
    rows.append({"run": "stage 2 (end to end), in-process", "workers": 1, "examples": examples,
                 "examples_per_s": result.examples_per_s})
    for row in rows:
        row.setdefault("wall_s_incl_startup", float("nan"))
    print_table(rows, ["run", "workers", "examples", "examples_per_s", "wall_s_incl_startup"])
    scaling = per_worker[2] / per_worker[1]
    print(f"Ray Train 2 vs 1 CPU workers: {scaling:.2f}x; stage 2 held-out nDCG@10 (top-20, "
          f"{len(sample.lists)} queries): {before:.4f} -> {result.best_metric:.4f}")
    print(f"wrote {write_results('train_throughput' + ('' if args.device == 'cpu' else '_' + args.device), {'device': args.device, 'rows': rows, 'ray_train_2_over_1': scaling, 'stage2_ndcg10_before': before, 'stage2_ndcg10_after': result.best_metric, 'stage2_steps': args.stage2_steps})}")


if __name__ == "__main__":
    run_bench(main)
