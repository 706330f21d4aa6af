"""The encoder as a Ray Data callable: load once per actor, encode dict batches.

Plain class, testable on a dict without Ray: ``EncodeBatch(settings)({"id": ..., "text": ...,
"content_hash": ...}) -> {"id", "content_hash", "vector"}``.
"""

from __future__ import annotations

import numpy as np
import torch

from listcon.pipeline.encoding.settings import EncoderSettings  # noqa: F401  (re-exported)
from listcon.schemas import check_finite


class EncodeBatch:
    """Ray Data batch callable that turns ``{id, text, content_hash}`` into vectors."""

    def __init__(self, settings: EncoderSettings, threads: int | None = None, device: str | None = None) -> None:
        if threads:
            torch.set_num_threads(threads)
        self.encoder = settings.load(device)
        self.dtype = np.float16 if settings.dtype == "float16" else np.float32

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        vectors = self.encoder.encode([str(t) for t in batch["text"]])
        check_finite(list(batch["id"]), vectors, f"encoder {self.encoder.name}")
        return {"id": batch["id"], "content_hash": batch["content_hash"], "vector": vectors.astype(self.dtype),
                "precision": np.full(len(vectors), self.encoder.precision)}  # the arithmetic actually used
