"""listcon.model: pure torch, no I/O beyond checkpoints. The listwise head, losses,
iterative inference, the one scoring path and the text encoder."""

from listcon.schemas.lazy import lazy_attributes

# name -> the module that defines it: imported on first use, so ``listcon.model.PruneSchedule``
# (a config section) does not import torch, and a job pays only for the parts it uses
_WHERE = {
    "BACKENDS": "listcon.model.choices",
    "BatchEncoder": "listcon.model.encoder",
    "CheckpointError": "listcon.model.head_config",
    "EncoderInfo": "listcon.model.encoder",
    "EndToEnd": "listcon.model.end_to_end",
    "LOSSES": "listcon.model.losses",
    "ListConRanker": "listcon.model.ranker",
    "ListConRankerConfig": "listcon.model.head_config",
    "ListScorer": "listcon.model.list_scorer",
    "OnnxEncoder": "listcon.model.onnx_encoder",
    "PRECISIONS": "listcon.model.choices",
    "PruneSchedule": "listcon.model.schedule",
    "TextEncoder": "listcon.model.encoder",
    "autocast": "listcon.model.precision",
    "bce_loss": "listcon.model.losses",
    "circle_loss": "listcon.model.losses",
    "cosent_loss": "listcon.model.losses",
    "default_model_path": "listcon.model.encoder",
    "encoder_from_info": "listcon.model.onnx_encoder",
    "iterative_rerank": "listcon.model.iterative",
    "load_encoder": "listcon.model.onnx_encoder",
    "mean_pool": "listcon.model.encoder",
    "pad_lists": "listcon.model.list_scorer",
    "queries_per_batch": "listcon.model.list_scorer",
    "resolve_precision": "listcon.model.choices",
    "triplet_loss": "listcon.model.losses",
}

__all__ = sorted(_WHERE)

__getattr__, __dir__ = lazy_attributes(__name__, _WHERE)
