"""First-stage candidates for pseudo-queries, from indexes where each source passage lacks its query.

The corpus's cached vectors and texts stand as they are except for the sampled passages, which are
re-encoded and re-indexed from their ``rest``; then the pipeline's own first stage (``FirstStage``)
retrieves each pseudo-query, so the lists carry exactly the signals a real query's would.
"""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
import pyarrow as pa

from listcon.pipeline.adaptation.pseudo_queries import PseudoQuery
from listcon.pipeline.retrieval import faiss_index
from listcon.pipeline.retrieval.faiss_index import IndexSpec
from listcon.pipeline.retrieval.lexical import LexicalIndex, LexicalSpec
from listcon.pipeline.retrieval.retrieve import FirstStage, RetrieveOptions

log = logging.getLogger(__name__)


def pseudo_candidates(ids: list[str], texts: list[str], vectors: np.ndarray, pseudo: list[PseudoQuery], encoder,
                      passages, metric: str, lexical_spec: LexicalSpec = LexicalSpec(),
                      options: RetrieveOptions = RetrieveOptions(), progress: bool = False) -> tuple[pa.Table, dict[str, str]]:
    """(hybrid candidates of every pseudo-query, {pseudo query id: its source passage id}).

    ``texts`` and ``vectors`` are the corpus's indexed texts and cached vectors in ``ids`` order; ``encoder``
    encodes the queries and the shortened passages (the cache's encoder); ``passages`` is the embedding
    table (named in errors only). The flat index is exact whatever the workdir's index kind.
    """
    position = {p: i for i, p in enumerate(ids)}
    rows = [position[q.passage_id] for q in pseudo]
    shortened = list(texts)
    for row, q in zip(rows, pseudo):
        shortened[row] = q.rest
    vectors = np.array(vectors, dtype=np.float32)
    vectors[rows] = encoder.encode([q.rest for q in pseudo])
    spec = IndexSpec(kind="flat", metric=metric, use_gpu=False)
    stage = FirstStage(faiss_index.build(vectors, spec), ids, spec, LexicalIndex.build(ids, shortened, lexical_spec),
                       passages, replace(options, method="hybrid", from_run=None))
    qids = [f"pseudo-{i}" for i in range(len(pseudo))]
    tables = [c for c, _ in stage.run(qids, [q.text for q in pseudo], encoder.encode([q.text for q in pseudo]),
                                      progress=progress)]
    return pa.concat_tables(tables), {qid: q.passage_id for qid, q in zip(qids, pseudo)}
