"""listcon: embedding-cache batch reranking with ListConRanker.

The front door for notebooks and scripts::

    import listcon

    config = listcon.load_config("jobs/demo.toml")      # or listcon.Config(data=..., workdir=...)
    listcon.run(config)                                  # the whole job, resumable
    reranker = listcon.Reranker.from_pretrained("work/scifact/head", "work/scifact")
    reranker.rerank({"q1": ["d3", "d1", "d7"]})          # -> DataFrame qid, docno, rank, score, round
    reranker.rank("a query", ["passage one", "passage two"], top_k=1)

Each step is one function taking the same ``Config`` the CLI builds: ``embed``, ``index``,
``retrieve``, ``mine``, ``train``, ``rerank``, ``evaluate``, and ``run`` for all of them.
"""

from importlib.metadata import PackageNotFoundError, version

from listcon.jobs.config import (
    Config,
    EmbedOptions,
    EvaluateOptions,
    ExtraSource,
    RayOptions,
    RerankOptions,
    RetrieveOptions,
    TrainOptions,
    load_config,
)
from listcon.jobs.embed_job import embed
from listcon.jobs.evaluate_job import EvaluateResult, evaluate
from listcon.jobs.index_job import IndexResult, index
from listcon.jobs.mine_job import MineResult, mine
from listcon.jobs.rerank_job import RerankResult, rerank
from listcon.jobs.retrieve_job import RetrieveResult, retrieve
from listcon.jobs.run_job import RunResult, run
from listcon.jobs.train_job import TrainResult, train
from listcon.model import ListConRanker, ListConRankerConfig, PruneSchedule
from listcon.pipeline.encoding.embed import EmbedReport
from listcon.pipeline.encoding.encode_batch import EncoderSettings
from listcon.pipeline.rerank.reranker import RankResult, Reranker
from listcon.pipeline.rerank.settings import RerankSettings
from listcon.pipeline.retrieval.faiss_index import IndexSpec, Manifest
from listcon.pipeline.training.loop import TrainSettings
from listcon.pipeline.training.mining import MiningSettings
from listcon.schemas import ConfigError, DataError

try:
    __version__ = version("listcon")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "Config",
    "ConfigError",
    "DataError",
    "EmbedOptions",
    "EmbedReport",
    "EncoderSettings",
    "EvaluateOptions",
    "EvaluateResult",
    "ExtraSource",
    "IndexResult",
    "IndexSpec",
    "ListConRanker",
    "ListConRankerConfig",
    "Manifest",
    "MineResult",
    "MiningSettings",
    "PruneSchedule",
    "RankResult",
    "RayOptions",
    "RerankOptions",
    "RerankResult",
    "RerankSettings",
    "Reranker",
    "RetrieveOptions",
    "RetrieveResult",
    "RunResult",
    "TrainOptions",
    "TrainResult",
    "TrainSettings",
    "__version__",
    "embed",
    "evaluate",
    "index",
    "load_config",
    "mine",
    "rerank",
    "retrieve",
    "run",
    "train",
]
