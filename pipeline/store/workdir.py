"""The workdir layout, the contract users and scripts rely on (see DESIGN.md)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

# Split and run names become file names under the workdir: a safe set, so none can point outside it.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def safe_name(value: str, what: str) -> str:
    """``value`` if it is a plain file-name part (letters, digits, '.', '_', '-'; no '..'), else ValueError."""
    if not NAME.fullmatch(value) or ".." in value:
        raise ValueError(f"{what} {value!r} may only use letters, digits, '.', '_' and '-' "
                         "(it names files under the workdir)")
    return value


# Runs the pipeline writes itself: the candidates' own run and the first stages it compares against
# (retrieve), and each rerank run's depth runs (<run>-top<N>). A user's run name may not take them.
FIRST_STAGE_RUN = "first_stage"
COMPARISON_RUNS = ("dense", "lexical", "hybrid-rrf", "hybrid-convex")
DEPTH_RUN = re.compile(r".+-top[0-9]+")


def depth_run(run: str, depth: int) -> str:
    """The name of ``run``'s rerank of each query's top-``depth``."""
    return f"{run}-top{depth}"


def user_run_name(value: str, what: str = "run name") -> str:
    """``value`` if it is a safe name that no pipeline writer owns, else ValueError naming the clash."""
    safe_name(value, what)
    if value in (FIRST_STAGE_RUN, *COMPARISON_RUNS):
        raise ValueError(f"{what} {value!r} is reserved: the retrieve step writes W/runs/<split>.{value}.trec "
                         f"(reserved: {', '.join((FIRST_STAGE_RUN, *COMPARISON_RUNS))}, and <run>-top<N>)")
    if DEPTH_RUN.fullmatch(value):
        raise ValueError(f"{what} {value!r} is reserved: <run>-top<N> names the rerank of each query's top-N "
                         "(the depth runs); choose a name that does not end in -top<N>")
    return value


@dataclass(frozen=True)
class Workdir:
    """Paths of every artefact under ``root``; Lance tables may live under ``lance_root``
    (an object-store URI) while the index, runs and reports stay on local disk."""

    root: Path
    lance_root: str | None = None

    def _lance(self, name: str) -> str:
        base = self.lance_root.rstrip("/") if self.lance_root else str(self.root)
        return f"{base}/{name}"

    @property
    def passages(self) -> str:
        return self._lance("passages.lance")

    @property
    def queries(self) -> str:
        return self._lance("queries.lance")

    @property
    def texts(self) -> str:
        return self._lance("texts.lance")

    @property
    def index(self) -> Path:
        return self.root / "index"

    @property
    def corpus_state(self) -> Path:
        """What the passage cache was built from: the corpus file and its size and time (see ``corpus_state``)."""
        return self.root / "corpus_state.json"

    @property
    def lexical(self) -> Path:
        return self.root / "lexical"

    @property
    def all_candidates(self) -> str:
        """The directory holding every split's candidates table."""
        return self._lance("candidates")

    def candidates(self, split: str) -> str:
        return f"{self.all_candidates}/{safe_name(split, 'split')}.lance"

    def rankings(self, split: str) -> str:
        return self._lance(f"rankings/{safe_name(split, 'split')}.lance")

    def shards(self, split: str, run: str) -> str:
        """Finished rerank shards of a run in progress, beside the rankings (workers on any node write there)."""
        return self._lance(f"rankings/.{safe_name(split, 'split')}.{safe_name(run, 'run name')}.shards")

    def training(self, split: str) -> str:
        return self._lance(f"training/{safe_name(split, 'split')}.lance")

    def run(self, split: str, name: str) -> Path:
        return self.root / "runs" / f"{safe_name(split, 'split')}.{safe_name(name, 'run name')}.trec"

    def runs(self, split: str) -> list[Path]:
        return sorted((self.root / "runs").glob(f"{safe_name(split, 'split')}.*.trec"))

    @property
    def records(self) -> Path:
        """One JSON line per job that ran here (see ``listcon.jobs.run_records``)."""
        return self.root / "runs.jsonl"

    def tables(self) -> list[str]:
        """URIs of every Lance table the pipeline keeps here (caches, candidates, rankings, training lists)."""
        from listcon.pipeline.store.lance_tables import list_tables

        found = [self.passages, self.queries, self.texts]
        for folder in ("candidates", "rankings", "training"):
            found += list_tables(self._lance(folder))
        return found

    def reports(self, split: str) -> Path:
        return self.root / "reports" / safe_name(split, "split")
