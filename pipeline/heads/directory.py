"""A head directory's files, and whether its training finished (names only: no torch, so `listcon status`
asks too).

``D/checkpoints/provenance.json`` is written when a training starts and ``D/train_result.json``
when it ends: a directory with the first and not the second holds a training that did not finish.
``D/encoder.json`` says which encoder the head's features come from; ``D/domain.json`` (``domain``)
where its learned part was shown to help.
"""

from __future__ import annotations

from pathlib import Path

CHECKPOINTS = "checkpoints"
RESULT_FILE = "train_result.json"
MARKER_FILE = "provenance.json"
ENCODER_FILE = "encoder.json"
ENCODER_DIR = "encoder"  # stage 2's tuned encoder beside the head; encoder.json's "model" then names it
SETTINGS_FILE = "train_settings.json"


def check_finished(model_dir: str | Path) -> None:
    """Refuse a head directory whose training started and did not finish (its head is an epoch's, unvalidated)."""
    model_dir = Path(model_dir)
    if (model_dir / CHECKPOINTS / MARKER_FILE).is_file() and not (model_dir / RESULT_FILE).is_file():
        raise ValueError(f"the training in {model_dir} did not finish (no {RESULT_FILE}): its head is a mid-training "
                         f"epoch's; rerun `listcon train` to resume it, or remove {model_dir / CHECKPOINTS}")
