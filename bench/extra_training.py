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
from dataclasses import asdict, replace
from pathlib import Path

from bench.common import print_table, run_bench, write_results
from listcon.jobs.config import ExtraSource, load_config
from listcon.jobs.run_job import run
from listcon.jobs.runtime import setup_logging
from listcon.pipeline.data.readers import read_qrels
from listcon.pipeline.evaluation.evaluate import paired_test, per_query
from listcon.pipeline.store.ranked_lists import read_trec

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
    config = load_config(args.config)
    extras = tuple(ExtraSource(name, str(DATA / name), str(args.extra_root / name)) for name in args.collections)
    config = replace(config, workdir=str(args.workdir),
                     train=replace(config.train, out=str(args.workdir / "head-extra"), extra=extras),
                     rerank=replace(config.rerank, run_name="listcon-extra", depths=()))
    result = run(config)  # prepares and mines each extra collection in its own workdir, then trains and reranks
    record, data, work = result.training, config.data, config.work

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
    print(f"held-out scifact nDCG@10 with extras: {record.best_metric:.4f} at epoch {record.best_epoch}")
    print(f"wrote {write_results('extra_training', {'rows': rows, 'collections': args.collections, 'train': asdict(record)})}")


if __name__ == "__main__":
    run_bench(main)
