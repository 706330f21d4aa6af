"""One precision setting for every forward pass (encoder, head, training).

``auto`` means bf16 autocast on CUDA and fp32 on CPU: bf16 on CPUs without native support
is pathologically slow, so half precision is refused there instead of silently crawling.
``int8`` is for the reranking head on CPU only.
"""

from __future__ import annotations

import contextlib

import torch

from listcon.model.choices import HEAD_PRECISIONS, PRECISIONS, resolve_precision  # noqa: F401  (re-exported)

# The head alone may also run in int8 on CPU (listcon.model.int8_head), never the encoder or training.
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def autocast(precision: str, device: torch.device | str) -> contextlib.AbstractContextManager:
    """Autocast context for a resolved ``precision`` on ``device`` (a no-op for fp32)."""
    device = torch.device(device)
    dtype = DTYPES.get(resolve_precision(precision, device, HEAD_PRECISIONS))
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
