"""A listwise Transformer over list features, leave-one-collection-out: does ListAttention over evidence that
means the same on every corpus transfer where LambdaMART over the same features did not?

The head's tokens are the candidates' list features (``bench.transfer.LIST_ONLY``: each side's z-score, gap and
rank discount, RRF, convex, the anchor and its rank, agreement, no-term-match, similarity to the centroid of the
anchor's top-10 and to the nearest of them; no raw embedding coordinate, no per-query statistic that could name
a collection), standardised with the training rows' mean and spread. A learned query token and two
ListAttention layers (``model.attention``, the ListConRanker's own layers at width 64) let every candidate's
score depend on the whole list. Its logit is ``a * z(prior) + c + cap * tanh(head / cap)``: the prior is a fixed
ranking z-scored over the list being reranked, ``a`` and ``c`` are learned, the head's output layer starts at
zero, so the untrained model ranks exactly as its prior, and its part is bounded (``CAP``, as the demo head's
``head_cap`` was when this ran). Two priors:

- ``anchor``: the fallback fusion (the rows LambdaMART-residual of bench/transfer.py start from);
- ``shipped``: what listcon ranks by on an unlabelled corpus, the z-score fusion ``listcon adapt`` chose on the
  collection's own pseudo-queries (else the fallback). Each training collection's lists use its own adapted
  fusion (label-free), so what the head can learn is what the fusion the corpus chose still gets wrong.

Beside them, LightGBM's lambdarank from the shipped prior (``lambdamart-residual-shipped``: the features of
``LIST_ONLY``, the prior's z-score as the init score, the residual settings of bench/transfer.py), so the table
shows whether the listwise Transformer earns its place against the field's baseline from the same start.

Training data and settings are bench/transfer.py's for its learned rows: up to ``--train-queries`` queries of
each other collection (those with a relevant candidate), the prior's top ``--depth`` (100), binary labels;
Circle Loss (gamma 10, m -0.2, the paper's stage 1) on sigmoid scores; ``--steps`` AdamW steps of 16 lists drawn
with every collection equally likely, so that no single one decides the head. Everything is fixed before any
collection is scored; nothing is chosen on a left-out collection. Each left-out collection's lists are reranked
at the depths of its depth curve (the prior's top N reordered, the rest below).

    python -m bench.transfer_feature_head [--collections scifact ...] [--steps 1000] [--seeds 0 1]

Needs ``python -m bench.transfer`` first (its candidate lists and each collection's adapted fusion, cached in
work/transfer). Writes bench/results/transfer_feature_head.json and prints a table.
"""

from __future__ import annotations

import json
import logging
import time

import numpy as np
import torch
import torch.nn as nn

from bench.common import print_table, run_bench, write_results
from bench.transfer import (BASELINES, CHOICES, COLLECTIONS, DEPTHS, FUSIONS, LIST_ONLY, RESIDUAL, RESIDUAL_ROUNDS,
                            SHIPPED, Learned, _groups, _ordered, collection_config, collection_lists,
                            collection_parser, drawn, ranked, shipped_weight, train_lambdamart, with_z_fusion)
from listcon.jobs.config import load_config
from listcon.jobs.runtime import setup_logging
from listcon.model.attention import attention_mask
from listcon.model.head_config import ListConRankerConfig
from listcon.model.losses.circle import circle_loss
from listcon.model.ranker import EncoderLayer
from listcon.pipeline.data.readers import read_qrels
from listcon.pipeline.evaluation.evaluate import paired_test, per_query
from listcon.pipeline.retrieval.signals import LIST_FEATURES, z_scores

MODES = ("hybrid", "from-run")
PRIORS = ("anchor", "shipped")
COLUMNS = [LIST_FEATURES.index(f) for f in LIST_ONLY]
WIDTH, HEADS, LAYERS, FFN, DROPOUT = 64, 4, 2, 128, 0.1
BATCH, LR, WEIGHT_DECAY = 16, 1e-3, 0.01
CAP = 2.0  # the head's logit is bounded, as the demo head's was when this ran (head_cap): it reorders near-ties of the prior
SHIPPED_RESIDUAL = Learned(LIST_ONLY, True, residual=1.0)  # init score: the shipped prior's z-score


class FeatureListHead(nn.Module):
    """ListAttention over candidates whose tokens are their list features; logit = a * z(prior) + c + capped head."""

    def __init__(self, mean: np.ndarray, std: np.ndarray) -> None:
        super().__init__()
        config = ListConRankerConfig(embed_dim=len(mean), hidden_size=WIDTH, num_heads=HEADS, num_layers=LAYERS,
                                     ffn_size=FFN, dropout=DROPOUT)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32))
        self.tokens = nn.Linear(len(mean), WIDTH)
        self.query = nn.Parameter(torch.zeros(WIDTH))
        self.norm = nn.LayerNorm(WIDTH)
        self.layers = nn.ModuleList(EncoderLayer(config) for _ in range(LAYERS))
        self.out = nn.Linear(2 * WIDTH, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.prior_scale = nn.Parameter(torch.tensor(2.0))
        self.bias = nn.Parameter(torch.tensor(-2.0))  # lets Circle Loss push scores down without the head

    def forward(self, features: torch.Tensor, prior: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, N]`` of lists ``features [B, N, F]`` with their prior ``[B, N]`` (z-scored per list)."""
        tokens = self.tokens((features - self.mean) / self.std)
        z = self.norm(torch.cat([self.query.expand(len(tokens), 1, WIDTH), tokens], dim=1))
        allow = attention_mask("list", mask)
        for layer in self.layers:
            z = layer(z, allow)
        head = self.out(torch.cat([z[:, :1].expand_as(z[:, 1:]), z[:, 1:]], dim=-1)).squeeze(-1)
        return self.prior_scale * prior + self.bias + CAP * torch.tanh(head / CAP)


def with_prior(lists: dict, prior: str, weight: float | None) -> dict:
    """``lists`` with ``by_prior``: the fallback fusion, or the shipped rule's adapted z-fusion at ``weight``."""
    if prior == "anchor" or weight is None:
        return {**lists, "by_prior": lists["by_fallback"]}
    return {**lists, "by_prior": with_z_fusion(lists, weight)["by_z"]}


def training_lists(sources: dict[str, dict], per_collection: int, depth: int, seed: int) -> list[list[tuple]]:
    """Per source collection: (features, z(prior), binary labels) of the prior's top-``depth`` of up to
    ``per_collection`` of its queries that have a relevant candidate there (bench/transfer.py's draw)."""
    rng = np.random.default_rng(seed)
    return [[(sources[name]["features"][g][:, COLUMNS], z_scores(sources[name]["by_prior"][g]),
              np.minimum(sources[name]["label"][g], 1)) for g in drawn(sources[name], "prior", depth, per_collection, rng)]
            for name in sorted(sources)]


def train_head(sources: list[list[tuple]], steps: int, seed: int) -> FeatureListHead:
    """``steps`` AdamW steps of ``BATCH`` lists, each drawn from a collection chosen uniformly."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    rows = np.concatenate([f for source in sources for f, _, _ in source])
    model = FeatureListHead(rows.mean(axis=0), np.maximum(rows.std(axis=0), 1e-6))
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    model.train()
    for _ in range(steps):
        picked = [sources[c][rng.integers(len(sources[c]))] for c in rng.integers(len(sources), size=BATCH)]
        n = max(len(f) for f, _, _ in picked)
        features = torch.zeros(BATCH, n, len(COLUMNS))
        prior, labels, mask = torch.zeros(BATCH, n), torch.zeros(BATCH, n), torch.zeros(BATCH, n, dtype=torch.bool)
        for i, (f, p, y) in enumerate(picked):
            features[i, :len(f)], prior[i, :len(f)] = torch.from_numpy(f).float(), torch.from_numpy(p).float()
            labels[i, :len(f)], mask[i, :len(f)] = torch.from_numpy(y).float(), True
        loss = circle_loss(torch.sigmoid(model(features, prior, mask)), labels, mask)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


@torch.no_grad()
def reranked(lists: dict, model: FeatureListHead, depth: int) -> dict[str, dict[str, float]]:
    """A run: each query's prior top-``depth`` reordered by the head (ties: the prior's order), the rest below."""
    run = {}
    for group in _groups(lists):
        order = _ordered(lists, group, "prior")
        top = order[:depth]
        features = torch.from_numpy(lists["features"][top][:, COLUMNS]).float()[None]
        prior = torch.from_numpy(z_scores(lists["by_prior"][top])).float()[None]
        scores = model(features, prior, torch.ones(1, len(top), dtype=torch.bool))[0].numpy()
        order = np.concatenate([top[np.lexsort((np.arange(len(top)), -scores))], order[depth:]])
        run[str(lists["query"][group[0]])] = {str(p): float(len(order) - i) for i, p in enumerate(lists["passage"][order])}
    return run


def main() -> None:
    parser = collection_parser(__doc__)
    parser.add_argument("--train-queries", type=int, default=200, help="training queries per other collection")
    parser.add_argument("--depth", type=int, default=100, help="training lists: the prior's top-N")
    parser.add_argument("--steps", type=int, default=1000, help="training steps of 16 lists")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="one head per seed; rows average their runs' nDCG")
    args = parser.parse_args()
    setup_logging()
    torch.set_num_threads(2)
    base = load_config(args.config)
    configs = {name: collection_config(base, name, args.out) for name in COLLECTIONS}
    adapted = {name: shipped_weight(args.out, name)
               for name in COLLECTIONS}
    report = {"measure": "nDCG@10", "features": list(LIST_ONLY), "priors": list(PRIORS), "shipped_rule": SHIPPED,
              "adapted_dense_weights": adapted,
              "head": {"width": WIDTH, "heads": HEADS, "layers": LAYERS, "ffn": FFN, "dropout": DROPOUT,
                       "attention": "list", "loss": "circle (gamma 10, m -0.2) on sigmoid(a * z(prior) + c + cap * tanh(head / cap))", "cap": CAP,
                       "batch_lists": BATCH, "lr": LR, "weight_decay": WEIGHT_DECAY, "steps": args.steps,
                       "sampling": "collection uniformly, then one of its lists"},
              "lambdamart_residual_shipped": {"features": list(LIST_ONLY), "init_score": "z(shipped prior) x 1.0",
                                              "params": RESIDUAL, "rounds": RESIDUAL_ROUNDS},
              "train_queries_per_collection": args.train_queries, "depth": args.depth, "seeds": args.seeds,
              "choices": {c: r for c, (r, _) in CHOICES.items()}}
    log = logging.getLogger("bench.transfer_feature_head")
    for mode in MODES:
        lists = {name: collection_lists(config, args.out / name / f"{mode}.npz", mode) for name, config in configs.items()}
        primed = {prior: {n: with_prior(lists[n], prior, adapted[n]) for n in COLLECTIONS} for prior in PRIORS}
        shipped = {n: {**primed["shipped"][n], "by_fallback": _z_per_query(primed["shipped"][n])} for n in COLLECTIONS}
        rows, curves = [], {}
        for held_out in args.collections:
            qrels = read_qrels(configs[held_out].data, configs[held_out].split)
            score = lambda run: per_query(qrels, run, ["nDCG@10"])["nDCG@10"]  # noqa: E731
            values = {name: score(ranked(lists[held_out], BASELINES[mode][name])) for name in FUSIONS[mode]}
            values["listcon"] = score(ranked(primed["shipped"][held_out], "prior"))
            curve, seconds = {}, {}
            for prior in PRIORS:
                target = primed[prior][held_out]
                for seed in args.seeds:
                    started = time.perf_counter()
                    sources = training_lists({n: primed[prior][n] for n in COLLECTIONS if n != held_out},
                                             args.train_queries, args.depth, seed)
                    model = train_head(sources, args.steps, seed)
                    seconds.setdefault(f"head-{prior}", []).append(round(time.perf_counter() - started, 1))
                    for depth in DEPTHS[mode]:
                        curve.setdefault(f"head-{prior}", {}).setdefault(depth, []).append(score(reranked(target, model, depth)))
            model = train_lambdamart({n: shipped[n] for n in COLLECTIONS if n != held_out}, SHIPPED_RESIDUAL,
                                     args.train_queries, args.depth, args.seeds[0])
            for depth in DEPTHS[mode]:
                curve.setdefault("lambdamart-residual-shipped", {})[depth] = [
                    score(ranked(shipped[held_out], "fallback", model, depth, SHIPPED_RESIDUAL))]
            for learned, by_depth in curve.items():  # each learned row at the training depth, seeds averaged
                values[learned] = _mean_runs(by_depth[args.depth])
            means = {run: float(np.mean(list(v.values()))) for run, v in values.items()}
            best = max(FUSIONS[mode], key=means.get)
            row = {"name": held_out, "queries": len(values["listcon"]), **means, "best_fusion": best,
                   "listcon_delta": means["listcon"] - means[best], "listcon_p": paired_test(values["listcon"], values[best])}
            for learned in curve:
                row[f"{learned}_delta"] = means[learned] - means[best]
                row[f"{learned}_p"] = paired_test(values[learned], values[best])
                row[f"{learned}_vs_listcon"] = means[learned] - means["listcon"]
                row[f"{learned}_vs_listcon_p"] = paired_test(values[learned], values["listcon"])
            row["train_seconds"] = {k: float(np.mean(v)) for k, v in seconds.items()}
            rows.append(row)
            curves[held_out] = {learned: {d: float(np.mean(list(_mean_runs(r).values()))) for d, r in by_depth.items()}
                                for learned, by_depth in curve.items()}
            log.warning("[%s] %s: %s", mode, held_out, {k: round(v, 4) for k, v in means.items()})
        learned_rows = list(curves[rows[0]["name"]])
        print(f"\n{mode}")
        print_table(rows, ["name", "queries", "rrf", "convex", "listcon", *learned_rows, "listcon_delta",
                           *(f"{r}_delta" for r in learned_rows), *(f"{r}_vs_listcon" for r in learned_rows)])
        summary = {run: {"mean_delta": float(np.mean([r[key] for r in rows])), "worst_delta": float(min(r[key] for r in rows)),
                         **({"mean_vs_listcon": float(np.mean([r[f"{run}_vs_listcon"] for r in rows])),
                             "worst_vs_listcon": float(min(r[f"{run}_vs_listcon"] for r in rows))} if run != "listcon" else {})}
                   for run, key in (("listcon", "listcon_delta"), *((r, f"{r}_delta") for r in learned_rows))}
        print("against the better fusion / listcon:", json.dumps(summary, indent=1))
        report[mode] = {"collections": rows, "summary": summary, "depth_curves": curves}
    report["collections"] = report["hybrid"]["collections"]
    print(f"wrote {write_results('transfer_feature_head', report)}")


def _z_per_query(lists: dict) -> np.ndarray:
    """The prior z-scored within each query's whole candidate list (LambdaMART's init score)."""
    z = np.zeros(len(lists["by_prior"]))
    for group in _groups(lists):
        z[group] = z_scores(lists["by_prior"][group])
    return z


def _mean_runs(runs: list[dict[str, float]]) -> dict[str, float]:
    """Per query, the mean nDCG@10 of one row's runs (one per seed)."""
    return {q: float(np.mean([r[q] for r in runs])) for q in runs[0]}


if __name__ == "__main__":
    run_bench(main)
