"""The one config tree: every step's settings as frozen dataclasses under ``Config``.

A TOML file (``listcon run CONFIG``), the command-line flags of each step and the Python
API all build the same ``Config``; defaults, help texts and choices live on the fields
(see ``listcon.schemas.config``), so nothing restates them. Loading is strict: an unknown
key, a wrong type or a bad choice is a one-line ``ConfigError`` naming the key.

Sections: ``[encoder]`` ``[embed]`` ``[index]`` ``[lexical]`` ``[retrieve]`` ``[schedule]`` (Algorithm 1,
shared by rerank and training's validation) ``[train]`` (+ ``[train.mining]``,
``[train.settings]``, ``[train.settings.head]``, ``[[train.extra]]``) ``[rerank]`` (+
``[rerank.settings]``) ``[evaluate]`` ``[ray]`` ``[inputs]`` (what every step does with inputs
that disagree: unknown judged passages, a corpus changed since embed).
"""

from __future__ import annotations

import json
import os
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path

from listcon.model.schedule import PruneSchedule
from listcon.pipeline.adaptation.settings import AdaptSettings
from listcon.pipeline.encoding.settings import EncoderSettings
from listcon.pipeline.data.readers import UNKNOWN_PASSAGE_POLICIES
from listcon.pipeline.store.corpus_state import STALE_POLICIES
from listcon.pipeline.evaluation.evaluate import DEFAULT_MEASURES, check_measures
from listcon.pipeline.rerank.settings import RerankSettings
from listcon.pipeline.retrieval.faiss_index import IndexSpec
from listcon.pipeline.retrieval.lexical import LexicalSpec
from listcon.pipeline.retrieval.retrieve import RetrieveOptions
from listcon.jobs.lock import LockOptions
from listcon.pipeline.store.workdir import Workdir, safe_name, user_run_name
from listcon.pipeline.training.settings import TrainSettings
from listcon.pipeline.training.mining import MiningSettings
from listcon.schemas import ConfigError, build, check_ranges, choice, option, to_dict


@dataclass(frozen=True)
class RayOptions:
    """Where Ray work runs."""

    address: str | None = option(None, "attach to a Ray cluster (default: a quiet local Ray on this machine)",
                                  flag="--ray-address")
    object_store_mb: int = option(512, "object store size of a local Ray (MiB)", flag=False, at_least=80)


@dataclass(frozen=True)
class EmbedOptions:
    """How the embed step reads the corpus and places its encoder actors."""

    limit: int | None = option(None, "only the first N passages")
    skip_empty: bool = option(False, "skip passages with empty text (counted) instead of failing")
    rebuild: bool = option(False, "re-encode everything (another encoder or settings)")
    prune: bool = option(False, "delete cached passages that are no longer in the corpus")
    prune_limit: float = option(0.2, "prune refuses to delete more than this fraction of the cache unless confirmed")
    confirm_prune: bool = option(False, "let prune delete more than prune_limit of the cache")
    concurrency: int | None = option(None, "encoder actors, for passages and for retrieve's queries alike "
                                     "(default: one per GPU, else one per node)")
    cpus_per_actor: float | None = option(None, "CPUs (and torch threads) per actor (default: all / actors)")
    gpus_per_actor: float | None = option(None, "GPUs per actor (default: 1 where the cluster has GPUs)")
    chunk_rows: int = option(1024, "rows per Lance commit (what a killed job can lose at most)")

    def __post_init__(self) -> None:
        if self.chunk_rows < 1:
            raise ValueError(f"chunk_rows must be at least 1, got {self.chunk_rows}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be at least 1 (or unset for the whole corpus), got {self.limit}")
        if self.prune and self.limit is not None:
            raise ValueError("prune with limit would delete every cached passage beyond the first "
                             f"{self.limit}; prune with the whole corpus")
        if self.concurrency is not None and self.concurrency < 1:
            raise ValueError(f"concurrency must be at least 1 encoder actor, got {self.concurrency}")
        if self.cpus_per_actor is not None and self.cpus_per_actor <= 0:
            raise ValueError(f"cpus_per_actor must be positive, got {self.cpus_per_actor}")
        if self.gpus_per_actor is not None and self.gpus_per_actor < 0:
            raise ValueError(f"gpus_per_actor must be 0 or more, got {self.gpus_per_actor}")
        if not 0 <= self.prune_limit <= 1:
            raise ValueError(f"prune_limit is a fraction of the cache, between 0 and 1; got {self.prune_limit}")


@dataclass(frozen=True)
class ExtraSource:
    """Another labelled collection to train on, embedded and mined in its own workdir."""

    name: str = option("", "prefix of its ids in the training data")
    data: str = option("", "its BEIR directory")
    workdir: str = option("", "its state directory")
    split: str = option("test", "the split whose qrels become training lists")
    validate_only: bool = option(False, "kept out of training: all its queries validate (an unseen collection)")

    def __post_init__(self) -> None:
        safe_name(self.split, f"split of extra source {self.name!r}")
        if not (self.name and self.data and self.workdir):
            raise ValueError(f"an extra training source needs name, data and workdir; got {self}")


@dataclass(frozen=True)
class TrainOptions:
    """The train step: which split, where the head goes, how it runs."""

    split: str = option("train", "the split to mine and train on (--split of mine and train)", flag=False)
    k: int | None = option(None, "first-stage depth of the training split (default: [retrieve] k)", flag=False, at_least=1)
    out: str | None = option(None, "checkpoint directory (default: W/head)")
    checkpoint: str | None = option(None, "rerank with this head instead of training one", flag=False)
    validate_on: str = choice("all", ("all", "main"), "all: mean nDCG@10 over every collection's held-out queries "
                              "(generalisation); main: the main split's held-out queries only (in-domain)")
    num_workers: int = option(0, "Ray Train workers (0: train in-process)")
    use_gpu: bool = option(False, "train on GPUs: this machine's (in-process) or one Ray Train worker per GPU (DDP)")
    storage: str | None = option(None, "where Ray Train keeps checkpoints; every node must reach it on a real cluster "
                                       "(NFS path or s3://...; default: <out>/ray, right on one machine)")
    extra: tuple[ExtraSource, ...] = option((), "other labelled collections to train on", flag=False)
    mining: MiningSettings = option(MiningSettings(), "hard-negative mining", flag=False)
    settings: TrainSettings = option(TrainSettings(), "what decides the trained weights", flag=False)

    def __post_init__(self) -> None:
        safe_name(self.split, "split")
        if self.num_workers < 0:
            raise ValueError(f"num_workers must be 0 (in-process) or more, got {self.num_workers}")


@dataclass(frozen=True)
class RerankOptions:
    """The rerank step: which head, how many workers, extra runs at other depths."""

    model_dir: str | None = option(None, "head checkpoint (default: the one [train] trains or names)")
    run_name: str = option("listcon", "name of the run (W/runs/S.<name>.trec)")
    workers: int = option(1, "rerank actors", at_least=1)
    shard_size: int = option(32, "queries per shard (resume granularity)", at_least=1)
    depths: tuple[int, ...] = option((), "also rerank the top-N of each query at these depths (runs listcon-topN)",
                                     flag=False)
    settings: RerankSettings = option(RerankSettings(), "batching, precision, input policy", flag=False)

    def __post_init__(self) -> None:
        user_run_name(self.run_name)


@dataclass(frozen=True)
class EvaluateOptions:
    """What the report measures."""

    measures: tuple[str, ...] = option(DEFAULT_MEASURES, "ir-measures names; the first is the headline")
    drop_self: str = choice("auto", ("auto", "always", "never"),
                            "drop a passage whose id is its query's id from every run (BEIR's rule for collections "
                            "whose queries are also documents): auto where the passage's text is the query's, "
                            "always (the collection declares it), never")

    def __post_init__(self) -> None:
        check_measures(self.measures)


@dataclass(frozen=True)
class InputOptions:
    """How steps treat inputs that disagree with each other (the same rule in every step)."""

    unknown_passages: str = choice("error", UNKNOWN_PASSAGE_POLICIES,
                                   "qrels judging a passage the corpus lacks: refuse, or count it as relevant but "
                                   "never retrieved (reranking a sample of a bigger corpus)")
    stale_corpus: str = choice("error", STALE_POLICIES, "the corpus changed since embed: refuse, or proceed with the "
                               "cache as it is (a warning names the changes)")


@dataclass(frozen=True)
class Config:
    """The whole job: data, workdir and every step's settings."""

    data: str = option("", "BEIR directory (or a corpus file)")
    workdir: str = option("", "state directory (tables, index, runs, reports)")
    lance_root: str | None = option(None, "put the Lance tables under this URI (e.g. s3://bucket/path)")
    split: str = option("test", "the split that is retrieved, reranked and evaluated")
    encoder: EncoderSettings = option(EncoderSettings(), "", flag=False)
    embed: EmbedOptions = option(EmbedOptions(), "", flag=False)
    index: IndexSpec = option(IndexSpec(), "", flag=False)
    lexical: LexicalSpec = option(LexicalSpec(), "", flag=False)
    retrieve: RetrieveOptions = option(RetrieveOptions(), "", flag=False)
    schedule: PruneSchedule = option(PruneSchedule(), "", flag=False)
    train: TrainOptions = option(TrainOptions(), "", flag=False)
    rerank: RerankOptions = option(RerankOptions(), "", flag=False)
    adapt: AdaptSettings = option(AdaptSettings(), "", flag=False)
    evaluate: EvaluateOptions = option(EvaluateOptions(), "", flag=False)
    ray: RayOptions = option(RayOptions(), "", flag=False)
    inputs: InputOptions = option(InputOptions(), "", flag=False)
    lock: LockOptions = option(LockOptions(), "", flag=False)

    def __post_init__(self) -> None:
        safe_name(self.split, "split")
        check_ranges(self, recurse=True)

    @property
    def work(self) -> Workdir:
        if not self.workdir:
            raise ConfigError("the config must name `workdir` (the state directory)")
        root = Path(self.workdir)
        if root.exists() and not root.is_dir():
            raise ConfigError(f"workdir {root} exists and is not a directory")
        if root.is_dir() and not os.access(root, os.W_OK | os.X_OK):
            raise ConfigError(f"workdir {root} is not writable")
        return Workdir(root, self.lance_root)

    def need_data(self) -> str:
        if not self.data:
            raise ConfigError("the config must name `data` (a BEIR directory or a corpus file)")
        return self.data

    @property
    def train_out(self) -> str:
        """Where the train step writes the head (default: W/head)."""
        return self.train.out or str(self.work.root / "head")

    @property
    def head_dir(self) -> str:
        """The head checkpoint the rerank step uses."""
        return self.rerank.model_dir or self.train.checkpoint or self.train_out

    def for_collection(self, extra: ExtraSource) -> "Config":
        """The same settings pointed at another collection and its own workdir (empty passages skipped)."""
        return replace(self, data=extra.data, workdir=extra.workdir, lance_root=None, split=extra.split,
                       embed=replace(self.embed, skip_empty=True, limit=None, prune=False))


def read_toml(path: str | Path) -> dict:
    """The raw tables of a TOML config file (a missing file or invalid TOML is a one-line error)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path} is not valid TOML: {err}") from None


def load_config(path: str | Path) -> Config:
    """Read a TOML config strictly; relative paths stay relative to the current directory."""
    raw = read_toml(path)
    for key in ("data", "workdir"):
        if key not in raw:
            raise ConfigError(f"{path} must name `{key}`")
    return config_from_dict(raw)


def config_from_dict(raw: dict) -> Config:
    return build(Config, raw)


def as_toml(config: Config) -> str:
    """The resolved tree as TOML (unset options appear as comments), loadable again."""
    lines: list[str] = []
    _emit(to_dict(config), [], lines)
    return "\n".join(lines).strip() + "\n"


def _emit(table: dict, path: list[str], lines: list[str]) -> None:
    scalars = {k: v for k, v in table.items() if not isinstance(v, dict) and not _is_table_list(v)}
    if path:
        lines += ["", f"[{'.'.join(path)}]"]
    for key, value in scalars.items():
        lines.append(f"# {key} = (unset)" if value is None else f"{key} = {json.dumps(value)}")
    for key, value in table.items():
        if isinstance(value, dict):
            _emit(value, [*path, key], lines)
        elif _is_table_list(value):
            for item in value:
                lines += ["", f"[[{'.'.join([*path, key])}]]"]
                lines += [f"{k} = {json.dumps(v)}" for k, v in item.items() if v is not None]


def _is_table_list(value) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)
