"""`listcon adapt --init HEAD`: fine-tune a head on pseudo-queries cut from the target corpus's own passages.

The pseudo-queries (the same ones the fusion choice scores) are written as a labelled collection under
``W/adaptation/data`` (``pipeline/adaptation/pseudo_collection``): each source passage indexed without what
was cut from it, judged relevant to its pseudo-query. The pipeline's own jobs then take it like any other
collection in ``W/adaptation/work``: embed (only the shortened passages are new: the target's passage cache
seeds it), index, retrieve, mine, and train from ``HEAD`` for at most ``[adapt] epochs`` epochs, the epoch
picked on the pseudo-queries held out (the head as given, epoch 0, included). The head goes to
``W/adaptation/head``. Nothing here reads the target's queries or judgments.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import replace
from pathlib import Path

from listcon.jobs.config import Config, ExtraSource
from listcon.jobs.embed_job import embed
from listcon.jobs.index_job import index
from listcon.jobs.mine_job import mine
from listcon.jobs.retrieve_job import retrieve
from listcon.jobs.train_job import TrainResult, train
from listcon.pipeline.adaptation.pseudo_collection import (SPLIT, pseudo_collection, write_pseudo_collection,
                                                          written_digest)
from listcon.pipeline.adaptation.pseudo_queries import PseudoQuery, pseudo_queries
from listcon.pipeline.data.readers import Corpus, read_corpus
from listcon.pipeline.heads.directory import RESULT_FILE
from listcon.pipeline.heads.features import check_head_features
from listcon.pipeline.store.atomic import swap_dir
from listcon.pipeline.store.embedding_cache import EmbeddingCache
from listcon.pipeline.store.workdir import Workdir
from listcon.pipeline.training.settings import settings_as_now
from listcon.schemas import to_dict

log = logging.getLogger(__name__)

ADAPTATION_DIR = "adaptation"


def adapted_head_dir(work: Workdir) -> Path:
    """Where ``adapt --init`` writes the fine-tuned head."""
    return work.root / ADAPTATION_DIR / "head"


def adapt_head(config: Config, progress: bool = True) -> TrainResult:
    """Fine-tune ``[adapt] init`` on the corpus's pseudo-queries; a rerun with the same inputs changes nothing."""
    options, root = config.adapt, config.work.root / ADAPTATION_DIR
    check_init(options.init, config.work)
    (files, digest), count = _collection(config)
    if write_pseudo_collection(root / "data", files, digest):
        log.info("adapt: %d pseudo-queries written as a collection to %s", count, root / "data")
    pseudo = _pseudo_config(config)
    _seed_cache(config, pseudo.work)
    embed(pseudo, progress=progress)
    index(pseudo)
    retrieve(pseudo, SPLIT, config.retrieve.k, progress=progress)
    mine(pseudo, SPLIT)
    result = train(pseudo)
    log.info("adapt: head %s fine-tuned on %d pseudo-queries -> %s (held-out pseudo-queries: %.4f at epoch %d, "
             "epoch 0 being the head as given)", options.init, count, result.out, result.best_metric, result.best_epoch)
    return result


def check_init(init: str | None, work: Workdir) -> None:
    """``[adapt] init`` names a head directory, trained on the features the workdir's cache holds (one line
    otherwise)."""
    if not init or not (Path(init) / "config.json").is_file():
        raise FileNotFoundError(f"adapt: --init {init} is not a head directory (a trained head's out dir, with "
                                "config.json)")
    check_head_features(init, EmbeddingCache(work.passages))


def fine_tune_pending(config: Config) -> str | None:
    """Why ``adapt`` would fine-tune ``[adapt] init`` again (None: W/adaptation/head is this fine-tuning's)."""
    result = adapted_head_dir(config.work) / RESULT_FILE
    if not result.is_file():
        return "no fine-tuned head yet"
    if written_digest(config.work.root / ADAPTATION_DIR / "data") != _collection(config)[0][1]:
        return "the pseudo-queries changed"
    wanted = to_dict(_pseudo_config(config).train.settings)
    recorded = settings_as_now(json.loads(result.read_text())["provenance"]["settings"])
    return None if recorded == wanted else "its options changed"


def corpus_pseudo_queries(config: Config) -> tuple[Corpus, list[PseudoQuery]]:
    """The corpus (read as embed read it) and its pseudo-queries by ``[adapt]``; fewer than 2 is refused in one line.
    The fusion choice and the fine-tuning both take them from here, so they are the same pseudo-queries."""
    corpus = read_corpus(config.need_data(), empty="skip" if config.embed.skip_empty else "error")
    pseudo = pseudo_queries(corpus.table["id"].to_pylist(), corpus.table["title"].to_pylist(),
                            corpus.table["text"].to_pylist(), config.adapt.pseudo_queries, config.adapt.seed)
    if len(pseudo) < 2:
        raise ValueError(f"adapt: the corpus {config.data} gives {len(pseudo)} pseudo-queries (passages of at least "
                         "6 words are cut); at least 2 are needed")
    return corpus, pseudo


def _collection(config: Config) -> tuple[tuple[dict[str, str], str], int]:
    """(the pseudo collection's files and digest, how many pseudo-queries) of the corpus and ``[adapt]``."""
    corpus, pseudo = corpus_pseudo_queries(config)
    ids, titles, texts = (corpus.table[c].to_pylist() for c in ("id", "title", "text"))
    return pseudo_collection(ids, titles, texts, pseudo), len(pseudo)


def _pseudo_config(config: Config) -> Config:
    """The config the pipeline's jobs take the pseudo collection with: training from ``[adapt] init``."""
    options, root = config.adapt, config.work.root / ADAPTATION_DIR
    source = ExtraSource(name="pseudo", data=str(root / "data"), workdir=str(root / "work"), split=SPLIT)
    settings = replace(config.train.settings, init=str(Path(options.init).resolve()), epochs=options.epochs,
                       patience=options.epochs, lr=options.lr, queries_per_source=None)
    return replace(config.for_collection(source), train=replace(
        config.train, split=SPLIT, k=None, out=str(adapted_head_dir(config.work)), checkpoint=None, extra=(),
        validate_on="main", settings=settings))


def _seed_cache(config: Config, pseudo: Workdir) -> None:
    """Start the pseudo collection's passage cache from the target's (a local copy, swapped in whole), so that
    embed encodes only the shortened source passages; a cache on an object store is not copied (all encoded)."""
    target = Path(config.work.passages)
    destination = Path(pseudo.passages)
    if destination.exists() or config.lance_root or not target.is_dir():
        return
    staged = destination.with_name(destination.name + ".staged")
    shutil.rmtree(staged, ignore_errors=True)
    shutil.copytree(target, staged)
    swap_dir(staged, destination)
