"""The config tree: strict TOML loading, CLI flags onto the same fields, one-line errors."""

from __future__ import annotations

import logging
import os
import re
import tomllib

import pytest

from listcon.jobs.cli import build_parser, config_from_args, main
from listcon.jobs.config import Config, as_toml, config_from_dict, load_config
from listcon.jobs.runtime import setup_logging
from listcon.model import ListConRankerConfig, PruneSchedule
from listcon.schemas import ConfigError

BASE = 'data = "d"\nworkdir = "w"\n'


def load(tmp_path, text: str) -> Config:
    path = tmp_path / "c.toml"
    path.write_text(BASE + text)
    return load_config(path)


@pytest.mark.parametrize("text, message", [
    ("[rerenk]\ndepths = [20]\n", "unknown config key 'rerenk'; did you mean 'rerank'?"),
    ("[rerank]\ntheta = 20\n", "unknown config key 'rerank.theta'; valid keys: depths, model_dir, run_name, settings, shard_size, workers"),
    ("[train.settings]\nlr = \"fast\"\n", "config key 'train.settings.lr' expects a number, got 'fast'"),
    ("[retrieve]\nk = 1.5\n", "config key 'retrieve.k' expects an integer, got 1.5"),
    ("[embed]\nprune = 1\n", "config key 'embed.prune' expects true or false, got 1"),
    ("[train.settings]\nloss = \"circel\"\n",
     "config key 'train.settings.loss' must be one of circle, bce, triplet, cosent; got 'circel' (did you mean 'circle'?)"),
    ("[train.settings.head]\nattention = \"lists\"\n",
     "config key 'train.settings.head.attention' must be one of list, bidirectional, passage; got 'lists'"),
    ("[rerank.settings]\nprecision = \"int4\"\n", "config key 'rerank.settings.precision' must be one of auto, fp32, fp16, bf16"),
    ("[train.settings.head]\nsignal_input = false\n",
     "config key 'train.settings.head.signal_input' was retired in 2026-12: a head's signals enter its prior only"),
    ("[schedule]\nbeta = 0.0\n", "[schedule] beta must be a finite number above 0 and at most 1; got 0.0"),
    ("[train.settings]\nencoder_layers = 2\n",
     "[train.settings] encoder_layers = 2 applies to stage 2 (the encoder is trained); stage 1 trains the head on "
     "cached features: set stage = 2 or drop it"),
        ("[train.settings]\nlr = nan\n", "[train.settings] lr must be a finite number at least 0; got nan"),
        ("[retrieve]\nrrf_k = -60\n", "[retrieve] rrf_k must be an integer at least 0; got -60"),
        ("[ray]\nobject_store_mb = 1\n", "ray.object_store_mb must be an integer at least 80; got 1"),
])
def test_bad_config_values_are_one_line_errors_naming_the_key(tmp_path, text, message):
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_the_cli_reports_a_config_typo_in_one_line_and_writes_nothing(tmp_path, caplog):
    path = tmp_path / "c.toml"
    path.write_text(f'data = "d"\nworkdir = "{tmp_path / "w"}"\n[rerenk]\ndepths = [20]\n')
    with caplog.at_level(logging.ERROR):
        assert main(["run", str(path)]) == 2
    assert [r.getMessage() for r in caplog.records] == ["unknown config key 'rerenk'; did you mean 'rerank'?"]
    assert not (tmp_path / "w").exists()
    path.write_text('workdir = "w"\n')
    with caplog.at_level(logging.ERROR):
        assert main(["run", str(path)]) == 2
    assert "must name `data`" in caplog.text


def test_verbose_shows_the_traceback(tmp_path, caplog):
    missing = str(tmp_path / "nowhere")
    with caplog.at_level(logging.ERROR):
        assert main(["evaluate", missing, "--workdir", str(tmp_path / "w"), "-v"]) == 2
    assert caplog.records[-1].exc_info is not None
    caplog.clear()
    with caplog.at_level(logging.ERROR):
        assert main(["evaluate", missing, "--workdir", str(tmp_path / "w")]) == 2
    assert caplog.records[-1].exc_info is None and "no runs for split 'test'" in caplog.records[-1].getMessage()


def test_the_resolved_tree_prints_as_toml_that_loads_back(tmp_path):
    config = load(tmp_path, "[train.settings]\nlr = 3e-3\nhead = { first_stage_prior = true }\n[rerank]\ndepths = [20, 50]\n")
    text = as_toml(config)
    assert "[train.settings.head]" in text and "first_stage_prior = true" in text and "# model = (unset)" in text
    assert config_from_dict(tomllib.loads(text)) == config
    assert config.train.settings.head == ListConRankerConfig(first_stage_prior=True)
    assert config.rerank.depths == (20, 50)


def test_cli_flags_land_on_the_same_fields_as_toml(tmp_path):
    args = build_parser().parse_args(["rerank", "D", "--workdir", "W", "--theta", "30", "--precision", "fp32",
                                      "--depth", "100", "--ray-address", "127.0.0.1:6379", "--skip-missing"])
    config = config_from_args(args)
    assert config.schedule == PruneSchedule(theta=30)
    assert config.rerank.settings.depth == 100 and config.rerank.settings.skip_missing
    assert config.rerank.settings.precision == "fp32" and config.ray.address == "127.0.0.1:6379"
    base = tmp_path / "base.toml"
    base.write_text(BASE + "[schedule]\nbeta = 0.5\ntheta = 40\n")
    config = config_from_args(build_parser().parse_args(["train", "--config", str(base), "--theta", "25", "--split", "dev",
                                                         "--lr", "0.01", "--first-stage-prior"]))
    assert config.schedule == PruneSchedule(theta=25, beta=0.5) and config.data == "d"
    assert config.train.split == "dev" and config.split == "test"
    assert config.train.settings.lr == 0.01 and config.train.settings.head.first_stage_prior


def test_cli_choices_come_from_the_model(caplog):
    with pytest.raises(SystemExit) as stopped:
        build_parser().parse_args(["train", "D", "--workdir", "W", "--loss", "hinge"])
    assert stopped.value.code == 2  # a usage error is one log line, like any bad input
    assert "argument --loss: invalid choice: 'hinge' (choose from 'circle', 'bce', 'triplet', 'cosent')" in caplog.text


def test_every_step_takes_a_ray_address():
    parser = build_parser()
    for command in ("embed", "index", "retrieve", "mine", "train", "rerank", "evaluate"):
        args = parser.parse_args([command, *(["D"] if command not in ("index",) else []), "--workdir", "W",
                                  "--ray-address", "auto"])
        assert config_from_args(args).ray.address == "auto"


def test_the_library_leaves_hub_access_to_the_user(monkeypatch):
    """Setting up listcon's logging must not switch the Hugging Face Hub off (a hub id must stay usable)."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    setup_logging()
    assert "HF_HUB_OFFLINE" not in os.environ


def test_records_built_in_code_refuse_the_values_toml_and_flags_refuse():
    """One range per field, declared beside its default: the Python API meets the same rule as TOML and flags."""
    from listcon.pipeline.retrieval.lexical import LexicalSpec
    from listcon.pipeline.training.loop import TrainSettings

    for make, message in ((lambda: TrainSettings(lr=float("nan")), "lr must be a finite number at least 0; got nan"),
                          (lambda: LexicalSpec(k1=-1.0), "k1 must be a finite number at least 0; got -1.0"),
                          (lambda: PruneSchedule(theta=0), "theta must be an integer at least 1; got 0")):
        with pytest.raises(ConfigError, match=re.escape(message)):
            make()


def test_the_committed_reference_is_the_config_tree():
    """docs/reference.md is generated from the fields (python -m listcon.jobs.reference); it must not drift."""
    from pathlib import Path

    from listcon.jobs.reference import render

    page = Path(__file__).resolve().parents[1] / "docs" / "reference.md"
    assert page.read_text() == render(), "docs/reference.md is stale: python -m listcon.jobs.reference > docs/reference.md"
    assert "| `lr` | `--lr` (train) | `float` | `0.001` | at least 0 |" in page.read_text()
