"""The encoder as a Ray Data callable: load once per actor, encode dict batches.

Plain class, testable on a dict without Ray: ``EncodeBatch(settings)({"id": ..., "text": ...,
"content_hash": ...}) -> {"id", "content_hash", "vector"}``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from listcon.model import PRECISIONS
from listcon.model.encoder import BACKENDS, POOLINGS, BatchEncoder
from listcon.model.onnx_encoder import load_encoder
from listcon.schemas import VECTOR_DTYPES, check_choices, check_finite, check_ranges, choice, option


@dataclass(frozen=True)
class EncoderSettings:
    """Which encoder and how its vectors are stored; part of every embed job's config."""

    model: str | None = option(None, "local HF model directory or hub id (default: the packaged all-MiniLM-L6-v2)")
    pooling: str = choice("mean", POOLINGS, "mean: masked mean pooling (the released method); cls")
    normalize: bool = option(False, "L2-normalise stored vectors (the released method does not)")
    max_length: int | None = option(None, "token limit (default: the model's configured one)", at_least=1)
    dtype: str = choice("float32", tuple(sorted(VECTOR_DTYPES)), "storage precision of the vectors")
    batch_size: int | None = option(None, "texts per encoder batch (default: 64 on CPU, 256 on a GPU)", at_least=1)
    precision: str = choice("auto", PRECISIONS, "encoder arithmetic: auto is bf16 autocast on CUDA, fp32 on CPU")
    backend: str = choice("torch", BACKENDS, "torch; onnx (ONNX Runtime on CPU, same vectors, faster); "
                          "onnx-int8 (int8 weights, faster still, vectors within ~0.005 cosine); "
                          "hash (no model: vectors from content hashes, for scale benchmarks only)")
    export_dir: str | None = option(None, "where ONNX exports are cached (default: W/encoders)")

    def __post_init__(self) -> None:
        check_ranges(self)
        check_choices(self)

    def batch_for(self, device: str | None) -> int:
        """Texts per batch on ``device``: the configured size, else 64 on CPU and 256 on a GPU, which
        is idle between small batches."""
        if self.batch_size is not None:
            return self.batch_size
        return 256 if device is not None and str(device).startswith("cuda") else 64

    def load(self, device: str | None = None) -> BatchEncoder:
        """The encoder these settings describe (an ONNX backend exports on first use)."""
        if self.backend == "torch" and device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        return load_encoder(self.model, backend=self.backend, pooling=self.pooling, normalize=self.normalize,
                            max_length=self.max_length, batch_size=self.batch_for(device), precision=self.precision,
                            device=device if self.backend == "torch" else None, export_dir=self.export_dir)

    def expected_metadata(self, encoder: BatchEncoder) -> dict:
        """The metadata an embedding table written by ``encoder`` under these settings carries
        (``precision`` is where this encoder runs; the embed step records what its workers used)."""
        return {**asdict(encoder.info()), "dtype": self.dtype}


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
