"""Does training on the other labelled collections help? scifact test, demo head vs + extras.

Over the workdir `make demo` prepared: embeds, retrieves and mines each extra collection
(their test qrels become training lists, none held out), trains a head with the demo's
settings on scifact train + the extras, reranks scifact test's candidates with it as run
``listcon-extra`` and compares it with the demo's head (run ``listcon``) and the first
stage, with paired t-tests. Validation stays on scifact's held-out train queries.

    python -m bench.extra_training [--workdir work/scifact] [--collections cranfield cisi ...]
"""

from __future__ import annotations

import argparse
import tomllib
from dataclasses import replace
from pathlib import Path

from bench.common import print_table, write_results
from listcon.jobs.embed_job import run_embed
from listcon.jobs.evaluate_job import run_evaluate
from listcon.jobs.index_job import run_index
from listcon.jobs.mine_job import run_mine
from listcon.jobs.rerank_job import run_rerank
from listcon.jobs.retrieve_job import run_retrieve
from listcon.jobs.runtime import setup_logging
from listcon.jobs.train_job import Source, run_train
from listcon.pipeline.encode_batch import EncoderSettings
from listcon.pipeline.evaluate import paired_test, per_query
from listcon.pipeline.faiss_index import IndexSpec
from listcon.pipeline.mining import MiningSettings
from listcon.pipeline.ranked_lists import read_trec
from listcon.pipeline.readers import read_qrels
from listcon.pipeline.rerank import RerankSettings
from listcon.pipeline.train import TrainSettings
from listcon.pipeline.workdir import Workdir

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
MEASURES = ["nDCG@10", "AP@1000", "RR@10"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=ROOT / "work" / "scifact")
    parser.add_argument("--extra-root", type=Path, default=ROOT / "work" / "extra")
    parser.add_argument("--collections", nargs="+", default=["cranfield", "cisi", "cacm", "medline", "adi"])
    parser.add_argument("--config", type=Path, default=ROOT / "jobs" / "demo.toml", help="train/rerank settings to reuse")
    args = parser.parse_args()
    setup_logging()
    config = tomllib.loads(args.config.read_text())
    train = config["train"]
    mining = MiningSettings(**train.get("mining", {}))
    settings = TrainSettings(**train.get("settings", {}))
    encoder, spec = EncoderSettings(**config.get("encoder", {})), IndexSpec(**config.get("index", {}))
    rerank = {k: v for k, v in config.get("rerank", {}).items() if k not in ("depths", "untrained_baseline", "workers")}
    data, work = str(DATA / "scifact"), Workdir(args.workdir)

    extras = []
    for name in args.collections:
        extra_data, extra_work = str(DATA / name), Workdir(args.extra_root / name)
        run_embed(extra_data, extra_work, encoder, empty="skip")
        run_index(extra_work, spec)
        run_retrieve(extra_data, extra_work, "test", encoder, k=mining.depth, spec=spec, empty="skip")
        run_mine(extra_data, extra_work, "test", replace(mining, holdout_fraction=0.0))
        extras.append(Source(name, extra_data, str(extra_work.root), "test"))
    out = args.workdir / "head-extra"
    record = run_train(Source("", data, str(work.root), "train"), str(out), settings, extras=extras)
    run_rerank(data, work, "test", str(out), RerankSettings(**rerank), run_name="listcon-extra")
    run_evaluate(data, work, "test")  # the demo's report, now with this run beside the others

    qrels = read_qrels(data, "test")
    runs = {name: per_query(qrels, read_trec(work.run("test", name)), MEASURES)
            for name in ("first_stage", "listcon", "listcon-extra")}
    rows = []
    for name, values in runs.items():
        row = {"run": name, **{m: sum(v.values()) / len(v) for m, v in values.items()}}
        row["p_vs_first_stage"] = paired_test(values["nDCG@10"], runs["first_stage"]["nDCG@10"])
        row["p_vs_listcon"] = paired_test(values["nDCG@10"], runs["listcon"]["nDCG@10"])
        rows.append(row)
    print_table(rows, ["run", *MEASURES, "p_vs_first_stage", "p_vs_listcon"])
    print(f"held-out scifact nDCG@10 with extras: {record['best_metric']:.4f} at epoch {record['best_epoch']}")
    print(f"wrote {write_results('extra_training', {'rows': rows, 'collections': args.collections, 'train': record})}")


if __name__ == "__main__":
    main()
