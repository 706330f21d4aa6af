"""Stage 2 at this CPU's scale (issue 23, item 6): MiniLM's top layers and the head trained together.

On scifact's training queries (hybrid top-100, lists of ``--list-size``: one or more positives and hard
negatives), two heads with the same settings, lists and budget: a head without signals (the only kind stage 2
trains: ``first_stage_prior``, starting as the encoder's cosine), trained

- ``stage1``: on the cached MiniLM vectors (the encoder frozen), the control;
- ``stage2``: end to end, with the encoder's top ``--layers`` transformer layers trainable and training passages
  cut to ``--passage-tokens`` tokens (validation and the saved encoder keep the cache's 256). Its best epoch is
  taken by the mean alone (``domain_alpha = 1``), so that the tuned encoder is measured even where the shipped
  test would keep the start; whether it would is reported.

The tuned encoder then re-embeds each collection (its own workdir, ``--out``/stage2/tuned/<name>): its hybrid
top-1,000 is evaluated like ``bench.transfer``'s (dense, lexical, RRF, convex) against the original encoder's
(``--out``/<name>, prepared by ``python -m bench.transfer --prepare-only``), on scifact test (in domain) and on the
other collections' evaluation splits (transfer); ``dense-rescored`` is the tuned encoder's cosine over the original
encoder's candidates (its scoring without its retrieval). scifact test's top 100 is reranked by each head on its own
encoder's cache, under the shipped rule. With ``--demo-workdir``, the main job itself (the demo's head with
signals, trained on scifact and its extras) runs again on the tuned encoder's workdirs, and its listcon runs are
compared with the ones ``make demo`` wrote there. Reported: the cost (training seconds and passages per second,
re-embedding seconds from each workdir's run records), validation before and after, nDCG@10 with paired p.

    python -m bench.stage2 [--collections scifact nfcorpus ...] [--layers 2] [--passage-tokens 128] [--epochs 3]
                           [--demo-workdir work/scifact]

Every step is the pipeline's own (a no-op once done). Writes bench/results/stage2.json and prints a table.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np

from bench.common import print_table, run_bench, write_results
from bench.transfer import (BASELINES, FUSIONS, _groups, _ordered, collection_config, collection_lists, collection_parser,
                            ranked)
from listcon.jobs.config import Config, load_config
from listcon.jobs.mine_job import mine
from listcon.jobs.rerank_job import rerank
from listcon.jobs.run_job import prepare, run
from listcon.jobs.run_records import read_records
from listcon.jobs.runtime import setup_logging
from listcon.jobs.train_job import train
from listcon.pipeline.data.readers import read_qrels
from listcon.pipeline.evaluation.evaluate import paired_test, per_query
from listcon.pipeline.retrieval import faiss_index
from listcon.pipeline.store.embedding_cache import EmbeddingCache
from listcon.pipeline.store.ranked_lists import read_trec
from listcon.pipeline.store.workdir import Workdir
from listcon.pipeline.training.loop import beats

FIXED = BASELINES["hybrid"]  # the fixed rankings of hybrid candidates, as bench.transfer reports them
TRAIN_K = 100  # scifact train's candidates: the hard negatives come from the top 100
RERANK_DEPTH = 100
RESCORED_DEPTHS = (10, 30, 100, 1000)  # each encoder's cosine reordering the convex fusion's top N


def main() -> None:
    parser = collection_parser(__doc__)
    parser.set_defaults(collections=["scifact", "nfcorpus", "cranfield", "cisi", "medline", "cacm", "adi", "liveqa_med"])
    parser.add_argument("--layers", type=int, default=2, help="trainable top layers of the encoder (MiniLM has 6)")
    parser.add_argument("--passage-tokens", type=int, default=128, help="training passages cut to this many tokens")
    parser.add_argument("--list-size", type=int, default=8, help="passages per training list")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=8, help="lists per step")
    parser.add_argument("--val-depth", type=int, default=30, help="candidates of each held-out query validated")
    parser.add_argument("--demo-workdir", type=Path, default=None,
                        help="the workdir `make demo` ran in: with it, the main job (--config) also runs on the tuned "
                             "encoder and its listcon runs are compared with the ones that run wrote")
    args = parser.parse_args()
    setup_logging()
    logging.getLogger("listcon").setLevel(logging.WARNING)
    logging.getLogger("listcon.pipeline.training").setLevel(logging.INFO)  # the epochs, as they end
    base = load_config(args.config)
    home = args.out / "stage2"
    scifact = collection_config(base, "scifact", args.out)
    prepare(scifact, "train", TRAIN_K, progress=False)
    trained = replace(scifact, split="train", train=replace(
        base.train, split="train", extra=(), validate_on="main",
        mining=replace(base.train.mining, list_size=args.list_size, depth=TRAIN_K)))
    mine(trained, "train")
    head = replace(base.train.settings.head, signals=(), first_stage_prior=True, anchor={})
    settings = replace(base.train.settings, epochs=args.epochs, patience=args.epochs, batch_size=args.batch_size,
                       val_depth=args.val_depth, head=head, val_weighting="queries")
    # domain_alpha 1: the bench measures the tuned encoder whenever its head beat the start in the mean, where the
    # shipped test (domain_alpha, reported as "kept_at_shipped_alpha") may keep the start
    heads = {"stage1": replace(settings, stage=1),
             "stage2": replace(settings, stage=2, encoder_layers=args.layers, passage_tokens=args.passage_tokens,
                               domain_alpha=1.0)}
    results = {}
    for name, chosen in heads.items():
        results[name] = train(replace(trained, train=replace(trained.train, out=str(home / "heads" / name),
                                                             settings=chosen)))
        print(f"{name}: best epoch {results[name].best_epoch}, validation "
              f"{[round(h['val_ndcg@10'], 4) for h in results[name].history]}", flush=True)
    tuned = replace(base, encoder=replace(base.encoder, model=str(home / "heads" / "stage2" / "encoder")))
    rows = []
    for name in args.collections:
        original, retuned = collection_config(base, name, args.out), collection_config(tuned, name, home / "tuned")
        prepare(original, original.split, 1000, progress=False)  # a no-op once bench.transfer prepared it
        prepare(retuned, retuned.split, 1000, progress=False)
        # what re-embedding cost: the embed run that encoded the passages (a rerun finds them done)
        reembed = next(r["result"] for r in reversed(read_records(retuned.work))
                       if r["step"] == "embed" and r["status"] == "done" and r["result"].get("encoded"))
        qrels = read_qrels(original.data, original.split)
        values, lists = {}, {}
        for encoder, config, out in (("original", original, args.out), ("tuned", retuned, home / "tuned")):
            lists[encoder] = collection_lists(config, out / name / "hybrid.npz", "hybrid")
            values.update({f"{run}@{encoder}": per_query(qrels, ranked(lists[encoder], by), ["nDCG@10"])["nDCG@10"]
                           for run, by in FIXED.items()})
        # the tuned encoder's cosine over the original encoder's candidates: its scoring without its retrieval
        lists = {**lists["original"], "by_tuned": cosines(lists["original"], retuned.work)}
        values["dense-rescored@tuned"] = per_query(qrels, ranked(lists, "tuned"), ["nDCG@10"])["nDCG@10"]
        curve = {depth: {e: float(np.mean(list(per_query(qrels, reordered(lists, by, depth),
                                                          ["nDCG@10"])["nDCG@10"].values())))
                         for e, by in (("original", "dense"), ("tuned", "tuned"))} for depth in RESCORED_DEPTHS}
        if name == "scifact":
            for head_name, config in (("stage1", original), ("stage2", retuned)):
                run = f"{head_name}-head"
                rerank(replace(config, rerank=replace(base.rerank, model_dir=str(home / "heads" / head_name),
                                                      run_name=run, depths=())),
                       depth=RERANK_DEPTH, run_name=run, progress=False)
                values[f"{run}@{'original' if head_name == 'stage1' else 'tuned'}"] = per_query(
                    qrels, read_trec(config.work.run(config.split, run)), ["nDCG@10"])["nDCG@10"]
        means = {run: float(np.mean(list(v.values()))) for run, v in values.items()}
        best = {e: max((f"{f}@{e}" for f in FUSIONS["hybrid"]), key=means.get) for e in ("original", "tuned")}
        row = {"name": name, "queries": len(values["dense@original"]), **means,
               "dense_delta": means["dense@tuned"] - means["dense@original"],
               "dense_p": paired_test(values["dense@tuned"], values["dense@original"]),
               "rescored_delta": means["dense-rescored@tuned"] - means["dense@original"],
               "rescored_p": paired_test(values["dense-rescored@tuned"], values["dense@original"]),
               "best_fusion_delta": means[best["tuned"]] - means[best["original"]],
               "best_fusion_p": paired_test(values[best["tuned"]], values[best["original"]]),
               "reembed": {"passages": reembed["encoded"], "seconds": round(reembed["seconds"], 1)},
               "rescored_depth_curve": curve}
        if name == "scifact":
            row["stage2_vs_stage1_head"] = means["stage2-head@tuned"] - means["stage1-head@original"]
            row["stage2_vs_stage1_head_p"] = paired_test(values["stage2-head@tuned"], values["stage1-head@original"])
        rows.append(row)
        print(f"{name}: dense {means['dense@original']:.4f} -> {means['dense@tuned']:.4f}, better fusion "
              f"{means[best['original']]:.4f} -> {means[best['tuned']]:.4f}", flush=True)
    print_table(rows, ["name", "queries", "dense@original", "dense@tuned", "dense_delta", "dense_p", "rescored_delta",
                       "rrf@original", "rrf@tuned", "convex@original", "convex@tuned", "best_fusion_delta",
                       "best_fusion_p"])
    training = {}
    for name, result in results.items():
        seconds = sum(h.get("train_seconds") or 0.0 for h in result.history)
        lists = sum(h.get("steps") or 0 for h in result.history) * args.batch_size
        start, best = (result.history[e]["val_queries"]["main"] for e in (0, result.best_epoch))
        kept, p = beats(best, start, base.train.settings.domain_alpha)
        training[name] = {"best_epoch": result.best_epoch, "train_seconds": round(seconds, 1),
                          "best_vs_start_p": p, "kept_at_shipped_alpha": result.best_epoch > 0 and kept,
                          "lists_per_second": lists / seconds if seconds else None,
                          "passages_per_second": lists * args.list_size / seconds if seconds else None,
                          "validation_by_epoch": [h["val_ndcg@10"] for h in result.history],
                          "epoch_seconds_with_validation": [round(h.get("seconds") or 0.0, 1) for h in result.history]}
    demo = main_job_on(tuned, base, home, args.demo_workdir) if args.demo_workdir else None
    transfer = [r for r in rows if r["name"] != "scifact"]
    summary = {"transfer_dense_mean_delta": float(np.mean([r["dense_delta"] for r in transfer])) if transfer else None,
               "transfer_best_fusion_mean_delta": float(np.mean([r["best_fusion_delta"] for r in transfer])) if transfer else None,
               "transfer_best_fusion_worst_delta": float(min(r["best_fusion_delta"] for r in transfer)) if transfer else None}
    print("training:", training)
    print("transfer:", summary)
    written = write_results("stage2", {
        "measure": "nDCG@10", "candidates": "hybrid top-1,000 from each encoder",
        "settings": {"layers": args.layers, "passage_tokens": args.passage_tokens, "list_size": args.list_size,
                     "epochs": args.epochs, "batch_size": args.batch_size, "val_depth": args.val_depth,
                     "encoder_lr": settings.encoder_lr, "lr": settings.lr, "train_k": TRAIN_K,
                     "rerank_depth": RERANK_DEPTH, "head": "first_stage_prior, no signals, the demo's cap"},
        "training": training, "collections": rows, "summary": summary, "main_job": demo})
    print(f"wrote {written}")


def reordered(lists: dict, by: str, depth: int) -> dict[str, dict[str, float]]:
    """Each query's convex top ``depth`` ordered ``by`` one of its rankings (ties: the convex order)."""
    run = {}
    for group in _groups(lists):
        top = _ordered(lists, group, "fused")[:depth]
        order = top[np.lexsort((np.arange(len(top)), -lists[f"by_{by}"][top]))]
        run[str(lists["query"][group[0]])] = {str(p): float(len(order) - i) for i, p in enumerate(lists["passage"][order])}
    return run


def cosines(lists: dict, work: Workdir) -> np.ndarray:
    """Each candidate row's cosine between its query and passage vectors in ``work``'s caches."""
    q_ids, q_vectors = EmbeddingCache(work.queries).read_all()
    p_ids, p_vectors = EmbeddingCache(work.passages).read_all()
    q_row, p_row = {q: i for i, q in enumerate(q_ids)}, {p: i for i, p in enumerate(p_ids)}
    q_vectors, p_vectors = (faiss_index.prepare(v, "cosine") for v in (q_vectors, p_vectors))  # unit rows
    queries = np.array([q_row[str(q)] for q in lists["query"]])
    passages = np.array([p_row[str(p)] for p in lists["passage"]])
    out = np.empty(len(queries), np.float32)
    for start in range(0, len(out), 65536):
        part = slice(start, start + 65536)
        out[part] = np.einsum("ij,ij->i", q_vectors[queries[part]], p_vectors[passages[part]])
    return out


def main_job_on(tuned: Config, base: Config, home: Path, demo_workdir: Path) -> dict:
    """The main job (the demo's head, with signals, on scifact and its extras) run again on the tuned encoder's
    workdirs; its listcon runs (every depth) against the original encoder's, which ``make demo`` wrote."""
    extras = tuple(replace(e, workdir=str(home / "tuned" / e.name)) for e in base.train.extra)
    job = replace(tuned, workdir=str(home / "tuned" / "scifact"),
                  train=replace(base.train, extra=extras, out=str(home / "tuned" / "scifact" / "head")))
    run(job, progress=False)
    qrels = read_qrels(job.data, job.split)
    original = Workdir(demo_workdir)
    names = ["listcon", *(f"listcon-top{d}" for d in base.rerank.depths), "hybrid-rrf", "hybrid-convex"]
    values = {f"{name}@{encoder}": per_query(qrels, read_trec(work.run(job.split, name)), ["nDCG@10"])["nDCG@10"]
              for name in names for encoder, work in (("original", original), ("tuned", job.work))}
    means = {run: float(np.mean(list(v.values()))) for run, v in values.items()}
    print(f"main job: listcon {means['listcon@original']:.4f} -> {means['listcon@tuned']:.4f}", flush=True)
    return {"means": means,
            "listcon_delta": means["listcon@tuned"] - means["listcon@original"],
            "listcon_p": paired_test(values["listcon@tuned"], values["listcon@original"]),
            "tuned_listcon_vs_fusions_p": {f: paired_test(values["listcon@tuned"], values[f"{f}@tuned"])
                                           for f in ("hybrid-rrf", "hybrid-convex")}}


if __name__ == "__main__":
    run_bench(main)
