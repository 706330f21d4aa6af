"""How the rerank step runs (part of the config tree's ``[rerank]`` section)."""

from __future__ import annotations

from dataclasses import dataclass

from listcon.model.choices import HEAD_PRECISIONS
from listcon.schemas import check_choices, check_ranges, choice, option


@dataclass(frozen=True)
class RerankSettings:
    """Batching, precision and input policy of the rerank step (Algorithm 1's schedule is separate)."""

    depth: int | None = option(None, "rerank each query's top-N candidates; the rest follow in first-stage order",
                               at_least=1)
    memory_budget_mb: int | None = option(None, "activation memory of one batch of lists (default: 1024 on CPU, "
                                                "half the free memory on a GPU)", at_least=1)
    skip_missing: bool = option(False, "skip candidates missing from the passage cache (counted) instead of failing")
    device: str | None = option(None, "torch device (default: cuda when available, else cpu)")
    precision: str = choice("auto", HEAD_PRECISIONS, "auto: bf16 autocast on CUDA, fp32 on CPU; int8: quantized head on CPU")
    outside_domain: str = choice("anchor", ("anchor", "head"),
                                 "on a corpus where training did not show the learned part helps: rank by the "
                                 "head's anchor fusion, or apply the whole head anyway")

    def __post_init__(self) -> None:
        check_ranges(self)
        check_choices(self)
