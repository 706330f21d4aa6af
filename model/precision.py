"""One precision setting for every forward pass (encoder, head, training).

``auto`` means bf16 autocast on CUDA and fp32 on CPU: bf16 on CPUs without native support
is pathologically slow, so half precision is refused there instead of silently crawling.
``int8`` is for the reranking head on CPU only.
"""

from __future__ import annotations

import contextlib

import torch

PRECISIONS = ("auto", "fp32", "fp16", "bf16")
# The head alone may also run in int8 on CPU (listcon.model.int8_head), never the encoder or training.
HEAD_PRECISIONS = (*PRECISIONS, "int8")
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_precision(precision: str, device: torch.device | str, allowed: tuple[str, ...] = PRECISIONS) -> str:
    """The concrete precision (fp32 | fp16 | bf16, or int8 where ``allowed``) ``precision`` means on ``device``."""
    if precision not in allowed:
        raise ValueError(f"precision must be one of {allowed}, got {precision!r}")
    device = torch.device(device)
    if precision == "int8":
        if device.type != "cpu":
            raise ValueError(f"precision int8 is the CPU head's arithmetic, but this runs on {device.type}; "
                             "use auto (bf16) on CUDA")
        return precision
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    if precision != "fp32" and device.type != "cuda":
        raise ValueError(f"precision {precision} needs a CUDA device, but this runs on {device.type}; "
                         "use fp32 (or auto) on CPU, where half precision is slower than fp32")
    return precision


def autocast(precision: str, device: torch.device | str) -> contextlib.AbstractContextManager:
    """Autocast context for a resolved ``precision`` on ``device`` (a no-op for fp32)."""
    device = torch.device(device)
    dtype = DTYPES.get(resolve_precision(precision, device, HEAD_PRECISIONS))
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
