"""Training data from workdirs: mined lists, held-out validation lists and their features.

The main source gives the training lists and the held-out queries; extra labelled
collections (each mined in its own workdir) add lists, their ids prefixed by the source's
name so ids from different corpora never collide.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow.compute as pc

from listcon.model import TextEncoder
from listcon.pipeline.data.readers import read_corpus, read_qrels, read_queries
from listcon.pipeline.store.ranked_lists import candidate_lists
from listcon.pipeline.store.embedding_cache import CacheMismatchError, EmbeddingCache
from listcon.pipeline.store.ranked_lists import read_ranked
from listcon.pipeline.store.workdir import Workdir
from listcon.pipeline.training.features import CachedFeatures, EncodedFeatures, Lists, Validation, candidate_features
from listcon.pipeline.training.loop import TrainSettings


@dataclass(frozen=True)
class Source:
    """A labelled collection to train on: its data dir, workdir and split (name prefixes its ids)."""

    name: str
    data: str
    workdir: str
    split: str

    def resolved(self) -> "Source":
        """Absolute paths: Ray Train workers run in another working directory."""
        return Source(self.name, str(Path(self.data).resolve()), str(Path(self.workdir).resolve()), self.split)


@dataclass
class TrainingData:
    """Everything ``fit`` needs: lists, validation, features, and the encoder those features come from."""

    lists: Lists
    validation: Validation
    features: CachedFeatures | EncodedFeatures
    encoder_info: dict


def load_training(main: Source, extras: list[Source], settings: TrainSettings, device: str = "cpu") -> TrainingData:
    """Training lists, validation (main split's held-out queries) and the features to train on."""
    work = Workdir(Path(main.workdir))
    table = read_ranked(work.training(main.split))
    held = table.filter(pc.field("holdout"))
    lists = Lists.from_table(table.filter(~pc.field("holdout")))
    candidates = read_ranked(work.candidates(main.split))
    qrels = read_qrels(main.data, main.split)
    validation = Validation(candidate_lists(candidates, held["query_id"].to_pylist()),
                            qrels.filter(pc.is_in(qrels["query_id"], value_set=held.column("query_id"))))
    passages = EmbeddingCache(work.passages)
    meta = passages.metadata
    if settings.stage == 2:
        if extras:
            raise ValueError("stage 2 (end to end) trains on the main collection only; drop the extra sources")
        corpus = read_corpus(main.data, empty="skip")
        queries = read_queries(main.data)
        encoder = TextEncoder(meta["model"], pooling=meta["pooling"], normalize=meta["normalize"],
                              max_length=meta["max_length"], device=device, precision=settings.precision)
        features = EncodedFeatures(encoder, dict(zip(corpus.table["id"].to_pylist(), corpus.texts())),
                                   dict(zip(queries["id"].to_pylist(), queries["text"].to_pylist())))
        return TrainingData(lists, validation, features, {**meta, "model": "encoder"})
    parts = {"": candidate_features(passages, EmbeddingCache(work.queries), lists, validation, settings.val_depth)}
    for extra in extras:
        extra_work = Workdir(Path(extra.workdir))
        other = EmbeddingCache(extra_work.passages).metadata
        if other["fingerprint"] != meta["fingerprint"]:
            raise CacheMismatchError(f"extra source {extra.name!r} was embedded by another encoder ({other['model']}) "
                                     f"than {main.workdir} ({meta['model']}); its features cannot train the same head")
        extra_lists = Lists.from_table(read_ranked(extra_work.training(extra.split)))
        parts[extra.name] = candidate_features(EmbeddingCache(extra_work.passages), EmbeddingCache(extra_work.queries),
                                               extra_lists, None, 0)
        lists = lists + Lists.from_table(read_ranked(extra_work.training(extra.split)), prefix=extra.name)
    return TrainingData(lists, validation, CachedFeatures.combine(parts), meta)
