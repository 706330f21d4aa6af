"""The names each model option accepts (and what ``auto`` precision means), without torch: configs (and `listcon
status`) load without importing the model code they configure."""

PRECISIONS = ("auto", "fp32", "fp16", "bf16")
HEAD_PRECISIONS = (*PRECISIONS, "int8")
# How the int8 head is called, recorded with int8 rankings: a change redoes them. (Until 2026-12 it scored a padded
# batch of lists per call, and its one activation scale per call made a list's scores depend on its batch.)
INT8_SCORING = "one list's live candidates per call"
POOLINGS = ("mean", "cls")
BACKENDS = ("torch", "onnx", "onnx-int8", "hash")
ATTENTIONS = ("list", "bidirectional", "passage")
FEATURES = ("fused", "list", "original")
LOSS_NAMES = ("circle", "bce", "triplet", "cosent")


def resolve_precision(precision: str, device, allowed: tuple[str, ...] = PRECISIONS) -> str:
    """The concrete precision (fp32 | fp16 | bf16, or int8 where ``allowed``) ``precision`` means on ``device``."""
    if precision not in allowed:
        raise ValueError(f"precision must be one of {allowed}, got {precision!r}")
    kind = getattr(device, "type", None) or str(device).split(":")[0]  # a torch.device or its name
    if precision == "int8":
        if kind != "cpu":
            raise ValueError(f"precision int8 is the CPU head's arithmetic, but this runs on {kind}; "
                             "use auto (bf16) on CUDA")
        return precision
    if precision == "auto":
        return "bf16" if kind == "cuda" else "fp32"
    if precision != "fp32" and kind != "cuda":
        raise ValueError(f"precision {precision} needs a CUDA device, but this runs on {kind}; "
                         "use fp32 (or auto) on CPU, where half precision is slower than fp32")
    return precision
