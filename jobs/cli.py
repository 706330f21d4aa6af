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

    evaluate = sub.add_parser("evaluate", help="evaluate every run of a split (metrics.json + report.md)")
    evaluate.add_argument("data", help="BEIR directory (for the qrels)")
    _common(evaluate)
    evaluate.add_argument("--split", required=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    workdir = Workdir(args.workdir, args.lance_root)
    progress = not args.no_progress
    try:
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
        elif args.command == "evaluate":
            from listcon.jobs.evaluate_job import run_evaluate

            run_evaluate(args.data, workdir, args.split)
    except (DataError, ValueError, KeyError, FileNotFoundError, RuntimeError) as err:
        log.error("%s", err)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
