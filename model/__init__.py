"""listcon.model: pure torch, no I/O beyond checkpoints. The listwise head, losses,
iterative inference, the one scoring path and the text encoder."""

from listcon.model.encoder import BACKENDS, BatchEncoder, EncoderInfo, TextEncoder, default_model_path, mean_pool
from listcon.model.end_to_end import EndToEnd
from listcon.model.iterative import PruneSchedule, iterative_rerank
from listcon.model.list_scorer import ListScorer, pad_lists, queries_per_batch
from listcon.model.onnx_encoder import OnnxEncoder, encoder_from_info, load_encoder
from listcon.model.losses import LOSSES, bce_loss, circle_loss, cosent_loss, triplet_loss
from listcon.model.precision import PRECISIONS, autocast, resolve_precision
from listcon.model.ranker import CheckpointError, ListConRanker, ListConRankerConfig

__all__ = [
    "BACKENDS",
    "BatchEncoder",
    "OnnxEncoder",
    "encoder_from_info",
    "load_encoder",
    "LOSSES",
    "PRECISIONS",
    "CheckpointError",
    "EncoderInfo",
    "EndToEnd",
    "ListConRanker",
    "ListConRankerConfig",
    "ListScorer",
    "PruneSchedule",
    "TextEncoder",
    "autocast",
    "bce_loss",
    "circle_loss",
    "cosent_loss",
    "default_model_path",
    "iterative_rerank",
    "mean_pool",
    "pad_lists",
    "queries_per_batch",
    "resolve_precision",
    "triplet_loss",
]
