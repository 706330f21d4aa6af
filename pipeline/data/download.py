"""Fetch public BEIR collections (where a network exists) into a BEIR-layout directory."""

from __future__ import annotations

import logging
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

log = logging.getLogger(__name__)

BEIR_URL = "https://public.ukp.informatik.tu-darmstadt.de/thakur/BEIR/datasets/{name}.zip"


def download_beir(name: str, parent: str | Path, url: str | None = None, timeout: float = 30.0) -> Path:
    """Download and unpack BEIR dataset ``name`` into ``parent/name`` (atomically); returns that path."""
    target = Path(parent) / name
    if (target / "corpus.jsonl").is_file():
        log.info("%s is already there", target)
        return target
    source = url or BEIR_URL.format(name=name)
    Path(parent).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=parent) as tmp:  # same filesystem: the final move is a rename
        archive = Path(tmp) / f"{name}.zip"
        try:
            with urllib.request.urlopen(source, timeout=timeout) as response, open(archive, "wb") as out:
                shutil.copyfileobj(response, out)
        except (urllib.error.URLError, TimeoutError, OSError) as err:
            raise OSError(f"could not download {source}: {err}. Without a network, copy a BEIR directory "
                          f"(corpus.jsonl, queries.jsonl, qrels/<split>.tsv) to {target} instead") from None
        with zipfile.ZipFile(archive) as zipped:
            zipped.extractall(tmp)
        unpacked = next((p for p in Path(tmp).iterdir() if (p / "corpus.jsonl").is_file()), None)
        if unpacked is None:
            raise OSError(f"{source} did not hold a BEIR directory (corpus.jsonl)")
        shutil.move(str(unpacked), str(target))
    log.info("downloaded %s to %s", name, target)
    return target
