"""Which encoder a head's features come from, and the check that a cache holds those features.

A head ranks by the vectors it was trained on: the same weights (fingerprint), pooling, normalisation and
token limit. A cache embedded otherwise, at the same width, would be ranked silently by features the head
never saw; a stage-2 head's features come from the encoder it tuned, saved beside it.
"""

from __future__ import annotations

import json
from pathlib import Path

from listcon.pipeline.heads.directory import ENCODER_DIR, ENCODER_FILE
from listcon.pipeline.store.embedding_cache import CacheMismatchError, EmbeddingCache
from listcon.schemas import encoder_field

FEATURE_FIELDS = ("fingerprint", "pooling", "normalize", "max_length")


def head_encoder(model_dir: str | Path) -> dict | None:
    """The head's encoder record (``encoder.json``; None for a head saved without one). A stage-2 head's
    ``model`` is the encoder saved beside it and its fingerprint that encoder's, read from its weights."""
    path = Path(model_dir) / ENCODER_FILE
    if not path.is_file():
        return None
    info = json.loads(path.read_text())
    if info.get("model") == ENCODER_DIR:
        from listcon.model import TextEncoder

        tuned = Path(model_dir) / ENCODER_DIR
        encoder = TextEncoder(tuned, pooling=info.get("pooling", "mean"), normalize=info.get("normalize", False),
                              max_length=info.get("max_length"), device="cpu")
        info = {**info, "model": str(tuned), "fingerprint": encoder.fingerprint}
    return info


def check_head_features(model_dir: str | Path, cache: EmbeddingCache, recorded: dict | None = None) -> None:
    """Refuse a cache embedded by another encoder (or pooling, normalisation, token limit) than the head's
    features came from; a head without ``encoder.json`` is not checked. ``recorded``: ``head_encoder``'s, if read."""
    recorded = recorded if recorded is not None else head_encoder(model_dir)
    if recorded is None or not cache.exists:
        return
    have = cache.metadata
    shown = lambda k, v: v[:12] if k == "fingerprint" and isinstance(v, str) else v  # noqa: E731
    diffs = [f"{k} {shown(k, recorded[k])!r} vs {shown(k, encoder_field(have, k))!r}"
             for k in FEATURE_FIELDS if k in recorded and recorded[k] != encoder_field(have, k)]
    if diffs:
        raise CacheMismatchError(
            f"the head in {model_dir} was trained on features of encoder {recorded.get('model')}, but {cache.uri} was "
            f"embedded by {have.get('model')} (head vs cache: {'; '.join(diffs)}); rerank a workdir embedded with the "
            f"head's encoder (listcon embed --model {recorded.get('model')} --workdir <another>)")
