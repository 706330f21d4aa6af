"""Training checkpoints on disk: the best epoch in ``save_pretrained`` form, and per-epoch
resume points (weights, optimizer, counters) written atomically.

Layout of a training output directory ``D``:
``D/config.json + D/model.safetensors`` (best head), ``D/encoder/`` (stage 2's encoder),
``D/encoder.json`` (which encoder the head's features come from), ``D/train_settings.json``,
``D/checkpoints/epoch-NNNN/`` (the latest epoch: module.safetensors, optimizer.pt, state.json),
``D/checkpoints/provenance.json`` (what is being trained) and ``D/train_result.json``, written last:
a directory with the first and not the second holds a training that did not finish (killed, or
failed), whose best-so-far head nothing may rerank with.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from listcon.model import ListConRanker, TextEncoder
from listcon.pipeline.store.atomic import write_text
from listcon.pipeline.heads.directory import CHECKPOINTS, ENCODER_DIR, ENCODER_FILE, SETTINGS_FILE


def discard_failed(out_dir: Path) -> None:
    """After a training failed (not interrupted): remove what it wrote, the best-so-far head and the epoch
    checkpoints, so that no head is left from a run that failed (a rerun starts over)."""
    from listcon.model.ranker import CONFIG_FILE, WEIGHTS_FILE

    for name in (CONFIG_FILE, WEIGHTS_FILE, ENCODER_FILE, SETTINGS_FILE):
        (out_dir / name).unlink(missing_ok=True)
    for name in (ENCODER_DIR, f"{ENCODER_DIR}.tmp", CHECKPOINTS):
        shutil.rmtree(out_dir / name, ignore_errors=True)


def save_best(out_dir: Path, head: ListConRanker, encoder: TextEncoder | None, settings: dict, encoder_info: dict) -> None:
    """The best epoch so far: the head, stage 2's encoder, the settings and the encoder it expects (stage 2:
    the encoder saved beside it, with the fingerprint of its weights as they are now)."""
    head.save_pretrained(out_dir)
    if encoder is not None:
        staged = out_dir / f"{ENCODER_DIR}.tmp"
        shutil.rmtree(staged, ignore_errors=True)
        encoder_info = {**encoder_info, "fingerprint": encoder.save(staged)}
        if (out_dir / ENCODER_DIR).exists():
            shutil.rmtree(out_dir / ENCODER_DIR)
        staged.rename(out_dir / ENCODER_DIR)
    write_text(out_dir / ENCODER_FILE, json.dumps(encoder_info, indent=2) + "\n")
    write_text(out_dir / SETTINGS_FILE, json.dumps(settings, indent=2) + "\n")


def save_epoch(out_dir: Path, module: nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
    """``checkpoints/epoch-NNNN`` written to a temp dir and renamed; older ones removed."""
    root = out_dir / CHECKPOINTS
    target = root / f"epoch-{state['epoch']:04d}"
    staged = root / f".tmp-{state['epoch']:04d}"
    shutil.rmtree(staged, ignore_errors=True)
    staged.mkdir(parents=True)
    save_file({k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}, str(staged / "module.safetensors"))
    torch.save(optimizer.state_dict(), staged / "optimizer.pt")
    (staged / "state.json").write_text(json.dumps(state, indent=2) + "\n")
    if target.exists():  # a rerun of the same epoch after a crash between rename and cleanup
        shutil.rmtree(target)
    os.replace(staged, target)
    for old in root.glob("epoch-*"):
        if old != target:
            shutil.rmtree(old, ignore_errors=True)


def latest_state(out_dir: Path) -> dict | None:
    """The counters of the latest epoch checkpoint, or None."""
    latest = sorted((Path(out_dir) / CHECKPOINTS).glob("epoch-*"))
    return json.loads((latest[-1] / "state.json").read_text()) if latest else None


def resume(out_dir: Path, module: nn.Module, optimizer: torch.optim.Optimizer) -> dict | None:
    """Load the latest epoch checkpoint into ``module`` and ``optimizer``; its counters, or None."""
    latest = sorted((out_dir / CHECKPOINTS).glob("epoch-*"))
    if not latest:
        return None
    module.load_state_dict(load_file(str(latest[-1] / "module.safetensors")))
    # map to CPU: a checkpoint written on a GPU loads on a CPU-only machine (and not every rank onto
    # cuda:0); the optimizer moves its state to each parameter's device as it loads
    optimizer.load_state_dict(torch.load(latest[-1] / "optimizer.pt", map_location="cpu", weights_only=True))
    return json.loads((latest[-1] / "state.json").read_text())
