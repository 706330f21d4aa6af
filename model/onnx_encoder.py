"""The text encoder run by ONNX Runtime on CPU, in fp32 or with int8 weights.

Encoding is most of what a CPU user pays for. ONNX Runtime runs the same exported graph
about 1.4x faster than eager torch on this CPU, and with int8 weights about 2.3x
(``bench/cpu_speed.py``). The model is exported from the local HF directory on first use
and cached under ``export_dir``, keyed by the weights' fingerprint, the backend and the
export settings below; a change to any of them exports again instead of reusing a stale
graph. The backend is part of the encoder fingerprint stored with every embedding table,
so vectors from different backends are never mixed in one cache.

int8 quantizes the weight matrices of every MatMul per output channel (dynamic activation
quantization). The embeddings, LayerNorm, softmax and the attention-score matmuls (no
constant weight) stay in fp32; a naive per-tensor quantization of every weight costs
about 0.06 cosine to the fp32 vectors, this one about 0.005.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from listcon.model.encoder import BatchEncoder, TextEncoder, pool
from listcon.model.hash_encoder import HashEncoder
from listcon.schemas import encoder_field

log = logging.getLogger(__name__)

EXPORT_FORMAT = "listcon-onnx/1"
# Recorded in the fingerprint: changing any of these must re-export and re-encode.
EXPORT_SETTINGS = {"format": EXPORT_FORMAT, "exporter": "torch.onnx.export(dynamo=True)", "output": "last_hidden_state"}
INT8_SETTINGS = {"weight_type": "QInt8", "per_channel": True, "reduce_range": False, "op_types": ["MatMul"],
                 "MatMulConstBOnly": True}
# How a graph is run, where that changes its numbers (recorded in the fingerprint, not in the export's key).
# A quantized graph's DynamicQuantizeLinear takes one activation scale per run, over every token of every text
# in it: a text's vector would move with its batch mates and their padding (cosine down to 0.985 on scifact
# abstracts), so an incremental embed would not equal one from scratch. Each text runs alone; without
# padding this measured no slower here.
RUN_SETTINGS = {"onnx-int8": {"run": "one text per session run"}}
ONNX_BACKENDS = ("onnx", "onnx-int8")
MODEL_FILE = "model.onnx"


def default_export_dir() -> Path:
    """Where exports go when no workdir names a place: ``$XDG_CACHE_HOME/listcon/encoders``."""
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "listcon" / "encoders"


def _runtime():
    try:
        import onnxruntime
    except ImportError as err:
        raise ImportError("the onnx encoder backends need ONNX Runtime: pip install 'listcon[onnx]'") from err
    return onnxruntime


def backend_settings(backend: str) -> dict:
    """Everything besides the weights that decides an exported graph's numbers."""
    if backend not in ONNX_BACKENDS:
        raise ValueError(f"onnx backend must be one of {ONNX_BACKENDS}, got {backend!r}")
    return {"backend": backend, **EXPORT_SETTINGS, **({"int8": INT8_SETTINGS} if backend == "onnx-int8" else {})}


@contextlib.contextmanager
def _quiet():
    """Silence the exporter's and quantizer's chatter (per-pass and per-tensor notes on the root
    logger, axis-name and deprecation warnings) for the few seconds an export takes."""
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(logging.NOTSET)


class _LastHidden(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def export(encoder: TextEncoder, backend: str, directory: Path) -> Path:
    """Export ``encoder``'s model to ``directory/model.onnx`` (int8: quantized), atomically."""
    settings = backend_settings(backend)
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        sample = encoder.tokenize(["an example passage for tracing", "two"])
        batch, length = torch.export.Dim("batch"), torch.export.Dim("length")
        fp32 = staging / ("fp32.onnx" if backend == "onnx-int8" else MODEL_FILE)
        model = _LastHidden(encoder.model).to("cpu").eval()
        with _quiet():
            torch.onnx.export(model, (sample["input_ids"].cpu(), sample["attention_mask"].cpu()), str(fp32),
                              input_names=["input_ids", "attention_mask"], output_names=["last_hidden_state"],
                              dynamic_shapes={"input_ids": {0: batch, 1: length}, "attention_mask": {0: batch, 1: length}},
                              dynamo=True, external_data=False, verbose=False)
        if backend == "onnx-int8":
            from onnxruntime.quantization import QuantType, quantize_dynamic

            with _quiet():
                quantize_dynamic(str(fp32), str(staging / MODEL_FILE), weight_type=QuantType.QInt8, per_channel=True,
                                 reduce_range=False, op_types_to_quantize=["MatMul"],
                                 extra_options={"MatMulConstBOnly": True})
            fp32.unlink()
        (staging / "export.json").write_text(json.dumps({"source": encoder.name, "weights": encoder.fingerprint,
                                                         **settings}, indent=2) + "\n")
        if directory.exists():  # another process finished the same export first
            shutil.rmtree(staging)
        else:
            staging.rename(directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return directory / MODEL_FILE


class OnnxEncoder(BatchEncoder):
    """:class:`TextEncoder`'s encoding (same tokenizer, pooling, normalisation) on ONNX Runtime, CPU."""

    def __init__(self, model: str | Path | None = None, pooling: str = "mean", normalize: bool = False,
                 max_length: int | None = None, batch_size: int = 32, backend: str = "onnx",
                 export_dir: str | Path | None = None, threads: int | None = None) -> None:
        settings = backend_settings(backend)
        ort = _runtime()
        source = TextEncoder(model, pooling=pooling, normalize=normalize, max_length=max_length, device="cpu",
                             batch_size=batch_size, precision="fp32")
        self.name, self.tokenizer, self.backend, self.precision = source.name, source.tokenizer, backend, "fp32"
        self.pooling, self.normalize, self.max_length, self.batch_size = pooling, normalize, source.max_length, batch_size
        self._dim = source.dim
        key = {"weights": source.fingerprint, **settings}
        export_key = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
        self._fingerprint = hashlib.sha256(json.dumps({**key, **RUN_SETTINGS.get(backend, {})},
                                                      sort_keys=True).encode()).hexdigest()
        directory = Path(export_dir or default_export_dir()) / f"{backend}-{export_key[:16]}"
        path = directory / MODEL_FILE
        if not path.is_file():
            log.info("exporting %s to ONNX (%s) at %s", self.name, backend, directory)
            path = export(source, backend, directory)
        del source  # the torch weights are not needed once the graph exists
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.path = path

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    def encode_batch(self, texts: list[str]) -> np.ndarray:
        if self.backend in RUN_SETTINGS:  # one text per run: its vector depends on its text alone
            return np.concatenate([self._run([text]) for text in texts]) if texts else self._run(texts)
        return self._run(texts)

    def _run(self, texts: list[str]) -> np.ndarray:
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="np")
        ids, mask = batch["input_ids"].astype(np.int64), batch["attention_mask"].astype(np.int64)
        hidden = self.session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
        return pool(torch.from_numpy(hidden), torch.from_numpy(mask), self.pooling, self.normalize).numpy()


def load_encoder(model: str | Path | None = None, *, backend: str = "torch", pooling: str = "mean",
                 normalize: bool = False, max_length: int | None = None, batch_size: int = 32,
                 device: str | torch.device | None = None, precision: str = "auto",
                 export_dir: str | Path | None = None) -> BatchEncoder:
    """The encoder for ``backend``: :class:`TextEncoder` (torch, any device), :class:`OnnxEncoder` (CPU), or
    :class:`HashEncoder` (no model: vectors from content hashes, for scale runs)."""
    if backend == "hash":
        return HashEncoder(max_length=max_length, batch_size=batch_size)
    if backend == "torch":
        return TextEncoder(model, pooling=pooling, normalize=normalize, max_length=max_length, device=device,
                           batch_size=batch_size, precision=precision)
    if device is not None and torch.device(device).type != "cpu":
        raise ValueError(f"the {backend} backend runs on CPU (ONNX Runtime's CPU provider); got device {device}")
    if precision not in ("auto", "fp32"):
        raise ValueError(f"the {backend} backend sets its own arithmetic; precision must be auto or fp32, got {precision}")
    return OnnxEncoder(model, pooling=pooling, normalize=normalize, max_length=max_length, batch_size=batch_size,
                       backend=backend, export_dir=export_dir)


def encoder_from_info(info: dict, device: str | torch.device | None = None,
                      export_dir: str | Path | None = None) -> BatchEncoder:
    """The encoder that wrote an embedding table (its stored metadata), to encode more texts the same way."""
    backend = encoder_field(info, "backend")
    return load_encoder(info["model"], backend=backend, pooling=info["pooling"], normalize=info["normalize"],
                        max_length=info["max_length"], device=device if backend == "torch" else "cpu",
                        export_dir=export_dir)
