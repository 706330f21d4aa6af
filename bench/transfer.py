"""Transfer, leave-one-collection-out: does a learned stage help on a collection it never saw?

For every labelled collection in ../shared/data: its evaluation split (test, or the only split
it has) is retrieved hybrid top-k (BM25 + MiniLM, every signal kept), then ranked by

- the first stages and the fixed fusions: BM25, dense, RRF, convex;
- listcon under the shipped rule: outside the head's domain (every left-out collection is) the head
  ranks by the fusion `listcon run` adapts to the corpus (``adaptation`` below, rule one-se among the
  shipped weights); ``anchor`` is its fallback without adapting (convex + 0.5 RRF on hybrid candidates,
  RRF over every first stage on an external run's);
- learned rankers trained on every *other* collection only (neither the left-out
  collection's queries nor its passages), each a row of the table (see ``LEARNED``);
- the fusion chosen on the left-out collection's own pseudo-queries (``adaptation``: its passages
  only, never its queries or judgments) under each rule of ``adaptation.settings.RULES`` among the
  shipped weights, and under one-se with the grid's edges (one side alone) as candidates too
  (``CHOICES``); as a ceiling, the z-score fusion weight that its own judgments would pick.

Collections with natural candidate lists (``candidates/<split>.tsv``: wikiqa, trecqa, liveqa_med) are also
ranked from those lists (mode ``natural``): retrieved with ``--run-order pool`` in a copy of the collection's
workdir, the fusions and listcon then rank each question's own candidates (no learned rows there).

Each row reports mean nDCG@10, the delta against the better of RRF and convex on that
collection and the paired t-test p; the depth curve reranks the top 20 ... k. Evaluation
keeps every passage a run retrieved (no collection here has queries that are passages).

    python -m bench.transfer [--collections scifact adi ...] [--k 1000] [--pseudo-queries 500] [--prepare-only]

Preparing (embed, index, retrieve) is resumable and a no-op once done; it reuses
work/transfer/<name>. Writes bench/results/transfer.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from bench.common import print_table, run_bench, write_results
from listcon.jobs.config import ExtraSource, load_config
from listcon.jobs.run_job import prepare
from listcon.jobs.runtime import setup_logging
from listcon.jobs.adapt_job import pseudo_evidence
from listcon.pipeline.adaptation.fusion_choice import DENSE_WEIGHTS, choose_fusion
from listcon.pipeline.adaptation.settings import RULES, AdaptSettings
from listcon.pipeline.data.readers import read_qrels, read_queries
from listcon.pipeline.evaluation.evaluate import paired_test, per_query
from listcon.pipeline.retrieval.lexical import LexicalIndex
from listcon.pipeline.retrieval.signals import (ANCHOR, LIST_FEATURES, RRF_K, QuerySignals, list_features, query_idf,
                                               weigh, z_fusion)
from listcon.pipeline.heads.domain import EXTERNAL_FALLBACK
from listcon.schemas import SIGNALS
from listcon.pipeline.store.embedding_cache import EmbeddingCache
from listcon.pipeline.store.ranked_lists import read_ranked, rows_by_query

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
# each collection's evaluation split: its test split, or all its judged queries where it has no other
COLLECTIONS = {"scifact": "test", "nfcorpus": "test", "cranfield": "test", "cisi": "test", "medline": "test",
               "cacm": "test", "adi": "test", "wikiqa": "test", "trecqa": "test", "liveqa_med": "train",
               "medquad": "test"}


def collection_config(base, name: str, out: Path):
    """The demo's settings pointed at one collection's evaluation split, in its own workdir."""
    source = ExtraSource(name=name, data=str(DATA / name), workdir=str(out / name), split=COLLECTIONS[name])
    return replace(base.for_collection(source), train=replace(base.train, extra=()))


def collection_parser(doc: str) -> argparse.ArgumentParser:
    """The arguments every leave-one-collection-out bench takes: its config, the collections to leave out (in
    this order) and where their workdirs are."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=ROOT / "jobs" / "demo.toml")
    parser.add_argument("--collections", nargs="+", default=list(COLLECTIONS), choices=list(COLLECTIONS),
                        help="the collections to leave out, in this order")
    parser.add_argument("--out", type=Path, default=ROOT / "work" / "transfer")
    return parser


def main() -> None:
    parser = collection_parser(__doc__)
    parser.add_argument("--k", type=int, default=1000, help="first-stage depth")
    parser.add_argument("--prepare-only", action="store_true", help="embed, index and retrieve; evaluate nothing")
    parser.add_argument("--train-queries", type=int, default=200, help="training queries per other collection")
    parser.add_argument("--depth", type=int, default=100, help="the learned rankers rerank the anchor's top-N")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pseudo-queries", type=int, default=500, help="pseudo-queries per collection (adaptation)")
    args = parser.parse_args()
    setup_logging()
    base = load_config(args.config)
    configs = {name: collection_config(base, name, args.out) for name in args.collections}
    for name, config in configs.items():
        logging.getLogger("bench.transfer").warning("preparing %s (%s split)", name, config.split)
        prepare(config, config.split, args.k, progress=False)
    pooled = {name: pool_config(config, name, args.out, args.k) for name, config in configs.items()
              if natural_lists(name).is_file()}
    if args.prepare_only:
        return
    report = {"measure": "nDCG@10", "drop_self": False,
              "listcon_rule": "outside the head's domain (every left-out collection is): the fusion adapted to the "
                              f"corpus on its pseudo-queries (rule {SHIPPED}); where the anchor is chosen, the fallback: "
                              "hybrid candidates: the demo anchor, convex + 0.5 RRF; an external run: RRF over every "
                              "first stage",
              "lambdamart": {"rows": {n: {"features": list(s.features), "binary_labels": s.binary, "residual_scale": s.residual}
                                      for n, s in LEARNED.items()}, "residual_params": RESIDUAL,
                             "residual_rounds": RESIDUAL_ROUNDS,
                             "train_queries_per_collection": args.train_queries,
                             "depth": args.depth, "seed": args.seed, "params": LAMBDAMART, "rounds": ROUNDS,
                             "training_data": "the other collections' evaluation queries (never the left-out one)"}}
    adapted = {name: adaptation(config, args.out / name / "adapt.json", args.pseudo_queries, args.seed, args.k)
               for name, config in configs.items()}
    report["adaptation"] = {"pseudo_queries": args.pseudo_queries, "seed": args.seed, "dense_weights": list(DENSE_WEIGHTS),
                            "choices": {c: {"rule": r, "dense_weights": list(w)} for c, (r, w) in CHOICES.items()},
                            "reads": "the collection's passages and the workdir's passage cache only, never its queries "
                                     "or qrels"}
    for mode, (first_stage, anchor) in MODES.items():
        ranked_here = pooled if mode == "natural" else configs
        if not ranked_here:
            continue
        lists = {name: collection_lists(config, args.out / name / f"{mode}.npz", mode) for name, config in ranked_here.items()}
        learned_rows = LEARNED if mode in LEARNED_MODES else {}
        rows, curves = [], {}
        for held_out, config in ranked_here.items():
            runs = {run: ranked(lists[held_out], by) for run, by in BASELINES[mode].items()}
            runs["anchor"] = ranked(lists[held_out], "fallback")
            weights = {f"adapted-{c}": adapted[held_out]["rules"][c]["dense_weight"] for c in CHOICES}
            for run, weight in weights.items():
                runs[run] = fused_by(lists[held_out], weight, runs["anchor"])
            runs["listcon"] = runs[f"adapted-{SHIPPED}"]
            oracle = {w: ranked(with_z_fusion(lists[held_out], w), "z") for w in EDGES}
            for learned, spec in learned_rows.items():
                model = train_lambdamart({n: lists[n] for n in configs if n != held_out}, spec, args.train_queries,
                                         args.depth, args.seed)
                for depth in DEPTHS[mode]:
                    runs[f"{learned}-top{depth}"] = ranked(lists[held_out], "fallback", model, depth, spec)
                runs[learned] = runs[f"{learned}-top{args.depth}"]
            qrels = read_qrels(config.data, config.split)
            values = {run: per_query(qrels, r, ["nDCG@10"])["nDCG@10"] for run, r in runs.items()}
            means = {run: float(np.mean(list(v.values()))) for run, v in values.items()}
            best = max(FUSIONS[mode], key=means.get)
            by_weight = {w: float(np.mean(list(per_query(qrels, r, ["nDCG@10"])["nDCG@10"].values())))
                         for w, r in oracle.items()}
            row = {"name": held_out, "split": config.split, "queries": len(values["listcon"]),
                   **{run: means[run] for run in runs if "-top" not in run}, "best_fusion": best,
                   "delta_vs_best_fusion": means["listcon"] - means[best],
                   "p": paired_test(values["listcon"], values[best])}
            for learned in ("anchor", *weights, *learned_rows):
                row[f"{learned}_delta"] = means[learned] - means[best]
                row[f"{learned}_p"] = paired_test(values[learned], values[best])
            row.update({f"{run}_weight": weight for run, weight in weights.items()})
            oracle_weight = max(by_weight, key=by_weight.get)
            row["z_oracle"], row["z_oracle_weight"] = by_weight[oracle_weight], oracle_weight
            row["z_oracle_delta"] = by_weight[oracle_weight] - means[best]
            rows.append(row)
            curves[held_out] = {learned: {d: means[f"{learned}-top{d}"] for d in DEPTHS[mode]} for learned in learned_rows}
            print(f"[{mode}] {held_out}: listcon {means['listcon']:.4f}, {best} {means[best]:.4f}", flush=True)
        columns = [c for c in rows[0] if c not in ("split", "best_fusion") and not c.startswith("lambdamart")]
        print(f"\n{mode}: {first_stage}")
        print_table(rows, columns)
        summary = {run: {"mean_delta": float(np.mean([r[key] for r in rows])), "worst_delta": float(min(r[key] for r in rows))}
                   for run, key in (("listcon", "delta_vs_best_fusion"), ("anchor", "anchor_delta"),
                                    *((f"adapted-{c}", f"adapted-{c}_delta") for c in CHOICES),
                                    ("z_oracle", "z_oracle_delta"), *((l, f"{l}_delta") for l in learned_rows))}
        print("against the better fusion:", summary)
        for row in rows:
            row["adaptation"] = adapted[row["name"]]
        report[mode] = {"first_stage": first_stage, "fusions": list(FUSIONS[mode]), "collections": rows,
                        "summary": summary, "depth_curves": curves}
    report["collections"] = report["hybrid"]["collections"]
    print(f"wrote {write_results('transfer', report)}")


# hybrid: the pipeline's own first stage; from-run: each collection's BM25 top-100 brought in as an external
# run (as a user brings a Pyserini or Elasticsearch run), reranked with the dense and lexical signals beside it
# natural: each question's own candidate list (answer selection), retrieved from as a pool (--run-order pool)
MODES = {"hybrid": ("hybrid top-1,000 (BM25 + all-MiniLM-L6-v2, convex 0.5/0.5)", ANCHOR),
         "from-run": ("an external BM25 top-100 (--from-run), with the dense and lexical signals", EXTERNAL_FALLBACK),
         "natural": ("each question's natural candidate list (candidates/<split>.tsv, --run-order pool)", ANCHOR)}
BASELINES = {"hybrid": {"lexical": "lexical", "dense": "dense", "rrf": "rrf", "convex": "fused"},
             "from-run": {"external": "external", "dense": "dense", "rrf": "rrf", "convex": "convex",
                          "old_fallback": "old_fallback"},
             "natural": {"lexical": "lexical", "dense": "dense", "rrf": "rrf", "convex": "fused"}}
FUSIONS = {"hybrid": ("rrf", "convex"), "from-run": ("rrf", "convex"), "natural": ("rrf", "convex")}
LEARNED_MODES = ("hybrid", "from-run")  # the natural lists are three collections' own: nothing to train across
PER_QUERY = ("query_terms", "query_idf_mean", "query_idf_max", "dense_spread", "dense_top_gap", "lexical_top_ratio")
# LambdaMART rows: (features, binary labels). Per-query statistics are constant within a list and can only
# interact with the rest; they also say which collection a query comes from, which is what must not be learned.
# Binary labels keep cranfield's 4 grades from outweighing the collections judged 0/1.
CONTEXT = ("centroid_sim", "centroid_z", "neighbour_sim")  # similarity to the anchor's top-10: list context
LIST_ONLY = tuple(f for f in LIST_FEATURES if f not in PER_QUERY)


@dataclass(frozen=True)
class Learned:
    """One LambdaMART row: its features, binary labels or graded, and (residual) a start from the fallback
    fusion's score times this scale, so that a few small trees can only correct it."""

    features: tuple[str, ...]
    binary: bool
    residual: float | None = None


LEARNED = {"lambdamart": Learned(LIST_FEATURES, False),
           "lambdamart-list": Learned(LIST_ONLY, True),
           "lambdamart-scores": Learned(tuple(f for f in LIST_ONLY if f not in CONTEXT), True),
           "lambdamart-residual": Learned(LIST_ONLY, True, residual=4.0)}
RESIDUAL = {"learning_rate": 0.02, "num_leaves": 7, "min_data_in_leaf": 200}  # small corrections only
RESIDUAL_ROUNDS = 100
DEPTHS = {"hybrid": (20, 50, 100, 200, 1000), "from-run": (20, 50, 100)}
# the shipped weights with one side alone at either end: what the rule chooses when the edges are candidates too
EDGES = (0.0, *DENSE_WEIGHTS, 1.0)
CHOICES = {**{rule: (rule, DENSE_WEIGHTS) for rule in RULES}, "one-se-edges": ("one-se", EDGES)}
SHIPPED = AdaptSettings().rule  # `listcon run` adapts by default, with this rule
EXTERNAL_DEPTH = 100
# fixed before any collection was looked at; never tuned on a left-out collection
LAMBDAMART = {"objective": "lambdarank", "learning_rate": 0.05, "num_leaves": 15, "min_data_in_leaf": 50,
              "feature_fraction": 0.8, "bagging_fraction": 0.8, "bagging_freq": 1, "lambdarank_truncation_level": 20,
              "num_threads": 2, "verbose": -1, "seed": 0}
ROUNDS = 300


def natural_lists(name: str) -> Path:
    """A collection's natural candidate lists for its evaluation split (``query-id corpus-id label``)."""
    return DATA / name / "candidates" / f"{COLLECTIONS[name]}.tsv"


def pool_config(config, name: str, out: Path, k: int):
    """``config`` retrieving from the collection's natural candidate lists as pools (``--run-order pool``), in a
    copy of its prepared workdir (the caches and indexes; the candidates are retrieved again). Labels are not
    read: the pools are written as a run of ``query-id corpus-id`` alone."""
    from listcon.jobs.retrieve_job import retrieve

    work = out / f"{name}-pools"
    if not work.is_dir():
        shutil.copytree(config.work.root, work.with_name(work.name + ".tmp"), dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("candidates", "runs", "rankings", "training", "adaptation*", "reports",
                                                      "runs.jsonl", "*.npz", "adapt.json", ".listcon*.lock"))
        work.with_name(work.name + ".tmp").rename(work)
    run = work / "pools.trec"
    with open(natural_lists(name), encoding="utf-8") as lists:
        pairs = [line.split("\t")[:2] for line in list(lists)[1:] if line.strip()]
    run.write_text("".join(f"{q} Q0 {p} 0 0 pool\n" for q, p in pairs))
    pooled = replace(config, workdir=str(work),
                     retrieve=replace(config.retrieve, from_run=str(run), run_order="pool", missing_queries="empty"))
    retrieve(pooled, config.split, k, progress=False)
    return pooled


def as_external_run(rows: pa.Table, depth: int = EXTERNAL_DEPTH) -> pa.Table:
    """One query's candidates as the retrieve step would store them from an external BM25 top-``depth`` run:
    the lexical side's top-``depth`` (every one is in the hybrid list, with its exact dense and BM25 signals),
    its BM25 score and rank as the external run's and the candidate source's."""
    rows = rows.filter(pc.less_equal(rows["lexical_rank"], depth)).sort_by("lexical_rank")
    return (rows.set_column(rows.schema.get_field_index("rank"), "rank", rows["lexical_rank"])
                .set_column(rows.schema.get_field_index("score"), "score", rows["lexical_score"])
                .set_column(rows.schema.get_field_index("external_score"), "external_score", rows["lexical_score"])
                .set_column(rows.schema.get_field_index("external_rank"), "external_rank", rows["lexical_rank"]))


def _fusions(rows: pa.Table, k: int, mode: str) -> dict[str, np.ndarray]:
    """The fixed rankings a run can be made of, per candidate of one query."""
    matrix = QuerySignals(rows, k).matrix(rows["passage_id"].to_pylist()).astype(np.float64)
    col = {name: matrix[:, SIGNALS.index(name)] for name in SIGNALS}
    if mode != "from-run":
        return {"lexical": col["lexical"], "dense": col["dense"], "rrf": col["rrf"], "fused": col["fused"],
                "fallback": weigh(matrix, ANCHOR)}
    # convex over the three sides alike, each min-max normalised over the list; the fallback before this change
    # was the demo anchor: the external score min-max (fused) + 0.5 RRF of the dense and lexical ranks only
    norm = lambda v: (v - v.min()) / (v.max() - v.min()) if v.max() > v.min() else np.zeros_like(v)  # noqa: E731
    return {"external": col["external"], "dense": col["dense"], "rrf": col["rrf"],
            "convex": (norm(col["external"]) + norm(col["dense"]) + norm(col["lexical"])) / 3,
            "old_fallback": col["fused"] + 0.5 * _two_sided_rrf(rows, k), "fallback": weigh(matrix, EXTERNAL_FALLBACK)}


def _two_sided_rrf(rows: pa.Table, k: int) -> np.ndarray:
    ranks = [rows[c].to_numpy().astype(np.float64) for c in ("dense_rank", "lexical_rank")]
    return sum(np.where(r <= k, 1.0 / (RRF_K + r), 0.0) for r in ranks) * (RRF_K + 1) / 2


def collection_lists(config, cache: Path, mode: str) -> dict:
    """Every judged query's candidates as arrays: features, labels and fixed rankings (cached in ``cache``)."""
    if cache.is_file():
        saved = np.load(cache, allow_pickle=False)
        return {key: saved[key] for key in saved.files}
    candidates = read_ranked(config.work.candidates(config.split))
    k = int(pc.max(candidates["rank"]).as_py())
    qrels = read_qrels(config.data, config.split)
    grades: dict[str, dict[str, int]] = {}
    for q, p, r in zip(*(qrels[c].to_pylist() for c in ("query_id", "passage_id", "relevance"))):
        grades.setdefault(q, {})[p] = r
    queries = read_queries(config.data)
    texts = dict(zip(queries["id"].to_pylist(), queries["text"].to_pylist()))
    ids, vectors = EmbeddingCache(config.work.passages).read_all()
    position = {p: i for i, p in enumerate(ids)}
    lexical = LexicalIndex.load(config.work.lexical)
    parts: dict[str, list] = {}
    for qid, rows in sorted(rows_by_query(candidates).items()):
        rows = rows.sort_by("rank") if mode != "from-run" else as_external_run(rows)
        if not len(rows):  # no passage shares a term with the query: the external run has nothing for it
            continue
        pids = rows["passage_id"].to_pylist()
        item = {"query": np.full(len(pids), qid), "passage": np.array(pids),
                "features": list_features(rows, k, vectors[[position[p] for p in pids]], query_idf(lexical, texts[qid]),
                                          MODES[mode][1]),
                "label": np.array([grades.get(qid, {}).get(p, 0) for p in pids], dtype=np.int32),
                **{f"by_{name}": scores for name, scores in _fusions(rows, k, mode).items()}}
        for key, value in item.items():
            parts.setdefault(key, []).append(value)
    arrays = {key: np.concatenate(value) for key, value in parts.items()}
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, **arrays)
    return arrays


def adaptation(config, cache: Path, count: int, seed: int, k: int) -> dict:
    """The fusion each rule chooses for a collection on ``count`` pseudo-queries cut from its passages (cached in
    ``cache``): `listcon adapt`'s evidence, which reads the corpus and the workdir, never a query or a judgment."""
    key = [count, seed, k, list(EDGES)]
    if cache.is_file() and (saved := json.loads(cache.read_text())).get("key") == key:
        return saved
    started = time.perf_counter()
    gains, kinds = pseudo_evidence(replace(config, adapt=AdaptSettings(pseudo_queries=count, seed=seed)), k, weights=EDGES)
    result = {"key": key, "rules": {c: choose_fusion(gains, rule, weights).to_dict() for c, (rule, weights) in CHOICES.items()},
              "kinds": kinds, "seconds": round(time.perf_counter() - started, 1)}
    cache.write_text(json.dumps(result, indent=2) + "\n")
    logging.getLogger("bench.transfer").warning("adapted %s: %s", config.data, result)
    return result


def shipped_weight(out: Path, name: str) -> float | None:
    """The dense weight the shipped rule chose for collection ``name`` on its pseudo-queries (None: the anchor), from
    the adaptation record this bench left in ``out/name/adapt.json``."""
    return json.loads((out / name / "adapt.json").read_text())["rules"][SHIPPED]["dense_weight"]


def fused_by(lists: dict, dense_weight: float | None, anchor: dict | None = None) -> dict[str, dict[str, float]]:
    """The run of an adapted fusion choice: the z-score fusion at ``dense_weight``, or the fallback anchor where the
    choice is the anchor (None; ``anchor``: that run, if already ranked)."""
    if dense_weight is None:
        return anchor if anchor is not None else ranked(lists, "fallback")
    return ranked(with_z_fusion(lists, dense_weight), "z")


def with_z_fusion(lists: dict, dense_weight: float) -> dict:
    """``lists`` with ``by_z``: the z-score fusion at ``dense_weight`` (an external run's z joins the lexical side)."""
    dense, lexical = lists["features"][:, LIST_FEATURES.index("dense_z")], lists["features"][:, LIST_FEATURES.index("lexical_z")]
    z = np.zeros(len(dense))
    for group in _groups(lists):
        external = lists["by_external"][group] if "by_external" in lists else None
        z[group] = z_fusion(dense[group].astype(np.float64), lexical[group].astype(np.float64), dense_weight, external)
    return {**lists, "by_z": z}


def _groups(lists: dict) -> list[np.ndarray]:
    """Row positions of each query, in first-stage order."""
    _, starts = np.unique(lists["query"], return_index=True)
    bounds = np.sort(np.append(starts, len(lists["query"])))
    return [np.arange(a, b) for a, b in zip(bounds[:-1], bounds[1:])]


def _ordered(lists: dict, group: np.ndarray, by: str) -> np.ndarray:
    """A query's rows ordered by one of its fixed rankings (ties: first-stage order)."""
    return group[np.lexsort((np.arange(len(group)), -lists[f"by_{by}"][group]))]


def drawn(lists: dict, by: str, depth: int, count: int, rng: np.random.Generator) -> list[np.ndarray]:
    """The training draw of one collection: up to ``count`` of its queries with a relevant candidate in their
    top-``depth`` by ``by``, drawn by ``rng``, each as that top-``depth`` (row positions), in query order."""
    groups = [g for g in (_ordered(lists, g, by)[:depth] for g in _groups(lists)) if lists["label"][g].max() > 0]
    return [groups[i] for i in sorted(rng.permutation(len(groups))[:count])]


def train_lambdamart(sources: dict[str, dict], spec: Learned, per_collection: int, depth: int, seed: int):
    """LightGBM lambdarank on the fallback fusion's top-``depth`` of up to ``per_collection`` queries of each source
    (queries with a relevant candidate), so that no single collection decides the model."""
    import lightgbm

    rng = np.random.default_rng(seed)
    columns = [LIST_FEATURES.index(f) for f in spec.features]
    rows, labels, sizes, starts = [], [], [], []
    for name in sorted(sources):
        lists = sources[name]
        for group in drawn(lists, "fallback", depth, per_collection, rng):
            rows.append(lists["features"][group][:, columns])
            labels.append(np.minimum(lists["label"][group], 1) if spec.binary else lists["label"][group])
            sizes.append(len(group))
            starts.append(lists["by_fallback"][group] * (spec.residual or 0.0))
    data = lightgbm.Dataset(np.concatenate(rows), np.concatenate(labels), group=sizes, feature_name=list(spec.features),
                            init_score=np.concatenate(starts) if spec.residual else None, free_raw_data=True)
    if spec.residual:
        return lightgbm.train({**LAMBDAMART, **RESIDUAL}, data, num_boost_round=RESIDUAL_ROUNDS)
    return lightgbm.train(LAMBDAMART, data, num_boost_round=ROUNDS)


def ranked(lists: dict, by: str, model=None, depth: int = 0, spec: Learned | None = None) -> dict[str, dict[str, float]]:
    """A run: each query's candidates ordered ``by`` a fixed ranking, the top ``depth`` reordered by ``model``.
    Scores are strictly decreasing along the order so that trec_eval reads the same ranking."""
    run = {}
    for group in _groups(lists):
        order = _ordered(lists, group, by)
        if model is not None:
            top = order[:depth]
            predicted = model.predict(lists["features"][top][:, [LIST_FEATURES.index(f) for f in spec.features]],
                                      num_threads=2) + lists["by_fallback"][top] * (spec.residual or 0.0)
            order = np.concatenate([top[np.lexsort((np.arange(len(top)), -predicted))], order[depth:]])
        qid = str(lists["query"][group[0]])
        run[qid] = {str(p): float(len(order) - i) for i, p in enumerate(lists["passage"][order])}
    return run


if __name__ == "__main__":
    run_bench(main)
