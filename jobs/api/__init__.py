"""listcon: embedding-cache batch reranking with ListConRanker.

The front door for notebooks and scripts::

    import listcon

    config = listcon.load_config("jobs/demo.toml")      # or listcon.Config(data=..., workdir=...)
    listcon.run(config)                                  # the whole job, resumable
    reranker = listcon.Reranker.from_pretrained("work/scifact/head", "work/scifact")
    reranker.rerank({"q1": ["d3", "d1", "d7"]})          # -> DataFrame qid, docno, rank, score, round
    reranker.rank("a query", ["passage one", "passage two"], top_k=1)

Each step is one function taking the same ``Config`` the CLI builds: ``embed``, ``index``,
``retrieve``, ``mine``, ``train``, ``rerank``, ``evaluate``, and ``run`` for all of them; ``adapt``
chooses an unlabelled corpus's fusion from pseudo-queries cut from its passages.
"""

from importlib.metadata import PackageNotFoundError, version

from listcon.schemas.lazy import lazy_attributes

try:
    __version__ = version("listcon")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

# name -> the module that defines it, imported on first use: ``import listcon`` (and the CLI,
# whose ``listcon status`` must answer in well under 2 s) pays only for what it touches
_WHERE = {
    "AdaptResult": "listcon.jobs.adapt_job",
    "AdaptSettings": "listcon.pipeline.adaptation.settings",
    "Config": "listcon.jobs.config",
    "ConfigError": "listcon.schemas",
    "DataError": "listcon.schemas",
    "EmbedOptions": "listcon.jobs.config",
    "EmbedReport": "listcon.pipeline.encoding.embed",
    "EncoderSettings": "listcon.pipeline.encoding.settings",
    "EvaluateOptions": "listcon.jobs.config",
    "EvaluateResult": "listcon.jobs.evaluate_job",
    "ExtraSource": "listcon.jobs.config",
    "IndexResult": "listcon.jobs.index_job",
    "IndexSpec": "listcon.pipeline.retrieval.faiss_index",
    "ListConRanker": "listcon.model",
    "ListConRankerConfig": "listcon.model.head_config",
    "Manifest": "listcon.pipeline.retrieval.faiss_index",
    "MineResult": "listcon.jobs.mine_job",
    "MiningSettings": "listcon.pipeline.training.mining",
    "PruneSchedule": "listcon.model.schedule",
    "RankResult": "listcon.pipeline.rerank.reranker",
    "RayOptions": "listcon.jobs.config",
    "RerankOptions": "listcon.jobs.config",
    "RerankResult": "listcon.jobs.rerank_job",
    "RerankSettings": "listcon.pipeline.rerank.settings",
    "Reranker": "listcon.pipeline.rerank.reranker",
    "RetrieveOptions": "listcon.jobs.config",
    "RetrieveResult": "listcon.jobs.retrieve_job",
    "RunResult": "listcon.jobs.run_job",
    "TrainOptions": "listcon.jobs.config",
    "TrainResult": "listcon.jobs.train_job",
    "TrainSettings": "listcon.pipeline.training.settings",
    "adapt": "listcon.jobs.adapt_job",
    "embed": "listcon.jobs.embed_job",
    "evaluate": "listcon.jobs.evaluate_job",
    "index": "listcon.jobs.index_job",
    "load_config": "listcon.jobs.config",
    "mine": "listcon.jobs.mine_job",
    "rerank": "listcon.jobs.rerank_job",
    "retrieve": "listcon.jobs.retrieve_job",
    "run": "listcon.jobs.run_job",
    "status": "listcon.jobs.status",
    "Status": "listcon.jobs.status",
    "train": "listcon.jobs.train_job",
}

__all__ = sorted([*_WHERE, "__version__"])

__getattr__, __dir__ = lazy_attributes(__name__, _WHERE)
