"""The workdir layout, the contract users and scripts rely on (see DESIGN.md)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


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
    def encoders(self) -> Path:
        """Exported encoder graphs (the ONNX backends), keyed by what produced them."""
        return self.root / "encoders"

    @property
    def lexical(self) -> Path:
        return self.root / "lexical"

    def candidates(self, split: str) -> str:
        return self._lance(f"candidates/{split}.lance")

    def rankings(self, split: str) -> str:
        return self._lance(f"rankings/{split}.lance")

    def training(self, split: str) -> str:
        return self._lance(f"training/{split}.lance")

    def run(self, split: str, name: str) -> Path:
        return self.root / "runs" / f"{split}.{name}.trec"

    def runs(self, split: str) -> list[Path]:
        return sorted((self.root / "runs").glob(f"{split}.*.trec"))

    def reports(self, split: str) -> Path:
        return self.root / "reports" / split
