"""How the rerank step runs (part of the config tree's ``[rerank]`` section)."""

from __future__ import annotations

from dataclasses import dataclass

from listcon.model.precision import HEAD_PRECISIONS
from listcon.schemas import check_choices, choice, option


@dataclass(frozen=True)
class RerankSettings:
    """Batching, precision and input policy of the rerank step (Algorithm 1's schedule is separate)."""

    depth: int | None = option(None, "rerank each query's top-N candidates; the rest follow in first-stage order")
    memory_budget_mb: int | None = option(None, "activation memory of one batch of lists (default: 1024 on CPU, "
                                                "half the free memory on a GPU)")
    skip_missing: bool = option(False, "skip candidates missing from the passage cache (counted) instead of failing")
    device: str | None = option(None, "torch device (default: cuda when available, else cpu)")
    precision: str = choice("auto", HEAD_PRECISIONS, "auto: bf16 autocast on CUDA, fp32 on CPU; int8: quantized head on CPU")
    outside_domain: str = choice("anchor", ("anchor", "head"),
                                 "on a corpus where training did not show the learned part helps: rank by the "
                                 "head's anchor fusion, or apply the whole head anyway")

    def __post_init__(self) -> None:
        check_choices(self)
        if self.depth is not None and self.depth < 1:
            raise ValueError(f"depth must be at least 1 (or unset for all candidates), got {self.depth}")
        if self.memory_budget_mb is not None and self.memory_budget_mb < 1:
            raise ValueError(f"memory_budget_mb must be at least 1, got {self.memory_budget_mb}")
