"""The mine/train jobs through Ray Train, and `listcon run` end to end (rerun = no-op)."""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import asdict, replace

import lance
import pytest

from conftest import adi_job, data_dir

from listcon.jobs.cli import main
from listcon.jobs.config import Config, TrainOptions
from listcon.jobs.train_job import TrainResult, train
from listcon.model import ListConRanker, ListConRankerConfig
from listcon.model.head_config import CheckpointError
from listcon.pipeline.data.readers import read_qrels
from listcon.pipeline.evaluation.evaluate import paired_test
from listcon.pipeline.store.embedding_cache import EmbeddingCache
from listcon.pipeline.store.query_provenance import condensed
from listcon.pipeline.store.ranked_lists import read_provenance
from listcon.pipeline.store.workdir import Workdir
from listcon.pipeline.heads.domain import corpus_digest, read_domain
from listcon.pipeline.training.loop import TrainSettings


@pytest.fixture(scope="module")
def adi_work(adi_embedded, tmp_path_factory):
    """A private copy of the embedded adi workdir (these tests add tables to it)."""
    work = tmp_path_factory.mktemp("adi-jobs") / "w"
    shutil.copytree(adi_embedded, work)
    return work


def test_mine_then_train_on_two_ray_train_workers(adi_work, ray_session, tmp_path, caplog):
    data = str(data_dir("adi"))
    common = ["--workdir", str(adi_work), "--split", "test"]
    assert main(["mine", data, *common, "--holdout-fraction", "0.3"]) == 0
    out = tmp_path / "head"
    args = ["train", data, *common, "--out", str(out), "--epochs", "2", "--first-stage-prior", "--num-workers", "2"]
    assert main(args) == 0
    result = json.loads((out / "train_result.json").read_text())
    assert [h["epoch"] for h in result["history"]] == [0, 1, 2]  # epoch 0: the head before training
    assert result["examples_per_s"] > 0
    assert ListConRanker.from_pretrained(out).config.first_stage_prior
    # the workers trained on their own disks; the head arrived through Ray Train's checkpoint storage
    [run] = (out / "ray").glob("listcon-train-*")
    assert sorted(run.glob("checkpoint_*")) and (out / "checkpoints" / "epoch-0002" / "state.json").is_file()
    # In-process and Ray Train training end in the same record, field for field.
    config = Config(data=data, workdir=str(adi_work), train=TrainOptions(
        split="test", out=str(tmp_path / "here"), settings=TrainSettings(epochs=2, head=ListConRankerConfig(first_stage_prior=True))))
    here = train(config)
    on_ray = train(replace(config, train=replace(config.train, out=str(out), num_workers=2)))
    assert type(here) is type(on_ray) is TrainResult and on_ray.up_to_date and not here.up_to_date
    assert {k for k, v in asdict(here).items() if v is None} == {k for k, v in asdict(on_ray).items() if v is None} == set()
    assert [h["epoch"] for h in here.history] == [h["epoch"] for h in on_ray.history] == [0, 1, 2]
    with caplog.at_level(logging.INFO):
        assert main(args) == 0
    assert "already holds this training's result" in caplog.text
    # its config line names the training lists' per-query maps by a digest, not query by query
    [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("train config")]
    lists = read_provenance(Workdir(adi_work).training("test"))
    assert json.loads(line.split("): ", 1)[1])["training"] == [condensed(lists)]
    assert f"{len(lists['candidates']['query_keys'])} queries, sha256 " in line and len(line) < 5000
    caplog.clear()
    # recorded before `signal_input` was retired (its default was on; without signals it changed nothing):
    # the same training, still loadable; a head that relied on it is refused in one line
    # and before the stage-2 options that followed it were added (a recorded training lacks them: their defaults)
    recorded = json.loads((out / "train_result.json").read_text())
    recorded["provenance"]["settings"]["head"]["signal_input"] = True
    for added in ("encoder_layers", "passage_tokens"):
        del recorded["provenance"]["settings"][added]
    (out / "train_result.json").write_text(json.dumps(recorded))
    written = (out / "config.json").read_bytes()
    saved = json.loads(written)
    (out / "config.json").write_text(json.dumps({**saved, "signal_input": True}))
    with caplog.at_level(logging.INFO):
        assert main(args) == 0
    assert "already holds this training's result" in caplog.text
    assert ListConRanker.from_pretrained(out).config == ListConRankerConfig.from_dict(
        {k: v for k, v in saved.items() if k != "format"})
    (out / "config.json").write_text(json.dumps({**saved, "signal_input": True, "signals": ["fused"]}))
    with pytest.raises(CheckpointError, match=r"signal_input = true\), which listcon no longer runs .*; retrain it$"):
        ListConRanker.from_pretrained(out)
    (out / "config.json").write_bytes(written)
    caplog.clear()
    with caplog.at_level(logging.INFO):  # other settings: the old checkpoints must not be resumed
        assert main([*args[:-2], "--num-workers", "0", "--lr", "0.01"]) == 0
    assert "checkpoints of another configuration; starting over" in caplog.text
    assert json.loads((out / "train_result.json").read_text())["provenance"]["settings"]["lr"] == 0.01


def test_mining_leaves_out_judged_passages_without_cached_features(adi_embedded, tmp_path, caplog):
    work = Workdir(shutil.copytree(adi_embedded, tmp_path / "w"))
    qrels = read_qrels(str(data_dir("adi")), "test")
    gone = sorted(set(qrels["passage_id"].to_pylist()))[:3]  # as if skipped for empty text
    EmbeddingCache(work.passages).delete(gone)
    with caplog.at_level(logging.WARNING):
        assert main(["mine", str(data_dir("adi")), "--workdir", str(work.root), "--split", "test"]) == 0
    assert f"3 judged or candidate passage(s) are not in the passage cache and go in no list, e.g. {gone}" in caplog.text
    lists = lance.dataset(work.training("test")).to_table()
    assert lists.num_rows > 0
    assert not set(gone) & {p for ids in lists["passage_ids"].to_pylist() for p in ids}


def test_run_config_end_to_end_then_a_rerun_changes_nothing(adi_work, ray_session, tmp_path, caplog):
    config = tmp_path / "adi.toml"
    config.write_text(adi_job(adi_work, top="[adapt]\nenabled = true\npseudo_queries = 40\n"))
    assert main(["run", str(config)]) == 0
    work = Workdir(adi_work)
    metrics = json.loads((work.reports("test") / "metrics.json").read_text())
    assert set(metrics["runs"]) == {"first_stage", "dense", "lexical", "hybrid-rrf", "hybrid-convex"} | {"listcon", "listcon-top20"}
    # the head records its domain: this corpus, and whether its best epoch beat the anchor on it;
    # the rerank applied the learned part exactly when it did
    result = json.loads((adi_work / "head" / "train_result.json").read_text())
    by_epoch = {r["epoch"]: r["val_queries"]["main"] for r in result["history"]}
    domain = read_domain(adi_work / "head")
    assert list(domain) == [corpus_digest(work)] and domain[corpus_digest(work)]["name"] == "main"
    best, anchor = by_epoch[result["best_epoch"]], by_epoch[0]
    helps = (result["best_epoch"] > 0 and sum(best.values()) > sum(anchor.values())
             and paired_test(best, anchor, alternative="greater") < 0.05)
    assert domain[corpus_digest(work)]["learned_helps"] is helps
    assert read_provenance(work.rankings("test"))["learned_part"] is helps
    # [adapt] enabled: the run chose the corpus's fusion before reranking, which ranks by it where the learned part is off
    adapted = json.loads((adi_work / "adaptation.json").read_text())["choice"]
    assert adapted["queries"] == 40
    uses = not helps and adapted["dense_weight"] is not None
    assert ("adapted_fusion" in read_provenance(work.rankings("test"))) is uses
    tables = [work.passages, work.queries, work.candidates("test"), work.rankings("test"), work.training("test")]
    versions = [lance.dataset(t).version for t in tables]
    with caplog.at_level(logging.INFO):
        assert main(["run", str(config)]) == 0
    assert [lance.dataset(t).version for t in tables] == versions
    assert "nothing to do" in caplog.text and "to encode" in caplog.text and "adaptation.json is up to date" in caplog.text


def test_download_without_a_network_says_what_to_do(tmp_path, caplog):
    with caplog.at_level(logging.ERROR):
        code = main(["data", "download", "scifact", "--to", str(tmp_path)])
    if code == 0:
        pytest.skip("this machine reaches the BEIR mirror")
    assert "could not download" in caplog.text and "copy a BEIR directory" in caplog.text
