"""The encoder as a Ray Data callable: load once per actor, encode dict batches.

Plain class, testable on a dict without Ray: ``EncodeBatch(settings)({"id": ..., "text": ...,
"content_hash": ...}) -> {"id", "content_hash", "vector"}``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from listcon.model import TextEncoder
from listcon.schemas import VECTOR_DTYPES, check_finite


@dataclass(frozen=True)
class EncoderSettings:
    """Which encoder and how its vectors are stored; part of every embed job's config."""

    model: str | None = None  # None: the packaged all-MiniLM-L6-v2
    pooling: str = "mean"
    normalize: bool = False
    max_length: int | None = None
    dtype: str = "float32"  # storage precision of the vectors: float32 | float16
    batch_size: int = 64
    half_precision: bool = False  # fp16 autocast for the encoder on GPU (ignored on CPU)

    def __post_init__(self) -> None:
        if self.dtype not in VECTOR_DTYPES:
            raise ValueError(f"dtype must be one of {sorted(VECTOR_DTYPES)}, got {self.dtype!r}")

    def load(self, device: str | None = None) -> TextEncoder:
        return TextEncoder(self.model, pooling=self.pooling, normalize=self.normalize, max_length=self.max_length,
                           device=device, batch_size=self.batch_size, half_precision=self.half_precision)

    def expected_metadata(self, encoder: TextEncoder) -> dict:
        """The metadata an embedding table written by ``encoder`` under these settings carries."""
        return {**asdict(encoder.info()), "dtype": self.dtype}


class EncodeBatch:
    """Ray Data batch callable that turns ``{id, text, content_hash}`` into vectors."""

    def __init__(self, settings: EncoderSettings, threads: int | None = None) -> None:
        if threads:
            torch.set_num_threads(threads)
        self.encoder = settings.load()
        self.dtype = np.float16 if settings.dtype == "float16" else np.float32

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        vectors = self.encoder.encode([str(t) for t in batch["text"]])
        check_finite(list(batch["id"]), vectors, f"encoder {self.encoder.name}")
        return {"id": batch["id"], "content_hash": batch["content_hash"], "vector": vectors.astype(self.dtype)}
