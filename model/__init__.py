"""listcon.model: pure torch, no I/O beyond checkpoints. The listwise head, losses,
iterative inference and the text encoder."""

from listcon.model.encoder import EncoderInfo, TextEncoder, default_model_path, mean_pool
from listcon.model.end_to_end import EndToEnd
from listcon.model.iterative import iterative_rerank
from listcon.model.losses import LOSSES, bce_loss, circle_loss, cosent_loss, triplet_loss
from listcon.model.ranker import CheckpointError, ListConRanker, ListConRankerConfig

__all__ = [
    "LOSSES",
    "CheckpointError",
    "EncoderInfo",
    "EndToEnd",
    "ListConRanker",
    "ListConRankerConfig",
    "TextEncoder",
    "bce_loss",
    "circle_loss",
    "cosent_loss",
    "default_model_path",
    "iterative_rerank",
    "mean_pool",
    "triplet_loss",
]
