"""Which BM25 engine for listcon's lexical index? bm25s vs Lance's native full-text index.

Both index the same passage texts (title + " " + text) of scifact with English stemming and
stop words; both retrieve the top-1,000 of the 300 test queries (nDCG@10 and R@100 against
the qrels) and of 10,000 queries (the test queries repeated, for throughput). Build time and
queries/s are measured in this process, one engine after the other.

    python -m bench.lexical [--data ../shared/data/scifact]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import lance
import pyarrow as pa

from bench.common import print_table, run_bench, write_results
from listcon.pipeline.data.readers import judged_queries, read_corpus
from listcon.pipeline.evaluation.evaluate import aggregate, per_query
from listcon.pipeline.retrieval.lexical import LexicalIndex, LexicalSpec

ROOT = Path(__file__).resolve().parents[1]
K = 1000


def bm25s_engine(ids, texts):
    started = time.perf_counter()
    index = LexicalIndex.build(ids, texts, LexicalSpec())
    built = time.perf_counter() - started

    def search(queries: list[str]) -> list[list[tuple[str, float]]]:
        positions, scores = index.search(queries, K)
        return [[(ids[p], float(s)) for p, s in zip(row, srow) if p >= 0] for row, srow in zip(positions, scores)]

    return built, search


def lance_engine(ids, texts, directory: str):
    started = time.perf_counter()
    dataset = lance.write_dataset(pa.table({"id": ids, "text": texts}), f"{directory}/texts.lance")
    dataset.create_scalar_index("text", "INVERTED", with_position=False, base_tokenizer="simple", language="English",
                                stem=True, remove_stop_words=True, lower_case=True)
    dataset = lance.dataset(f"{directory}/texts.lance")
    built = time.perf_counter() - started

    def search(queries: list[str]) -> list[list[tuple[str, float]]]:
        out = []
        for query in queries:  # one query per call: Lance's full-text search takes a single query
            table = dataset.to_table(full_text_query=query, columns=["id", "_score"], limit=K)
            out.append(list(zip(table["id"].to_pylist(), table["_score"].to_pylist())))
        return out

    return built, search


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "scifact"))
    parser.add_argument("--many", type=int, default=10_000)
    args = parser.parse_args()
    corpus = read_corpus(args.data)
    ids, texts = corpus.table["id"].to_pylist(), corpus.texts()
    queries, qrels = judged_queries(args.data, "test")
    qids, qtexts = queries["id"].to_pylist(), queries["text"].to_pylist()
    many = (qtexts * (args.many // len(qtexts) + 1))[: args.many]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, (built, search) in (("bm25s", bm25s_engine(ids, texts)), ("lance FTS", lance_engine(ids, texts, tmp))):
            started = time.perf_counter()
            results = search(qtexts)
            small = time.perf_counter() - started
            run = {q: dict(hits) for q, hits in zip(qids, results)}
            metrics = aggregate(per_query(qrels, run, ["nDCG@10", "R@100"]))
            started = time.perf_counter()
            search(many)
            large = time.perf_counter() - started
            rows.append({"engine": name, "nDCG@10": metrics["nDCG@10"], "R@100": metrics["R@100"], "build_s": built,
                         "qps_300": len(qtexts) / small, f"qps_{args.many}": args.many / large})
    print_table(rows, list(rows[0]))
    print(f"wrote {write_results('lexical', {'rows': rows, 'k': K, 'corpus': args.data, 'passages': len(ids)})}")


if __name__ == "__main__":
    run_bench(main)
