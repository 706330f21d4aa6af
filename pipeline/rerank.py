"""The rerank step: cached features of each query's candidates -> ListConRanker head with
iterative pruning, batched across queries, bounded by a memory budget.

Only the small head runs here: passage features come from the Lance cache (one batched
take per query batch), never from the text encoder.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from listcon.model import ListConRanker, iterative_rerank
from listcon.pipeline.embedding_cache import EmbeddingCache, MissingPassagesError
from listcon.schemas import RANKINGS

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RerankSettings:
    """Algorithm 1 parameters and how the work is batched (part of the rerank job's config)."""

    theta: int = 20
    beta: float = 0.2
    min_drop: int = 10
    depth: int | None = None  # rerank only each query's top-`depth` candidates (None: all)
    memory_budget_mb: int = 1024  # activations of one query batch
    skip_missing: bool = False  # drop candidates absent from the cache (counted) instead of failing
    device: str | None = None  # None: cuda when available, else cpu
    precision: str = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU; or fp32 | fp16 | bf16


def queries_per_batch(model: ListConRanker, n_candidates: int, budget_mb: int) -> int:
    """How many lists of ``n_candidates`` fit the activation budget (at least one)."""
    cfg = model.config
    per_token = 4 * (2 * cfg.embed_dim + 6 * cfg.hidden_size + cfg.ffn_size)  # bytes, fp32, one layer live
    per_query = (n_candidates + 1) * per_token * 2
    return max(1, int(budget_mb * 2**20 // max(per_query, 1)))


def checkpoint_fingerprint(model_dir: str | Path) -> str:
    """SHA-256 of a checkpoint's weights and config (part of a ranking's provenance)."""
    digest = hashlib.sha256()
    for name in ("config.json", "model.safetensors"):
        with open(Path(model_dir) / name, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


class Reranker:
    """Reranks candidate lists with a head over cached features; a plain class (Ray wraps it)."""

    def __init__(self, model: ListConRanker, passages: EmbeddingCache, queries: EmbeddingCache,
                 settings: RerankSettings = RerankSettings()) -> None:
        dim = passages.metadata["dim"]
        if model.config.embed_dim != dim:
            raise ValueError(f"the checkpoint expects embed_dim={model.config.embed_dim}, but the passage cache at "
                             f"{passages.uri} holds {dim}-d vectors; use a head trained on this encoder's features")
        self.settings = settings
        self.device = torch.device(settings.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model.to(self.device).eval()
        self.passages, self.queries = passages, queries
        precision = settings.precision
        if precision == "auto":
            precision = "bf16" if self.device.type == "cuda" else "fp32"
        if precision != "fp32" and self.device.type != "cuda":
            raise ValueError(f"precision {precision} is for CUDA; on CPU use fp32 (bf16 is pathologically slow there)")
        self.autocast = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision)
        self.skipped_missing = 0
        self.seconds = {"take": 0.0, "model": 0.0}  # where the time goes (bench, logs)

    def score(self, query: torch.Tensor, passages: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The head's probabilities (the ``score_fn`` of iterative inference)."""
        context = torch.autocast("cuda", dtype=self.autocast) if self.autocast else contextlib.nullcontext()
        with context:
            return self.model(query, passages, mask).float()

    def rerank(self, lists: list[tuple[str, list[str]]]) -> pa.Table:
        """Rankings rows for ``[(query_id, candidate ids best-first), ...]``, in batches that fit the budget."""
        depth = self.settings.depth
        lists = [(q, c[:depth] if depth else c) for q, c in lists]
        longest = max((len(c) for _, c in lists), default=0)
        size = queries_per_batch(self.model, longest, self.settings.memory_budget_mb)
        parts = [self._rerank_batch(lists[i : i + size]) for i in range(0, len(lists), size)]
        return pa.concat_tables(parts) if parts else RANKINGS.empty_table()

    def _rerank_batch(self, lists: list[tuple[str, list[str]]]) -> pa.Table:
        flat = [p for _, c in lists for p in c]
        positions = self.passages.positions(flat)
        if (positions < 0).any():
            missing = [p for p, i in zip(flat, positions) if i < 0]
            if not self.settings.skip_missing:
                raise MissingPassagesError(self.passages.uri, missing)
            self.skipped_missing += len(missing)
            known = set(np.asarray(flat, dtype=object)[positions >= 0])
            lists = [(q, [p for p in c if p in known]) for q, c in lists]
            flat = [p for _, c in lists for p in c]
        started = time.perf_counter()
        vectors = self.passages.take(flat)
        query_vectors = self.queries.take([q for q, _ in lists])
        self.seconds["take"] += time.perf_counter() - started
        lengths = [len(c) for _, c in lists]
        n = max(lengths, default=0)
        if n == 0:
            return RANKINGS.empty_table()
        padded = np.zeros((len(lists), n, vectors.shape[1]), dtype=np.float32)
        offsets = np.cumsum([0, *lengths])
        for i, length in enumerate(lengths):
            padded[i, :length] = vectors[offsets[i] : offsets[i + 1]]
        mask = torch.arange(n)[None, :] < torch.tensor(lengths)[:, None]
        started = time.perf_counter()
        with torch.inference_mode():
            order, scores, rounds = iterative_rerank(
                self.score, torch.tensor(query_vectors, device=self.device), torch.from_numpy(padded).to(self.device),
                mask.to(self.device), self.settings.theta, self.settings.beta, self.settings.min_drop, return_rounds=True)
        self.seconds["model"] += time.perf_counter() - started
        return rankings_table(lists, order, scores, rounds)


def rankings_table(lists: list[tuple[str, list[str]]], order: torch.Tensor, scores: torch.Tensor, rounds: torch.Tensor) -> pa.Table:
    """Rankings rows from iterative inference's output for ``lists`` (query, candidates)."""
    order, scores, rounds = order.cpu().numpy(), scores.cpu().numpy(), rounds.cpu().numpy()
    lengths = [len(c) for _, c in lists]
    qid, pid, rank, score, rnd = [], [], [], [], []
    for i, ((query, candidates), length) in enumerate(zip(lists, lengths)):
        qid += [query] * length
        pid += [candidates[j] for j in order[i, :length]]
        rank.append(np.arange(1, length + 1, dtype=np.int32))
        score.append(scores[i, :length])
        rnd.append(rounds[i, :length].astype(np.int32))
    return pa.table({"query_id": qid, "passage_id": pid, "rank": np.concatenate(rank), "score": np.concatenate(score),
                     "round": np.concatenate(rnd)}, schema=RANKINGS)


def candidate_lists(candidates: pa.Table, query_ids: list[str]) -> list[tuple[str, list[str]]]:
    """``[(query_id, passage ids by rank)]`` for ``query_ids`` in order; a query with none gets []."""
    ordered = candidates.sort_by([("query_id", "ascending"), ("rank", "ascending")])
    qids = ordered["query_id"].to_numpy(zero_copy_only=False)
    pids = ordered["passage_id"].to_numpy(zero_copy_only=False)
    bounds = np.flatnonzero(np.r_[True, qids[1:] != qids[:-1], True]) if len(qids) else np.array([0])
    by_query = {qids[s]: pids[s:e].tolist() for s, e in zip(bounds[:-1], bounds[1:])} if len(qids) else {}
    return [(q, by_query.get(q, [])) for q in query_ids]
