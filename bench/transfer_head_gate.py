"""Can a corpus's own pseudo-queries tell whether the head helps there? A self-supervised gate for the learned part.

The fusion choice shows that pseudo-queries cut from a corpus's passages know which first stage to trust there.
This bench asks the same of the head: for every collection ``bench.transfer_head`` left out, the head it trained
without that collection (``work/transfer/heads/without-<name>``, never fine-tuned) reranks the collection's 500
pseudo-queries (the ones ``listcon adapt`` chose its fusion on, in the pseudo collection
``bench.transfer_adapted_head`` built: each source passage indexed without what was cut, the hybrid top-1,000,
learned part forced on), and its pseudo-query nDCG@10 is set against the shipped fusion's on the same lists.

The rule, fixed before any row was measured: the gate applies the head on a corpus only where its pseudo-query
nDCG@10 is higher than the shipped fusion's with paired t-test p < 0.05 (the `significant` rule's test); elsewhere
listcon ranks by the shipped fusion as today. It would be worth shipping only if, on the collections' judged
queries, the gated ranking's mean gain over the better fixed fusion is above the shipped rule's and no collection
is below that fusion by more than 0.005.

Reported per collection: the pseudo-query means (head, shipped fusion; that fusion's mean as `listcon adapt`
recorded it, a check that the two pseudo-query lists agree), the gate, and on the judged queries the head
against listcon and the gated ranking against the better fusion (paired t-test p), plus how often the sign of
the pseudo-query difference matches the judged one and their rank correlation over the collections (Spearman).

    python -m bench.transfer_head_gate [--collections adi ...]

Needs ``python -m bench.transfer``, ``bench.transfer_head`` and ``bench.transfer_adapted_head`` first. Writes
bench/results/transfer_head_gate.json and prints a table.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace

import numpy as np
from scipy.stats import spearmanr

from bench.common import print_table, run_bench, write_results
from bench.transfer import collection_config, collection_lists, collection_parser, fused_by, shipped_weight, SHIPPED
from bench.transfer_adapted_head import head_checkpoint, shipped
from bench.transfer_head import RUN as HEAD_RUN, scored
from listcon.jobs.adapt_head_job import ADAPTATION_DIR
from listcon.jobs.config import ExtraSource, load_config
from listcon.jobs.rerank_job import rerank
from listcon.jobs.runtime import setup_logging
from listcon.pipeline.adaptation.fusion_choice import SIGNIFICANCE
from listcon.pipeline.adaptation.pseudo_collection import SPLIT
from listcon.pipeline.data.readers import read_qrels
from listcon.pipeline.evaluation.evaluate import paired_test, per_query
from listcon.pipeline.store.ranked_lists import read_trec

BAR = -0.005  # no collection below the better fusion by more than this (the issue's bound)


def main() -> None:
    args = collection_parser(__doc__).parse_args()
    setup_logging()
    logging.getLogger("listcon").setLevel(logging.WARNING)
    base = load_config(args.config)
    rows = []
    for name in args.collections:
        head, root = args.out / "heads" / f"without-{name}", args.out / name / ADAPTATION_DIR
        if head_checkpoint(head) is None or not (root / "work").is_dir():
            print(f"{name}: needs its head ({head}) and pseudo collection ({root}); run bench.transfer_head and "
                  "bench.transfer_adapted_head first", flush=True)
            continue
        target = collection_config(base, name, args.out)
        pseudo = target.for_collection(ExtraSource(name="pseudo", data=str(root / "data"), workdir=str(root / "work"),
                                                   split=SPLIT))
        rerank(replace(pseudo, rerank=replace(base.rerank, model_dir=str(head), run_name=HEAD_RUN, depths=(),
                                              settings=replace(base.rerank.settings, outside_domain="head"))),
               progress=False)
        pseudo_qrels = read_qrels(pseudo.data, SPLIT)
        weight = shipped_weight(args.out, name)
        pseudo_head = per_query(pseudo_qrels, read_trec(pseudo.work.run(SPLIT, HEAD_RUN)), ["nDCG@10"])["nDCG@10"]
        pseudo_fusion = per_query(pseudo_qrels, fused_by(collection_lists(pseudo, root / "pseudo.npz", "hybrid"), weight),
                                  ["nDCG@10"])["nDCG@10"]
        recorded = json.loads((args.out / name / "adapt.json").read_text())["rules"][SHIPPED]
        values, means, best = scored(target, args.out / name, [HEAD_RUN])
        listcon = shipped(target, args.out, name)
        gate = mean(pseudo_head) > mean(pseudo_fusion) and paired_test(pseudo_head, pseudo_fusion) < SIGNIFICANCE
        gated = values[HEAD_RUN] if gate else listcon
        row = {"name": name, "pseudo_queries": len(pseudo_head), "pseudo_head": mean(pseudo_head),
               "pseudo_fusion": mean(pseudo_fusion), "pseudo_fusion_recorded": recorded["pseudo_ndcg@10"][recorded["chosen"]],
               "pseudo_delta": mean(pseudo_head) - mean(pseudo_fusion), "pseudo_p": paired_test(pseudo_head, pseudo_fusion),
               "gate": gate, "queries": len(values[HEAD_RUN]), "best_fusion": best,
               "head_vs_listcon": means[HEAD_RUN] - mean(listcon), "head_vs_listcon_p": paired_test(values[HEAD_RUN], listcon),
               "listcon_delta": mean(listcon) - means[best], "gated_delta": mean(gated) - means[best],
               "gated_p": paired_test(gated, values[best])}
        rows.append(row)
        print(f"{name}: pseudo head {row['pseudo_head']:.4f} vs fusion {row['pseudo_fusion']:.4f} (p={row['pseudo_p']:.2g}), "
              f"gate {'on' if gate else 'off'}; judged head - listcon {row['head_vs_listcon']:+.4f}", flush=True)
    summary = {key: {"mean": float(np.mean([r[key] for r in rows])), "worst": float(min(r[key] for r in rows))}
               for key in ("listcon_delta", "gated_delta")}
    summary["gate_on"] = [r["name"] for r in rows if r["gate"]]
    summary["sign_agreement"] = sum((r["pseudo_delta"] > 0) == (r["head_vs_listcon"] > 0) for r in rows)
    summary["spearman"] = float(spearmanr([r["pseudo_delta"] for r in rows], [r["head_vs_listcon"] for r in rows])[0])
    summary["collections"] = len(rows)
    summary["ships"] = (summary["gated_delta"]["mean"] > summary["listcon_delta"]["mean"]
                        and summary["gated_delta"]["worst"] >= BAR)
    print_table(rows, ["name", "pseudo_head", "pseudo_fusion", "pseudo_fusion_recorded", "pseudo_p", "gate", "queries",
                       "head_vs_listcon", "head_vs_listcon_p", "listcon_delta", "gated_delta", "gated_p"])
    print("summary:", summary)
    print(f"wrote {write_results('transfer_head_gate', {'measure': 'nDCG@10', 'candidates': 'hybrid top-1,000', 'collections': rows, 'summary': summary, 'rule': f'head where its pseudo-query nDCG@10 beats the shipped fusion with paired p < {SIGNIFICANCE}', 'bar': BAR, 'heads': 'bench.transfer_head (cap 1, trained without the collection)'})}")


def mean(values: dict[str, float]) -> float:
    return float(np.mean(list(values.values())))


if __name__ == "__main__":
    run_bench(main)
