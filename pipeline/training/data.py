"""Training data from workdirs: mined lists, held-out validation lists, their features and signals.

The main source and every extra labelled collection (each mined in its own workdir) give
training lists and held-out queries; ids of an extra source are prefixed by its name so ids
from different corpora never collide. Validation is the mean nDCG@10 over the collections'
held-out queries, so it measures how the head generalises, not only how it fits one corpus.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from listcon.model import TextEncoder
from listcon.pipeline.data.readers import read_corpus, read_qrels, read_queries
from listcon.pipeline.retrieval.signals import QuerySignals
from listcon.pipeline.heads.directory import ENCODER_DIR
from listcon.pipeline.heads.features import check_head_features
from listcon.pipeline.store.embedding_cache import CacheMismatchError, EmbeddingCache
from listcon.pipeline.store.ranked_lists import candidate_lists, read_provenance, read_ranked, rows_by_query
from listcon.pipeline.store.workdir import Workdir
from listcon.schemas import encoder_field
from listcon.pipeline.training.features import CachedFeatures, EncodedFeatures, Lists, Validation, candidate_features
from listcon.pipeline.training.loop import TrainSettings


@dataclass(frozen=True)
class Source:
    """A labelled collection to train on: its data dir, workdir and split (name prefixes its ids)."""

    name: str
    data: str
    workdir: str
    split: str
    validate_only: bool = False  # kept out of training; every query of it validates
    lance_root: str | None = None  # where its Lance tables are, when not in the workdir (an object store)

    def resolved(self) -> "Source":
        """Absolute paths: Ray Train workers run in another working directory."""
        return Source(self.name, str(Path(self.data).resolve()), str(Path(self.workdir).resolve()), self.split,
                      self.validate_only, self.lance_root)

    @property
    def work(self) -> Workdir:
        return Workdir(Path(self.workdir), self.lance_root)


@dataclass
class TrainingData:
    """Everything ``fit`` needs: lists, validation, features, and the encoder those features come from."""

    lists: Lists
    validation: Validation
    features: CachedFeatures | EncodedFeatures
    encoder_info: dict


def head_signals(settings: TrainSettings) -> tuple[str, ...]:
    """The signals the trained head takes (its init checkpoint's, when training starts from one)."""
    if settings.init:
        from listcon.model import ListConRanker

        return ListConRanker.from_pretrained(settings.init).config.signals
    return settings.head.signals


@dataclass
class _Part:
    lists: Lists
    held: list[tuple[str, list[str]]]
    qrels: pa.Table
    signals: dict[tuple[str, str], np.ndarray]


def _load_part(source: Source, depth: int, cap: int | None = None, seed: int = 0) -> _Part:
    """One source's training lists (of at most ``cap`` of its queries, drawn by ``seed``), held-out candidate
    lists (top-``depth``), their qrels and signals.

    A validate-only source gives no training lists, and every mined query of it validates.
    """
    work = source.work
    table = read_ranked(work.training(source.split))
    if source.validate_only:
        held_ids = table["query_id"].to_pylist()
        table = table.slice(0, 0)
    else:
        held_ids = table.filter(pc.field("holdout"))["query_id"].to_pylist()
    signals: dict[tuple[str, str], np.ndarray] = {}
    for q, ids, rows in zip(table["query_id"].to_pylist(), table["passage_ids"].to_pylist(), table["signals"].to_pylist()):
        signals.update({(q, p): np.asarray(v, dtype=np.float32) for p, v in zip(ids, rows)})
    candidates = read_ranked(work.candidates(source.split))
    k = (read_provenance(work.candidates(source.split)) or {}).get("k", 1000)
    held, per_query = [], rows_by_query(candidates)
    for q, ranked in candidate_lists(candidates, held_ids):
        ranked = ranked[:depth]
        if ranked:
            signals.update({(q, p): v for p, v in zip(ranked, QuerySignals(per_query[q], k).matrix(ranked))})
        held.append((q, ranked))
    qrels = read_qrels(source.data, source.split)
    qrels = qrels.filter(pc.is_in(qrels["query_id"], value_set=pa.array(held_ids, pa.string())))
    training = table.filter(~pc.field("holdout"))
    queries = sorted(set(training["query_id"].to_pylist()))
    if cap is not None and len(queries) > cap:
        kept = pa.array(sorted(np.random.default_rng(seed).permutation(queries)[:cap].tolist()), pa.string())
        training = training.filter(pc.is_in(training["query_id"], value_set=kept))
    return _Part(Lists.from_table(training), held, qrels, signals)


def _prefixed(part: _Part, prefix: str) -> _Part:
    """The same part with ids ``<prefix>/<id>`` (the main source, prefix '', keeps its ids)."""
    if not prefix:
        return part
    name = lambda x: f"{prefix}/{x}"  # noqa: E731
    lists = Lists([name(q) for q in part.lists.query_ids], [[name(p) for p in c] for c in part.lists.passages],
                  part.lists.labels)
    qrels = pa.table({"query_id": [name(q) for q in part.qrels["query_id"].to_pylist()],
                      "passage_id": [name(p) for p in part.qrels["passage_id"].to_pylist()],
                      "relevance": part.qrels["relevance"]}, schema=part.qrels.schema)
    return _Part(lists, [(name(q), [name(p) for p in c]) for q, c in part.held], qrels, {})


def load_training(main: Source, extras: list[Source], settings: TrainSettings, device: str = "cpu",
                  validate_on: str = "all") -> TrainingData:
    """Training lists of every source, validation over every source's held-out queries (or, with
    ``validate_on="main"``, the main source's only), and the features."""
    work = main.work
    passages = EmbeddingCache(work.passages)
    meta = passages.metadata
    if settings.init:  # training goes on from a head: on the features it was trained on
        check_head_features(settings.init, passages)
    names = head_signals(settings)
    if settings.stage == 2:
        if extras or names:
            raise ValueError("stage 2 (end to end) trains a head without signals on the main collection only; "
                             "drop the extra sources and the head's signals")
        if encoder_field(meta, "backend") != "torch":
            raise ValueError(f"stage 2 fine-tunes the torch encoder, but {work.passages} was embedded with the "
                             f"{meta['backend']} backend; embed with backend torch (another --workdir) to train end to end")
        part = _load_part(main, settings.val_depth, settings.queries_per_source, settings.seed)
        corpus = read_corpus(main.data, empty="skip")
        queries = read_queries(main.data)
        encoder = TextEncoder(meta["model"], pooling=meta["pooling"], normalize=meta["normalize"],
                              max_length=meta["max_length"], device=device, precision=settings.precision)
        features = EncodedFeatures(encoder, dict(zip(corpus.table["id"].to_pylist(), corpus.texts())),
                                   dict(zip(queries["id"].to_pylist(), queries["text"].to_pylist())),
                                   settings.passage_tokens)
        return TrainingData(part.lists, Validation(part.held, part.qrels), features, {**meta, "model": ENCODER_DIR})
    parts, features, group = {}, {}, {}
    for source in [main, *extras]:
        source_work = source.work
        other = EmbeddingCache(source_work.passages)
        if other.metadata["fingerprint"] != meta["fingerprint"]:
            raise CacheMismatchError(f"extra source {source.name!r} was embedded by another encoder "
                                     f"({other.metadata['model']}) than {main.workdir} ({meta['model']}); its features "
                                     "cannot train the same head")
        plain = _load_part(source, settings.val_depth, settings.queries_per_source, settings.seed)  # its own ids
        parts[source.name] = _prefixed(plain, source.name)
        group.update({q: source.name or "main" for q, _ in parts[source.name].held})
        features[source.name] = candidate_features(other, EmbeddingCache(source_work.queries), plain.lists,
                                                    Validation(plain.held, plain.qrels), settings.val_depth,
                                                    plain.signals, names)
    lists = sum((p.lists for p in parts.values()), Lists([], [], []))
    validating = parts if validate_on == "all" else {main.name: parts[main.name]}
    held = [item for p in validating.values() for item in p.held]
    qrels = pa.concat_tables([p.qrels for p in validating.values()])
    validation = Validation(held, qrels, group if len(validating) > 1 else None)
    return TrainingData(lists, validation, CachedFeatures.combine(features), meta)
