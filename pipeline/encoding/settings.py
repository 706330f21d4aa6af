"""Which encoder and how its vectors are stored: the ``[encoder]`` config section, without torch
(the model loads only when ``load()`` is called)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from listcon.model.choices import BACKENDS, POOLINGS, PRECISIONS
from listcon.schemas import VECTOR_DTYPES, check_choices, check_ranges, choice, option

if TYPE_CHECKING:
    from listcon.model.encoder import BatchEncoder


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
    export_dir: str | None = option(None, "where ONNX exports are cached (default: the user's cache, "
                                    "$XDG_CACHE_HOME/listcon/encoders, which every workdir shares)")

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
        """The encoder these settings describe (an ONNX backend exports on first use). A step asks for it
        more than once (to check a cache, then to encode): the last one loaded in this process is reused
        while its settings, device and model files are the same."""
        from listcon.model.onnx_encoder import load_encoder

        if self.backend == "torch" and device is None:
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        key = (self, device, _files_stamp(self.model))
        if key not in _LAST_LOADED:
            _LAST_LOADED.clear()  # one encoder held at a time
            _LAST_LOADED[key] = load_encoder(
                self.model, backend=self.backend, pooling=self.pooling, normalize=self.normalize,
                max_length=self.max_length, batch_size=self.batch_for(device), precision=self.precision,
                device=device if self.backend == "torch" else None, export_dir=self.export_dir)
        return _LAST_LOADED[key]

    def expected_metadata(self, encoder: BatchEncoder) -> dict:
        """The metadata an embedding table written by ``encoder`` under these settings carries
        (``precision`` is where this encoder runs; the embed step records what its workers used)."""
        return {**asdict(encoder.info()), "dtype": self.dtype}


_LAST_LOADED: dict[tuple, BatchEncoder] = {}


def _files_stamp(model: str | None) -> tuple:
    """(name, size, mtime) of a local model directory's files: a model rewritten in place is loaded anew."""
    if model is None or not Path(model).is_dir():
        return ()
    return tuple(sorted((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in Path(model).iterdir() if f.is_file()))
