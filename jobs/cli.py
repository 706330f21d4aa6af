"""The `listcon` command line (see DESIGN.md for the contract).

Each step's flags are generated from the config tree's fields (``jobs/config.py``): a flag
is a field, with that field's default, help and choices, so the CLI, TOML files and the
Python API cannot drift apart. ``--config FILE`` starts a step from a TOML file; flags
given on the command line override it.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import inspect
import json
import logging
import os
import signal
import sys
import types
import typing
from pathlib import Path

from listcon.jobs.config import (
    Config,
    EmbedOptions,
    EvaluateOptions,
    ExtraSource,
    InputOptions,
    RayOptions,
    RerankOptions,
    RetrieveOptions,
    TrainOptions,
    as_toml,
    config_from_dict,
    load_config,
    read_toml,
)
from listcon.jobs.runtime import (JOB_SIGNAL_HANDLERS, RECEIVED_SIGNALS, bound_heap, native_log_lines_held_back,
                                  setup_logging, stop_ray_started_since, stopped_by_signal)
from listcon.model.head_config import ListConRankerConfig
from listcon.model.schedule import PruneSchedule
from listcon.pipeline.adaptation.settings import AdaptSettings
from listcon.pipeline.encoding.settings import EncoderSettings
from listcon.pipeline.rerank.settings import RerankSettings
from listcon.pipeline.retrieval.faiss_index import IndexSpec
from listcon.jobs.lock import LockOptions
from listcon.pipeline.retrieval.lexical import LexicalSpec
from listcon.pipeline.training.settings import TrainSettings
from listcon.pipeline.training.mining import MiningSettings
from listcon.schemas import ConfigError, DataError

log = logging.getLogger("listcon")

SEARCH_FIELDS = ("nprobe", "ef_search", "use_gpu")
# retrieve encodes its queries on encoder actors laid out like embed's, so a query's vector is the same arithmetic
# (threads per actor) on one machine and on a cluster
ACTOR_FIELDS = ("concurrency", "cpus_per_actor", "gpus_per_actor")
# Sections every step takes: where Ray runs, and what to do when another job holds the workdir.
COMMON = [("ray", RayOptions, None), ("inputs", InputOptions, None), ("lock", LockOptions, None)]
# command -> [(config section, its dataclass, the fields that become flags (None: all))]
SECTIONS: dict[str, list[tuple[str, type, tuple[str, ...] | None]]] = {
    command: [*own, *COMMON] for command, own in {
        "embed": [("encoder", EncoderSettings, None), ("embed", EmbedOptions, None)],
        "index": [("index", IndexSpec, None), ("lexical", LexicalSpec, None)],
        "retrieve": [("encoder", EncoderSettings, None), ("retrieve", RetrieveOptions, None),
                     ("index", IndexSpec, SEARCH_FIELDS), ("embed", EmbedOptions, ("skip_empty", *ACTOR_FIELDS))],
        "mine": [("train.mining", MiningSettings, None)],
        "train": [("train", TrainOptions, None), ("train.settings", TrainSettings, None),
                  ("train.settings.head", ListConRankerConfig, None), ("schedule", PruneSchedule, None)],
        "rerank": [("rerank", RerankOptions, None), ("rerank.settings", RerankSettings, None),
                   ("schedule", PruneSchedule, None)],
        "adapt": [("adapt", AdaptSettings, None), ("encoder", EncoderSettings, None),
                  ("retrieve", RetrieveOptions, ("k", "fusion", "convex_weight", "rrf_k")),
                  ("embed", EmbedOptions, ("skip_empty",))],
        "evaluate": [("evaluate", EvaluateOptions, None)],
    }.items()
}
NEEDS_DATA = {"embed", "retrieve", "mine", "train", "rerank", "adapt", "evaluate"}
TRAIN_SPLIT = {"mine", "train"}  # --split names the training split for these
HELP = {
    "embed": "encode new/changed passages into W/passages.lance (Ray Data)",
    "index": "build the FAISS index over the passage cache",
    "retrieve": "top-K candidates per query of a split",
    "mine": "hard-negative training lists from a split's candidates and qrels",
    "train": "train the head (stage 1) or encoder + head (stage 2) with Circle Loss",
    "rerank": "rerank a split's candidates with a ListConRanker head (Ray actors over query shards)",
    "adapt": "choose the fusion this corpus ranks by where a head's learned part is off, from pseudo-queries cut "
             "from its own passages (never its queries or qrels); with --init HEAD also fine-tune that head on them",
    "evaluate": "evaluate every run of a split (metrics.json, report.md, report.html)",
}


def _flag_type(hint):
    """(argparse type, nargs) for a field's type hint."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and len(args) == 1:
        hint = args[0]
    if typing.get_origin(hint) in (list, tuple):
        return typing.get_args(hint)[0], "+"
    return hint, None


def add_section(parser: argparse.ArgumentParser, section: str, cls: type, only: tuple[str, ...] | None) -> None:
    """One flag per field of ``cls`` (dest ``section.field``), with the field's help, default and choices."""
    group = parser.add_argument_group(f"[{section}]", (cls.__doc__ or "").splitlines()[0])
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        if not field.metadata.get("flag", True) or (only is not None and field.name not in only):
            continue
        named = field.metadata.get("flag", True)
        flag = named if isinstance(named, str) else "--" + field.name.replace("_", "-")
        default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
        help_text = field.metadata.get("help", "") + (f" (default: {default})" if default not in (None, (), "") else "")
        kind, nargs = _flag_type(hints[field.name])
        kwargs = dict(dest=f"{section}.{field.name}", default=argparse.SUPPRESS, help=help_text.replace("%", "%%"))
        if kind is not bool and not field.metadata.get("choices"):
            kwargs["metavar"] = field.name.upper()
        if kind is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, **kwargs)
            continue
        group.add_argument(flag, type=kind, nargs=nargs, choices=field.metadata.get("choices"), **kwargs)


class Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one log line like every other bad input (exit 2), not a usage dump."""

    def error(self, message: str):
        setup_logging()
        log.error("%s: %s (see `%s --help`)", self.prog, message, self.prog)
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="listcon", description="Embedding-cache batch reranking with ListConRanker.")
    sub = parser.add_subparsers(dest="command", required=True)
    for command, sections in SECTIONS.items():
        step = sub.add_parser(command, help=HELP[command], description=HELP[command])
        if command in NEEDS_DATA:
            step.add_argument("data", nargs="?", help="BEIR directory, or a corpus .jsonl/.parquet/.lance (or from --config)")
        step.add_argument("--config", type=Path, help="start from this TOML config; flags override it")
        step.add_argument("--workdir", help="state directory (tables, index, runs, reports)")
        step.add_argument("--lance-root", dest="lance_root", help="put the Lance tables under this URI (e.g. s3://bucket/path)")
        if command not in ("embed", "index", "adapt"):
            step.add_argument("--split", help="the split (default: train for mine/train, test otherwise)")
        step.add_argument("-v", "--verbose", action="store_true", help="debug logs and full tracebacks")
        step.add_argument("--no-progress", action="store_true", help="no progress bars")
        if command == "train":
            step.add_argument("--extra", action="append", default=[], metavar="NAME[:SPLIT]=DATA@WORKDIR",
                              help="another labelled collection to train on (split default: test), mined in its own workdir")
        for section, cls, only in sections:
            add_section(step, section, cls, only)

    run = sub.add_parser("run", help="the whole job from one config file (see jobs/demo.toml)")
    run.add_argument("config", type=Path)
    run.add_argument("--print-config", action="store_true", help="print the resolved config tree (TOML) and exit")
    run.add_argument("-v", "--verbose", action="store_true", help="debug logs and full tracebacks")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")

    status = sub.add_parser("status", help="per step: up to date, or what a run would do and why (no Ray, no "
                            "model; exit 0 up to date, 1 work to do)")
    status.add_argument("config", type=Path)
    status.add_argument("--split", help="the split (default: the config's)")
    status.add_argument("--json", action="store_true", help="one JSON object on stdout, for schedulers")
    status.add_argument("-v", "--verbose", action="store_true", help="debug logs and full tracebacks")

    data = sub.add_parser("data", help="datasets")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    download = data_sub.add_parser("download", help="fetch a public BEIR collection (needs a network)")
    download.add_argument("name", help="BEIR dataset name, e.g. scifact, nfcorpus, fiqa")
    download.add_argument("--to", type=Path, default=Path("data"), help="parent directory (default: ./data)")
    download.add_argument("-v", "--verbose", action="store_true")
    return parser


def extra_source(spec: str) -> ExtraSource:
    """``NAME[:SPLIT]=DATA@WORKDIR`` as an extra training source."""
    head, _, rest = spec.partition("=")
    name, _, split = head.partition(":")
    data, _, work = rest.partition("@")
    if not (name and data and work):
        raise ConfigError(f"--extra takes NAME[:SPLIT]=DATA@WORKDIR, got {spec!r}")
    return ExtraSource(name, data, work, split or "test")


def config_from_args(args: argparse.Namespace) -> Config:
    """The step's config: ``--config`` (if any), then every flag given, onto the defaults."""
    raw = read_toml(args.config) if args.config else {}
    for key in ("data", "workdir", "lance_root"):
        if getattr(args, key, None):
            raw[key] = str(getattr(args, key))
    if getattr(args, "split", None):
        if args.command in TRAIN_SPLIT:
            raw.setdefault("train", {})["split"] = args.split
        else:
            raw["split"] = args.split
    for dest, value in vars(args).items():
        if "." in dest:
            *path, key = dest.split(".")
            table = raw
            for part in path:
                table = table.setdefault(part, {})
            table[key] = value
    if getattr(args, "extra", None):
        raw.setdefault("train", {})["extra"] = [dataclasses.asdict(extra_source(e)) for e in args.extra]
    if not raw.get("workdir"):
        raise ConfigError("--workdir (or `workdir` in --config) is required")
    return config_from_dict(raw)


def _interrupt(signum: int, frame) -> None:
    """SIGINT or SIGTERM: unwind the step like any error (nothing half-done commits)."""
    RECEIVED_SIGNALS.append(signum)
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    verbose = getattr(args, "verbose", False)
    setup_logging(verbose)
    bound_heap()  # the process is the job's own: its resident memory should follow what it holds
    # Both signals stop the step, whatever the process inherited (a job started in the background by a
    # shell or a scheduler inherits SIGINT ignored, and Python then never raises KeyboardInterrupt).
    handlers = {s: signal.signal(s, _interrupt) for s in (signal.SIGINT, signal.SIGTERM)}
    JOB_SIGNAL_HANDLERS.update({s: _interrupt for s in handlers})
    try:
        with native_log_lines_held_back(enabled=not verbose):  # Ray's C++ lines: its driver log, or -v
            code = _main(args, verbose)
    except KeyboardInterrupt:
        # Stopped: the process exits once Ray is down; no later signal may cut that short, or turn the
        # exit code into a death by signal during the interpreter's shutdown.
        for s in handlers:
            signal.signal(s, signal.SIG_IGN)
        signum = RECEIVED_SIGNALS[0] if RECEIVED_SIGNALS else signal.SIGINT
        stop_ray_started_since(False)  # the job's own local Ray goes with it; a cluster is only disconnected
        log.error("interrupted by %s: nothing half-done was committed; rerun the same command to resume",
                  signal.Signals(signum).name)
        code = 128 + signum
    JOB_SIGNAL_HANDLERS.clear()
    RECEIVED_SIGNALS.clear()
    for s, handler in handlers.items():  # in-process callers (tests, notebooks) get theirs back
        signal.signal(s, handler)
    return code


def _main(args: argparse.Namespace, verbose: bool) -> int:
    try:
        if args.command == "data":
            from listcon.pipeline.data.download import download_beir

            download_beir(args.name, args.to)
            return 0
        if args.command == "run":
            config = load_config(args.config)
            if args.print_config:
                sys.stdout.write(as_toml(config))
                return 0
            from listcon.jobs.run_job import run

            run(config, progress=not args.no_progress)
            return 0
        if args.command == "status":
            from listcon.jobs.status import status

            found = status(load_config(args.config), args.split)
            if args.json:
                sys.stdout.write(json.dumps(found.to_dict(), indent=2) + "\n")
            else:
                sys.stdout.write("".join(f"{'ok   ' if s.up_to_date else 'stale'}  {s.detail}\n" for s in found.steps))
            return 0 if found.up_to_date else 1
        config = config_from_args(args)
        _run_step(args.command, config, progress=not args.no_progress)
    except Exception as err:
        if stopped_by_signal(err):  # the stop, in a library's wrapping: an interruption, not bad input
            raise KeyboardInterrupt(signal.Signals(RECEIVED_SIGNALS[0]).name) from err
        if isinstance(err, (DataError, ConfigError, ValueError, KeyError, FileNotFoundError, RuntimeError, OSError)):
            if verbose:
                log.exception("%s: %s", type(err).__name__, err)
            else:
                log.error("%s", err)
            return 2
        # a node or worker lost mid-job: say so in one line; the work done so far is kept
        if not type(err).__module__.startswith("ray") or verbose:
            raise
        first = (str(err).strip().splitlines() or [""])[0][:300]
        log.error("a Ray worker or node failed (%s: %s); finished work is kept: rerun the same command to resume",
                  type(err).__name__, first)
        return 3
    return 0


def _run_step(command: str, config: Config, progress: bool) -> None:
    """Import the step's job module only now (a step does not pay for the others' imports) and run it."""
    step = getattr(importlib.import_module(f"listcon.jobs.{command}_job"), command)
    kwargs = {"progress": progress} if "progress" in inspect.signature(step).parameters else {}
    step(config, **kwargs)


def entry() -> None:
    """The `listcon` command: ``main``'s exit code. An interrupted job leaves at once after its cleanup, without
    the interpreter's shutdown, where libraries' threads have turned a handled interrupt into a death by SIGINT."""
    code = main()
    if code in (128 + signal.SIGINT, 128 + signal.SIGTERM):
        for s in (signal.SIGINT, signal.SIGTERM):  # main gave the default handlers back: none may cut the exit short
            signal.signal(s, signal.SIG_IGN)
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    entry()
