"""Pseudo-queries written as a labelled collection, so that the pipeline's own jobs can train on them.

A BEIR directory: ``corpus.jsonl`` is the corpus with each source passage replaced by its ``rest`` (the
passage without what was cut from it, the text its pseudo-query must find it by), ``queries.jsonl`` holds
the pseudo-queries and ``qrels/pseudo.tsv`` judges each one's source passage relevant. Every other passage
keeps its title and text, so its encoded text, and hence its cached vector, is the target corpus's own.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from listcon.pipeline.adaptation.pseudo_queries import PseudoQuery
from listcon.pipeline.store.atomic import swap_dir

SPLIT = "pseudo"
DIGEST_FILE = "pseudo.sha256"


def pseudo_collection(ids: list[str], titles: list[str | None], texts: list[str | None],
                      pseudo: list[PseudoQuery]) -> tuple[dict[str, str], str]:
    """({file name: content}, their SHA-256): the collection the pseudo-queries make of the corpus."""
    rest = {q.passage_id: q.rest for q in pseudo}
    corpus = [{"_id": p, "title": "", "text": rest[p]} if p in rest else {"_id": p, "title": t or "", "text": x or ""}
              for p, t, x in zip(ids, titles, texts)]
    queries = [{"_id": f"pseudo-{i}", "text": q.text} for i, q in enumerate(pseudo)]
    qrels = "query-id\tcorpus-id\tscore\n" + "".join(f"pseudo-{i}\t{q.passage_id}\t1\n" for i, q in enumerate(pseudo))
    files = {"corpus.jsonl": _jsonl(corpus), "queries.jsonl": _jsonl(queries), f"qrels/{SPLIT}.tsv": qrels}
    return files, hashlib.sha256("".join(f"{name}\n{body}" for name, body in sorted(files.items())).encode()).hexdigest()


def written_digest(out: str | Path) -> str | None:
    """The digest of the collection ``out`` holds (None: none written)."""
    path = Path(out) / DIGEST_FILE
    return path.read_text().strip() if path.is_file() else None


def write_pseudo_collection(out: str | Path, files: dict[str, str], digest: str) -> bool:
    """Write ``pseudo_collection``'s files to ``out`` (staged beside it, then swapped in); False when ``out``
    already holds exactly this collection (nothing written)."""
    out = Path(out)
    if written_digest(out) == digest:
        return False
    staged = out.with_name(out.name + ".staged")
    shutil.rmtree(staged, ignore_errors=True)
    (staged / "qrels").mkdir(parents=True)
    for name, body in files.items():
        (staged / name).write_text(body)
    (staged / DIGEST_FILE).write_text(digest + "\n")
    swap_dir(staged, out)
    return True


def _jsonl(records: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
