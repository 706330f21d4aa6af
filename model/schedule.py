"""Algorithm 1's pruning schedule (a config section of its own, without torch)."""

from __future__ import annotations

from dataclasses import dataclass

from listcon.schemas import check_ranges, option


@dataclass(frozen=True)
class PruneSchedule:
    """Algorithm 1's parameters, defined once for reranking and training's validation."""

    theta: int = option(20, "stop pruning once this many candidates remain; they are scored together", at_least=1)
    beta: float = option(0.2, "fraction of the remaining candidates fixed at the bottom each round", above=0, at_most=1)
    min_drop: int = option(10, "fewest candidates fixed per round (the released code's 10)", at_least=1)

    def __post_init__(self) -> None:
        check_ranges(self)
