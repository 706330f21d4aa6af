"""How `listcon adapt` chooses a corpus's fusion (the config tree's ``[adapt]`` section; no torch)."""

from __future__ import annotations

from dataclasses import dataclass

from listcon.schemas import check_choices, check_ranges, choice, option

RULES = ("significant", "one-se")


@dataclass(frozen=True)
class AdaptSettings:
    """Pseudo-queries cut from the corpus's own passages, and the rule that picks a fusion from them."""

    enabled: bool = option(True, "`listcon run` adapts the corpus's fusion before it reranks; rerank uses it "
                           "where the head's learned part is off (docs/transfer.md measures it)", flag=False)
    pseudo_queries: int = option(500, "pseudo-queries cut from the corpus's passages", at_least=2)
    seed: int = option(0, "which passages, sentences and spans are cut (the same seed, the same pseudo-queries)")
    rule: str = choice("one-se", RULES, "one-se: of the fusions within one standard error of the best on the "
                       "pseudo-queries, the nearest the anchor; significant: the best where it beats the anchor "
                       "with paired p < 0.05")
    init: str | None = option(None, "also fine-tune this head on the pseudo-queries, into W/adaptation/head (its "
                              "domain is the pseudo collection's, not the corpus's: rerank applies its learned part "
                              "here only with outside_domain = \"head\")")
    epochs: int = option(3, "most epochs of that fine-tuning (its own held-out pseudo-queries pick the epoch, the "
                         "head as given included)", at_least=1)
    lr: float = option(3e-4, "learning rate of that fine-tuning", above=0)

    def __post_init__(self) -> None:
        check_ranges(self)
        check_choices(self)
