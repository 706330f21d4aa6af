"""Feature providers for training and validation: cached vectors (stage 1) or the trainable
encoder over texts (stage 2), plus the containers of training and validation lists.

Both providers answer ``lists(query_ids, lists) -> (queries [B,E], [n_i x E] blocks)`` for
ranking through the one scoring path, and ``inputs(...)`` for the module being trained.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch

from listcon.model import TextEncoder, pad_lists
from listcon.pipeline.store.embedding_cache import EmbeddingCache
from listcon.schemas import SIGNALS


@dataclass
class Lists:
    """Training lists: query ids, passage ids per list, labels per list."""

    query_ids: list[str]
    passages: list[list[str]]
    labels: list[list[int]]

    @classmethod
    def from_table(cls, table: pa.Table, prefix: str = "") -> "Lists":
        name = (lambda x: f"{prefix}/{x}") if prefix else (lambda x: x)
        return cls([name(q) for q in table["query_id"].to_pylist()],
                   [[name(p) for p in c] for c in table["passage_ids"].to_pylist()], table["labels"].to_pylist())

    def __add__(self, other: "Lists") -> "Lists":
        return Lists(self.query_ids + other.query_ids, self.passages + other.passages, self.labels + other.labels)

    def __len__(self) -> int:
        return len(self.query_ids)


@dataclass
class Validation:
    """Held-out queries: their candidate lists (best first) and qrels; ``group`` names each
    query's collection (the validation score is then a mean over collections, see
    ``TrainSettings.val_weighting``)."""

    lists: list[tuple[str, list[str]]]
    qrels: pa.Table
    group: dict[str, str] | None = None

    def sizes(self) -> dict[str, int]:
        """Held-out queries with candidates per collection (``{"main": n}`` without groups)."""
        counts: dict[str, int] = {}
        for query, candidates in self.lists:
            if candidates:
                name = self.group.get(query, "") if self.group else "main"
                counts[name] = counts.get(name, 0) + 1
        return counts


class CachedFeatures:
    """Stage 1: features from the Lance caches, loaded once into memory.

    With ``signals`` (``{(query_id, passage_id): full SIGNALS vector}``) and the head's signal
    ``names``, every list block is ``[n, E + S]``: features, then the head's signals.
    """

    def __init__(self, passages: EmbeddingCache, queries: EmbeddingCache, passage_ids: list[str], query_ids: list[str],
                 signals: dict[tuple[str, str], np.ndarray] | None = None, names: tuple[str, ...] = ()) -> None:
        pids = list(dict.fromkeys(passage_ids))
        qids = list(dict.fromkeys(query_ids))
        self.p_row = {p: i for i, p in enumerate(pids)}
        self.q_row = {q: i for i, q in enumerate(qids)}
        self.p = torch.tensor(passages.take(pids))
        self.q = torch.tensor(queries.take(qids))
        self.dim = self.p.shape[1]
        self.signals, self.names = signals or {}, tuple(names)

    @classmethod
    def combine(cls, parts: dict[str, "CachedFeatures"]) -> "CachedFeatures":
        """One feature store over several corpora; ids become ``<name>/<id>`` (ids may collide), the '' part keeps its ids."""
        combined = cls.__new__(cls)
        combined.p_row, combined.q_row, p_parts, q_parts = {}, {}, [], []
        for name, part in parts.items():
            key = (lambda k: f"{name}/{k}") if name else (lambda k: k)
            combined.p_row.update({key(k): v + sum(len(x) for x in p_parts) for k, v in part.p_row.items()})
            combined.q_row.update({key(k): v + sum(len(x) for x in q_parts) for k, v in part.q_row.items()})
            p_parts.append(part.p)
            q_parts.append(part.q)
        combined.p, combined.q = torch.cat(p_parts), torch.cat(q_parts)
        combined.dim = combined.p.shape[1]
        combined.names = next(iter(parts.values())).names
        combined.signals = {}
        for name, part in parts.items():
            key = (lambda k: f"{name}/{k}") if name else (lambda k: k)
            combined.signals.update({(key(q), key(p)): v for (q, p), v in part.signals.items()})
        return combined

    def lists(self, query_ids: list[str], lists: list[list[str]]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        rows = [torch.tensor([self.p_row[p] for p in c], dtype=torch.long) for c in lists]
        blocks = [self.p[r] for r in rows]
        if self.names:
            picked = [SIGNALS.index(n) for n in self.names]
            blocks = [torch.cat([b, torch.tensor(np.stack([self.signals[(q, p)][picked] for p in c])
                                                 if c else np.zeros((0, len(picked)), np.float32))], dim=1)
                      for q, c, b in zip(query_ids, lists, blocks)]
        return self.q[[self.q_row[q] for q in query_ids]], blocks

    def inputs(self, query_ids: list[str], lists: list[list[str]], device: torch.device) -> dict[str, torch.Tensor]:
        q, blocks = self.lists(query_ids, lists)
        padded, mask = pad_lists(blocks, self.dim + len(self.names))
        inputs = {"query": q.to(device), "passages": padded[..., : self.dim].to(device), "mask": mask.to(device)}
        if self.names:
            inputs["signals"] = padded[..., self.dim :].to(device)
        return inputs


class EncodedFeatures:
    """Stage 2: tokens for the end-to-end module; features by the (training) encoder."""

    def __init__(self, encoder: TextEncoder, passage_texts: dict[str, str], query_texts: dict[str, str],
                 passage_tokens: int | None = None) -> None:
        self.encoder, self.passage_texts, self.query_texts = encoder, passage_texts, query_texts
        self.passage_tokens = passage_tokens  # training inputs only; ``lists`` (validation) keeps the encoder's limit
        self.dim = encoder.dim

    def inputs(self, query_ids: list[str], lists: list[list[str]], device: torch.device) -> dict[str, torch.Tensor]:
        n = max(len(c) for c in lists)
        q = self.encoder.tokenize([self.query_texts[i] for i in query_ids])
        flat = [self.passage_texts[p] for c in lists for p in c]
        p = self.encoder.tokenize(flat, self.passage_tokens)
        tokens = p["input_ids"].shape[1]
        ids = torch.zeros(len(lists), n, tokens, dtype=torch.long, device=p["input_ids"].device)
        att = torch.zeros_like(ids)
        mask = torch.zeros(len(lists), n, dtype=torch.bool)
        k = 0
        for i, c in enumerate(lists):
            ids[i, : len(c)] = p["input_ids"][k : k + len(c)]
            att[i, : len(c)] = p["attention_mask"][k : k + len(c)]
            mask[i, : len(c)] = True
            k += len(c)
        return {"query_ids": q["input_ids"].to(device), "query_mask": q["attention_mask"].to(device),
                "passage_ids": ids.to(device), "passage_mask": att.to(device), "mask": mask.to(device)}

    @torch.no_grad()
    def lists(self, query_ids: list[str], lists: list[list[str]]) -> tuple[np.ndarray, list[np.ndarray]]:
        q = self.encoder.encode([self.query_texts[i] for i in query_ids])
        flat = self.encoder.encode([self.passage_texts[p] for c in lists for p in c])
        offsets = np.cumsum([0, *(len(c) for c in lists)])
        return q, [flat[s:e] for s, e in zip(offsets[:-1], offsets[1:])]


def candidate_features(passages: EmbeddingCache, queries: EmbeddingCache, lists: Lists, validation: Validation | None,
                       val_depth: int, signals: dict[tuple[str, str], np.ndarray] | None = None,
                       names: tuple[str, ...] = ()) -> CachedFeatures:
    """Stage-1 features for every passage and query training and validation will touch."""
    pids = [p for c in lists.passages for p in c]
    qids = list(lists.query_ids)
    if validation:
        pids += [p for _, c in validation.lists for p in c[:val_depth]]
        qids += [q for q, _ in validation.lists]
    return CachedFeatures(passages, queries, pids, qids, signals, names)
