"""Scheduled reruns cost what changed: new, changed and departed queries, changed, new and removed
passages, and a kill during an incremental rerank, each ending equal to a run from scratch on the
new inputs; `listcon status` tells what a run would do without starting Ray or loading a model."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from conftest import data_dir, kill_when
from listcon.jobs.adapt_job import adapt
from listcon.jobs.config import load_config
from listcon.jobs.embed_job import embed
from listcon.jobs.index_job import index
from listcon.jobs.rerank_job import rerank
from listcon.jobs.retrieve_job import retrieve
from listcon.jobs.status import status
from listcon.model import ListConRanker, ListConRankerConfig
from listcon.pipeline.store.ranked_lists import read_ranked, read_trec
from listcon.pipeline.store.workdir import COMPARISON_RUNS, FIRST_STAGE_RUN, Workdir
from test_faults import CLI, ENV

FLOATS = ("score", "dense_score", "lexical_score", "external_score")


@pytest.fixture(scope="module")
def head(tmp_path_factory) -> Path:
    """A random head that takes the first-stage signals (so a changed signal changes its ranking)."""
    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("incremental-head")
    config = ListConRankerConfig(embed_dim=384, hidden_size=64, num_heads=4, ffn_size=128, signals=("fused", "lexical", "dense"))
    ListConRanker(config).save_pretrained(directory)
    return directory


def collection(to: Path, drop_queries=(), query_texts=None, passages=None, remove=()) -> Path:
    """A copy of adi at ``to``: judgments of ``drop_queries`` left out, ``query_texts`` and ``passages``
    ({id: text}) replacing or adding texts, passages ``remove`` gone (with their judgments)."""
    source = data_dir("adi")
    (to / "qrels").mkdir(parents=True, exist_ok=True)
    rows = [json.loads(line) for line in (source / "corpus.jsonl").read_text().splitlines()]
    rows = [r for r in rows if r["_id"] not in remove]
    for row in rows:
        if row["_id"] in (passages or {}):
            row["text"] = passages[row["_id"]]
    rows += [{"_id": pid, "title": "", "text": text} for pid, text in (passages or {}).items()
             if pid not in {r["_id"] for r in rows}]
    (to / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    queries = [json.loads(line) for line in (source / "queries.jsonl").read_text().splitlines()]
    for query in queries:
        query["text"] = (query_texts or {}).get(query["_id"], query["text"])
    (to / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    lines = (source / "qrels" / "test.tsv").read_text().splitlines()
    kept = [line for line in lines[1:] if line.split("\t")[0] not in drop_queries and line.split("\t")[1] not in remove]
    (to / "qrels" / "test.tsv").write_text("\n".join([lines[0], *kept]) + "\n")
    return to


def config_file(path: Path, data: Path, work: Path, head: Path, shard_size: int = 8) -> Path:
    path.write_text(f'data = "{data}"\nworkdir = "{work}"\n[embed]\nprune = true\n[retrieve]\nk = 30\n'
                    f'[rerank]\nmodel_dir = "{head}"\nshard_size = {shard_size}\nworkers = 1\n')
    return path


def pipeline(config_path: Path) -> None:
    """The steps `listcon run` takes with a head given ([adapt] is on by default)."""
    config = load_config(config_path)
    embed(config, progress=False)
    index(config)
    retrieve(config, progress=False)
    adapt(config, progress=False)
    rerank(config, progress=False)


def outputs(work: Path) -> dict:
    """Every output of retrieve and rerank, in a canonical order: tables sorted by (query, rank), runs parsed."""
    w = Workdir(work)
    tables = {name: read_ranked(uri).sort_by([("query_id", "ascending"), ("rank", "ascending")])
              for name, uri in (("candidates", w.candidates("test")), ("rankings", w.rankings("test")))}
    runs = {name: read_trec(w.run("test", name)) for name in (FIRST_STAGE_RUN, *COMPARISON_RUNS, "listcon")}
    return {"tables": tables, "runs": runs}


def assert_same(got: dict, want: dict) -> None:
    """Equal outputs: identical ids and ranks; scores equal up to float noise (a query encoded in
    another batch may differ in the last bits)."""
    for name, table in want["tables"].items():
        mine = got["tables"][name]
        assert mine.num_rows == table.num_rows, name
        for column in table.column_names:
            if column in FLOATS:
                a, b = mine[column].to_numpy(zero_copy_only=False), table[column].to_numpy(zero_copy_only=False)
                assert np.allclose(a.astype(float), b.astype(float), atol=1e-4, equal_nan=True), (name, column)
            else:
                assert mine[column].to_pylist() == table[column].to_pylist(), (name, column)
    for name, run in want["runs"].items():
        assert got["runs"][name].keys() == run.keys(), name
        for query, scores in run.items():
            assert got["runs"][name][query].keys() == scores.keys(), (name, query)
            assert np.allclose(list(got["runs"][name][query].values()), list(scores.values()), atol=1e-4), (name, query)


def rows_of(table: pa.Table, queries: set[str]) -> pa.Table:
    mask = pa.array([q in queries for q in table["query_id"].to_pylist()])
    return table.filter(mask)


def test_new_changed_and_departed_queries_are_all_a_rerun_computes(tmp_path, head, ray_session, caplog):
    data, work = tmp_path / "adi", tmp_path / "w"
    collection(data, drop_queries={"3", "7", "11"})
    conf = config_file(tmp_path / "job.toml", data, work, head)
    pipeline(conf)
    before = outputs(work)
    verdict = status(load_config(conf))
    assert verdict.up_to_date, [s.detail for s in verdict.steps]

    # the next night: three queries judged for the first time, one reworded, two no longer judged
    collection(data, drop_queries={"20", "21"}, query_texts={"5": "automatic indexing of titles and abstracts"})
    verdict = status(load_config(conf))
    details = {s.step: s.detail for s in verdict.steps}
    assert details["retrieve"] == ("retrieve: 4 of 33 queries to do (3 new, 1 changed text; 29 up to date, "
                                   "2 left the split and are removed)")
    assert details["rerank"].startswith("rerank: after retrieve")
    with caplog.at_level(logging.INFO):
        retrieve(load_config(conf), progress=False)
        rerank(load_config(conf), progress=False)
    assert "retrieve: 4 of 33 queries to do (3 new, 1 changed text; 29 up to date, 2 left" in caplog.text
    assert "rerank: 4 of 33 queries to do (3 new, 1 changed candidates; 29 up to date, 2 left" in caplog.text
    assert status(load_config(conf)).up_to_date
    after = outputs(work)
    kept = {q for q in before["runs"]["listcon"] if q not in {"5", "20", "21"}}
    for name in ("candidates", "rankings"):  # the rows of the queries nobody touched: as they were, bit for bit
        assert rows_of(after["tables"][name], kept).equals(rows_of(before["tables"][name], kept)), name
    assert not {"20", "21"} & set(after["runs"]["listcon"])

    # a first-stage run gone: status and retrieve agree that every query is redone
    dense = Workdir(work).run("test", "dense")
    dense.unlink()
    verdict = {s.step: s.detail for s in status(load_config(conf)).steps}
    assert verdict["retrieve"] == f"retrieve: all 33 queries to do ({dense} is missing)"
    assert retrieve(load_config(conf), progress=False).computed == 33 and dense.is_file()

    scratch = tmp_path / "scratch"
    pipeline(config_file(tmp_path / "scratch.toml", data, scratch, head))
    assert_same(outputs(work), outputs(scratch))


def test_changed_new_and_removed_passages_end_as_a_run_from_scratch(tmp_path, head, ray_session, caplog):
    data, work = tmp_path / "adi", tmp_path / "w"
    collection(data)
    conf = config_file(tmp_path / "job.toml", data, work, head)
    pipeline(conf)
    gone = {"80", "81"}
    collection(data, remove=gone, passages={
        "17": "computer processing of titles: an indexing system for technical reports",
        "new-1": "descriptive titles and their automatic retrieval from approximate titles",
    })
    verdict = {s.step: s for s in status(load_config(conf)).steps}
    assert verdict["embed"].detail == "embed: 2 passages to encode, 2 to remove (1 new, 1 changed, 2 removed)"
    assert not verdict["index"].up_to_date and not verdict["rerank"].up_to_date
    with caplog.at_level(logging.INFO):
        pipeline(conf)
    assert status(load_config(conf)).up_to_date
    after = outputs(work)
    for name, table in after["tables"].items():
        assert not gone & set(table["passage_id"].to_pylist()), name
    for name, run in after["runs"].items():
        assert not gone & {p for scores in run.values() for p in scores}, name
    assert any("new-1" in scores for scores in after["runs"][FIRST_STAGE_RUN].values())

    scratch = tmp_path / "scratch"
    pipeline(config_file(tmp_path / "scratch.toml", data, scratch, head))
    assert_same(after, outputs(scratch))


def test_a_killed_incremental_rerank_resumes_to_a_run_from_scratch(tmp_path, head, ray_session):
    data, work = tmp_path / "adi", tmp_path / "w"
    collection(data, drop_queries={str(q) for q in range(1, 11)})
    conf = config_file(tmp_path / "job.toml", data, work, head, shard_size=1)
    pipeline(conf)
    collection(data)  # ten queries more: ten one-query shards on Ray
    retrieve(load_config(conf), progress=False)
    shards = Path(Workdir(work).shards("test", "listcon"))
    result = kill_when([*CLI, "rerank", "--config", str(conf), "--no-progress"],
                       lambda: shards.is_dir() and any(shards.glob("*/shard-*.parquet")), ENV, timeout=300)
    assert result is not None, "the rerank finished before it could be killed"
    assert result[0] == -9
    rerank(load_config(conf), progress=False)
    assert not shards.exists()

    scratch = tmp_path / "scratch"
    pipeline(config_file(tmp_path / "scratch.toml", data, scratch, head, shard_size=1))
    assert_same(outputs(work), outputs(scratch))


def test_status_starts_no_ray_and_loads_no_model(tmp_path, head, ray_session):
    data, work = tmp_path / "adi", tmp_path / "w"
    collection(data)
    conf = config_file(tmp_path / "job.toml", data, work, head)
    pipeline(conf)
    probe = ("import sys, json; from listcon.jobs.cli import main; code = main(['status', sys.argv[1], '--json']); "
             "heavy = sorted(m for m in ('ray', 'torch', 'transformers', 'onnxruntime') if m in sys.modules); "
             "print(json.dumps({'code': code, 'heavy': heavy}))")
    done = subprocess.run([sys.executable, "-c", probe, str(conf)], env=ENV, capture_output=True, text=True, check=True)
    report, last = done.stdout.rsplit("\n", 2)[0], json.loads(done.stdout.strip().splitlines()[-1])
    assert last == {"code": 0, "heavy": []}
    assert json.loads(report)["up_to_date"] is True
    shutil.copy(data / "queries.jsonl", tmp_path / "queries.jsonl")
    collection(data, query_texts={"1": "titles"})
    done = subprocess.run([*CLI, "status", str(conf)], env=ENV, capture_output=True, text=True)
    assert done.returncode == 1
    assert "stale  retrieve: 1 of 35 queries to do (1 changed text; 34 up to date)" in done.stdout
