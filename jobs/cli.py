"""The `listcon` command line (see DESIGN.md for the contract)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from listcon.jobs.runtime import setup_logging
from listcon.pipeline.encode_batch import EncoderSettings
from listcon.pipeline.faiss_index import KINDS, METRICS, IndexSpec
from listcon.pipeline.workdir import Workdir
from listcon.schemas import DataError

log = logging.getLogger("listcon")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workdir", required=True, type=Path, help="state directory (tables, index, runs, reports)")
    parser.add_argument("--lance-root", help="put the Lance tables under this URI (e.g. s3://bucket/path) instead of the workdir")
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def _encoder(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("encoder")
    group.add_argument("--model", help="local HF model directory or hub id (default: packaged all-MiniLM-L6-v2)")
    group.add_argument("--pooling", choices=("mean", "cls"), default="mean")
    group.add_argument("--normalize", action="store_true", help="L2-normalise stored vectors (the released method does not)")
    group.add_argument("--max-length", type=int, help="token limit (default: the model's configured one)")
    group.add_argument("--batch-size", type=int, default=64, help="texts per encoder batch")
    group.add_argument("--dtype", choices=("float32", "float16"), default="float32", help="storage precision of vectors")
    group.add_argument("--fp16", action="store_true", help="fp16 autocast for the encoder on GPU")
    group.add_argument("--skip-empty", action="store_true", help="skip passages with empty text (counted) instead of failing")
    group.add_argument("--ray-address", help="attach to a Ray cluster (default: local Ray on this machine)")


def _settings(args: argparse.Namespace) -> EncoderSettings:
    return EncoderSettings(model=args.model, pooling=args.pooling, normalize=args.normalize, max_length=args.max_length,
                           dtype=args.dtype, batch_size=args.batch_size, half_precision=args.fp16)


def _index_spec(args: argparse.Namespace, kind: str = "flat") -> IndexSpec:
    return IndexSpec(kind=getattr(args, "kind", kind), metric=getattr(args, "metric", "cosine"),
                     nlist=getattr(args, "nlist", None), nprobe=args.nprobe, hnsw_m=getattr(args, "hnsw_m", 32),
                     ef_search=args.ef_search, use_gpu=not args.no_gpu)


def _search_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--nprobe", type=int, default=32, help="IVF lists searched")
    parser.add_argument("--ef-search", type=int, default=256, help="HNSW search breadth")
    parser.add_argument("--no-gpu", action="store_true", help="keep FAISS on CPU even where faiss-gpu and a GPU exist")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="listcon", description="Embedding-cache batch reranking with ListConRanker.")
    sub = parser.add_subparsers(dest="command", required=True)

    embed = sub.add_parser("embed", help="encode new/changed passages into W/passages.lance (Ray Data)")
    embed.add_argument("data", help="BEIR directory, or a corpus .jsonl/.parquet/.lance")
    _common(embed)
    _encoder(embed)
    embed.add_argument("--limit", type=int, help="only the first N passages")
    embed.add_argument("--rebuild", action="store_true", help="re-encode everything (another encoder or settings)")
    embed.add_argument("--prune", action="store_true", help="delete cached passages that are no longer in the corpus")
    embed.add_argument("--concurrency", type=int, help="encoder actors (default: one per GPU, else 1)")
    embed.add_argument("--cpus-per-actor", type=float, help="CPUs (and torch threads) per actor (default: all / actors)")
    embed.add_argument("--gpus-per-actor", type=float, help="GPUs per actor (default: 1 where the cluster has GPUs)")
    embed.add_argument("--chunk-rows", type=int, default=1024, help="rows per Lance commit (resume granularity)")

    index = sub.add_parser("index", help="build the FAISS index over the passage cache")
    _common(index)
    index.add_argument("--kind", choices=KINDS, default="flat")
    index.add_argument("--metric", choices=METRICS, default="cosine")
    index.add_argument("--nlist", type=int, help="IVF lists (default: about 4*sqrt(n))")
    index.add_argument("--hnsw-m", type=int, default=32)
    _search_options(index)

    retrieve = sub.add_parser("retrieve", help="top-K candidates per query of a split")
    retrieve.add_argument("data", help="BEIR directory")
    _common(retrieve)
    _encoder(retrieve)
    retrieve.add_argument("--split", required=True)
    retrieve.add_argument("--k", type=int, default=1000)
    _search_options(retrieve)

    rerank = sub.add_parser("rerank", help="rerank a split's candidates with a ListConRanker head (Ray actors over query shards)")
    rerank.add_argument("data", help="BEIR directory (for the split's queries)")
    _common(rerank)
    rerank.add_argument("--split", required=True)
    rerank.add_argument("--model-dir", required=True, help="head checkpoint (save_pretrained: config.json + model.safetensors)")
    rerank.add_argument("--theta", type=int, default=20, help="stop pruning at this many passages")
    rerank.add_argument("--beta", type=float, default=0.2, help="fraction pruned per round")
    rerank.add_argument("--min-drop", type=int, default=10, help="least pruned per round")
    rerank.add_argument("--depth", type=int, help="rerank only the top-N candidates of each query (default: all)")
    rerank.add_argument("--run-name", default="listcon", help="name of the run (W/runs/S.<name>.trec)")
    rerank.add_argument("--skip-missing", action="store_true", help="skip candidates missing from the cache (counted)")
    rerank.add_argument("--memory-budget-mb", type=int, default=1024, help="activation memory per query batch")
    rerank.add_argument("--precision", choices=("auto", "fp32", "fp16", "bf16"), default="auto",
                        help="auto: bf16 autocast on CUDA, fp32 on CPU")
    rerank.add_argument("--shard-size", type=int, default=32, help="queries per shard (resume granularity)")
    rerank.add_argument("--workers", type=int, default=1, help="rerank actors")
    rerank.add_argument("--ray-address", help="attach to a Ray cluster (default: local Ray)")

    mine = sub.add_parser("mine", help="hard-negative training lists from a split's candidates and qrels")
    mine.add_argument("data", help="BEIR directory (for the qrels)")
    _common(mine)
    mine.add_argument("--split", default="train")
    mine.add_argument("--list-size", type=int, default=20)
    mine.add_argument("--max-positives", type=int, default=4)
    mine.add_argument("--depth", type=int, default=100, help="negatives come from the top-N candidates")
    mine.add_argument("--sampling", choices=("uniform", "top"), default="uniform")
    mine.add_argument("--holdout-fraction", type=float, default=0.1, help="queries held out for validation")
    mine.add_argument("--seed", type=int, default=0)

    train = sub.add_parser("train", help="train the head (stage 1) or encoder + head (stage 2) with Circle Loss")
    train.add_argument("data", help="BEIR directory")
    _common(train)
    train.add_argument("--split", default="train")
    train.add_argument("--out", required=True, help="checkpoint directory (best epoch + checkpoints/ for resume)")
    train.add_argument("--stage", type=int, choices=(1, 2), default=1)
    train.add_argument("--loss", choices=("circle", "bce", "triplet", "cosent"), default="circle")
    train.add_argument("--gamma", type=float, default=10.0)
    train.add_argument("--margin", type=float, help="Circle Loss m (default: -0.2 stage 1, 0.1 stage 2)")
    train.add_argument("--lr", type=float, default=1e-3)
    train.add_argument("--encoder-lr", type=float, default=2e-5)
    train.add_argument("--epochs", type=int, default=10)
    train.add_argument("--batch-size", type=int, default=16, help="lists per step")
    train.add_argument("--grad-accum", type=int, default=1)
    train.add_argument("--max-steps-per-epoch", type=int)
    train.add_argument("--patience", type=int, default=3)
    train.add_argument("--val-depth", type=int, default=100)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--attention", choices=("list", "bidirectional", "passage"), default="list")
    train.add_argument("--features", choices=("fused", "list", "original"), default="fused")
    train.add_argument("--first-stage-prior", action="store_true",
                       help="score = sigmoid(a*cos + b*head): starts ranking like the first stage (not in the paper)")
    train.add_argument("--init", help="start from this head checkpoint (e.g. stage 2 from the stage-1 head)")
    train.add_argument("--extra", action="append", default=[], metavar="NAME=DATA@WORKDIR",
                       help="another labelled collection to train on (its test qrels), mined in its own workdir")
    train.add_argument("--num-workers", type=int, default=0, help="Ray Train workers (0: train in-process)")
    train.add_argument("--use-gpu", action="store_true", help="one Ray Train worker per GPU, DDP")
    train.add_argument("--ray-address")

    run = sub.add_parser("run", help="the whole job from one config file (see jobs/demo.toml)")
    run.add_argument("config", type=Path)
    run.add_argument("-v", "--verbose", action="store_true")

    data = sub.add_parser("data", help="datasets")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    download = data_sub.add_parser("download", help="fetch a public BEIR collection (needs a network)")
    download.add_argument("name", help="BEIR dataset name, e.g. scifact, nfcorpus, fiqa")
    download.add_argument("--to", type=Path, default=Path("data"), help="parent directory (default: ./data)")

    evaluate = sub.add_parser("evaluate", help="evaluate every run of a split (metrics.json + report.md)")
    evaluate.add_argument("data", help="BEIR directory (for the qrels)")
    _common(evaluate)
    evaluate.add_argument("--split", required=True)
    return parser


def _extra_source(spec: str, split: str):
    from listcon.jobs.train_job import Source

    name, _, rest = spec.partition("=")
    data, _, work = rest.partition("@")
    if not (name and data and work):
        raise ValueError(f"--extra takes NAME=DATA@WORKDIR, got {spec!r}")
    return Source(name, data, work, split)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(getattr(args, "verbose", False))
    try:
        if args.command == "run":
            from listcon.jobs.run_job import run_config

            run_config(args.config)
            return 0
        if args.command == "data":
            from listcon.pipeline.download import download_beir

            download_beir(args.name, args.to)
            return 0
        workdir = Workdir(args.workdir, args.lance_root)
        progress = not args.no_progress
        if args.command == "embed":
            from listcon.jobs.embed_job import run_embed

            run_embed(args.data, workdir, _settings(args), limit=args.limit, empty="skip" if args.skip_empty else "error",
                      rebuild=args.rebuild, prune=args.prune, ray_address=args.ray_address,
                      concurrency=args.concurrency, gpus_per_actor=args.gpus_per_actor,
                      cpus_per_actor=args.cpus_per_actor, chunk_rows=args.chunk_rows, progress=progress)
        elif args.command == "index":
            from listcon.jobs.index_job import run_index

            run_index(workdir, _index_spec(args))
        elif args.command == "retrieve":
            from listcon.jobs.retrieve_job import run_retrieve

            run_retrieve(args.data, workdir, args.split, _settings(args), k=args.k, spec=_index_spec(args),
                         empty="skip" if args.skip_empty else "error", ray_address=args.ray_address, progress=progress)
        elif args.command == "rerank":
            from listcon.jobs.rerank_job import run_rerank
            from listcon.pipeline.rerank import RerankSettings

            settings = RerankSettings(theta=args.theta, beta=args.beta, min_drop=args.min_drop, depth=args.depth,
                                      memory_budget_mb=args.memory_budget_mb, skip_missing=args.skip_missing,
                                      precision=args.precision)
            run_rerank(args.data, workdir, args.split, args.model_dir, settings, run_name=args.run_name,
                       shard_size=args.shard_size, workers=args.workers, ray_address=args.ray_address, progress=progress)
        elif args.command == "mine":
            from listcon.jobs.mine_job import run_mine
            from listcon.pipeline.mining import MiningSettings

            run_mine(args.data, workdir, args.split, MiningSettings(
                list_size=args.list_size, max_positives=args.max_positives, depth=args.depth, sampling=args.sampling,
                holdout_fraction=args.holdout_fraction, seed=args.seed))
        elif args.command == "train":
            from listcon.jobs.train_job import Source, run_train
            from listcon.pipeline.train import TrainSettings

            head = {"attention": args.attention, "features": args.features, "first_stage_prior": args.first_stage_prior}
            settings = TrainSettings(stage=args.stage, loss=args.loss, gamma=args.gamma, margin=args.margin, lr=args.lr,
                                     encoder_lr=args.encoder_lr, epochs=args.epochs, batch_size=args.batch_size,
                                     grad_accum=args.grad_accum, max_steps_per_epoch=args.max_steps_per_epoch,
                                     patience=args.patience, val_depth=args.val_depth, seed=args.seed, head=head,
                                     init=args.init)
            run_train(Source("", args.data, str(workdir.root), args.split), str(args.out), settings,
                      extras=[_extra_source(e, "test") for e in args.extra], num_workers=args.num_workers,
                      use_gpu=args.use_gpu, ray_address=args.ray_address)
        elif args.command == "evaluate":
            from listcon.jobs.evaluate_job import run_evaluate

            run_evaluate(args.data, workdir, args.split)
    except (DataError, ValueError, KeyError, FileNotFoundError, RuntimeError, OSError) as err:
        log.error("%s", err)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
