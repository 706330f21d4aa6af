"""One precision setting for every forward pass (encoder, head, training).

``auto`` means bf16 autocast on CUDA and fp32 on CPU: bf16 on CPUs without native support
is pathologically slow, so half precision is refused there instead of silently crawling.
"""

from __future__ import annotations

import contextlib

import torch

PRECISIONS = ("auto", "fp32", "fp16", "bf16")
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """The concrete precision (fp32 | fp16 | bf16) ``precision`` means on ``device``."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    device = torch.device(device)
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    if precision != "fp32" and device.type != "cuda":
        raise ValueError(f"precision {precision} needs a CUDA device, but this runs on {device.type}; "
                         "use fp32 (or auto) on CPU, where half precision is slower than fp32")
    return precision


def autocast(precision: str, device: torch.device | str) -> contextlib.AbstractContextManager:
    """Autocast context for a resolved ``precision`` on ``device`` (a no-op for fp32)."""
    device = torch.device(device)
    dtype = DTYPES.get(resolve_precision(precision, device))
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
