"""Mining and training: reproducible lists, a loop that learns, resume == uninterrupted, Ray Train, stage 2."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import numpy as np
import pyarrow as pa
import pytest
import torch
from safetensors.torch import load_file

from conftest import data_dir
from listcon.jobs.cli import main as cli
from listcon.model import ListConRanker, TextEncoder
from listcon.pipeline.training.mining import MiningSettings, mine
from listcon.model import ListConRankerConfig, PruneSchedule
from listcon.pipeline.heads.features import head_encoder
from listcon.pipeline.training.data import Source, load_training
from listcon.pipeline.training.features import CachedFeatures, EncodedFeatures, Lists, Validation
from listcon.pipeline.training.loop import TrainSettings, domain_verdicts, fit, gated, records_domain, starts_as_anchor
from listcon.schemas import CANDIDATES, QRELS, TRAINING_LISTS

HEAD = ListConRankerConfig(hidden_size=16, num_heads=2, ffn_size=32, num_layers=1)
SCHEDULE = PruneSchedule(theta=5, min_drop=2)


def candidates_table(queries: int = 6, depth: int = 40) -> pa.Table:
    rows = [{"query_id": f"q{i}", "passage_id": f"p{(i * 7 + r) % 100}", "rank": r + 1, "score": 1.0 - r / depth,
             "dense_score": 1.0 - r / depth, "dense_rank": r + 1, "lexical_score": 0.0, "lexical_rank": depth + 1}
            for i in range(queries) for r in range(depth)]
    return pa.Table.from_pylist(rows, schema=CANDIDATES)


def qrels_table(queries: int = 6) -> pa.Table:
    rows = [{"query_id": f"q{i}", "passage_id": f"p{(i * 7 + 3) % 100}", "relevance": 1} for i in range(queries)]
    rows += [{"query_id": "q0", "passage_id": f"p{k}", "relevance": 2} for k in (90, 91, 92, 93, 94, 95)]
    return pa.Table.from_pylist(rows, schema=QRELS)


def test_mining_is_reproducible_and_respects_the_settings():
    settings = MiningSettings(list_size=10, max_positives=4, depth=20, seed=3, holdout_fraction=0.5)
    table = mine(candidates_table(), qrels_table(), settings)
    assert table.schema == TRAINING_LISTS and table.num_rows == 6
    again = mine(candidates_table(), qrels_table(), settings)
    assert table.drop_columns(["signals"]).equals(again.drop_columns(["signals"]))  # no signal source: all NaN
    assert np.isnan(np.array(again["signals"].to_pylist()[0])).all()
    other = mine(candidates_table(), qrels_table(), MiningSettings(list_size=10, max_positives=4, depth=20, seed=4))
    assert other["passage_ids"].to_pylist() != table["passage_ids"].to_pylist()
    depth_pool = candidates_table().filter(pa.compute.less_equal(pa.compute.field("rank"), 20))
    for row in table.to_pylist():
        positives = [p for p, y in zip(row["passage_ids"], row["labels"]) if y > 0]
        negatives = [p for p, y in zip(row["passage_ids"], row["labels"]) if y == 0]
        judged = {r["passage_id"] for r in qrels_table().to_pylist() if r["query_id"] == row["query_id"]}
        pool = {r["passage_id"] for r in depth_pool.to_pylist() if r["query_id"] == row["query_id"]}
        assert len(row["passage_ids"]) == 10 and 1 <= len(positives) <= 4
        assert set(negatives) <= pool - judged
    assert sum(table["holdout"].to_pylist()) not in (0, 6)
    top = mine(candidates_table(), qrels_table(), MiningSettings(list_size=10, depth=20, sampling="top"))
    first = top.to_pylist()[1]
    ranked = [r["passage_id"] for r in candidates_table().to_pylist() if r["query_id"] == first["query_id"]]
    assert first["passage_ids"][1:] == [p for p in ranked if p != "p10"][:9]


class Cache:
    """An in-memory stand-in for EmbeddingCache.take (features for CachedFeatures)."""

    def __init__(self, vectors: dict[str, np.ndarray]) -> None:
        self.vectors = vectors

    def take(self, ids):
        return np.stack([self.vectors[i] for i in ids]).astype(np.float32)


def synthetic(queries: int = 200, per_list: int = 12, dim: int = 16, seed: int = 0):
    """Positives are noisy copies of the query; negatives random: a head can learn this."""
    rng = np.random.default_rng(seed)
    qv, pv, lists, labels, qrels, val_lists = {}, {}, [], [], [], []
    for i in range(queries):
        q = rng.standard_normal(dim)
        qv[f"q{i}"] = q
        ids = []
        for j in range(per_list):
            pid = f"q{i}-p{j}"
            pv[pid] = q + 1.5 * rng.standard_normal(dim) if j == 0 else rng.standard_normal(dim)
            ids.append(pid)
        order = rng.permutation(per_list)
        ids = [ids[k] for k in order]
        lists.append(ids)
        labels.append([1 if p.endswith("-p0") else 0 for p in ids])
        qrels.append({"query_id": f"q{i}", "passage_id": f"q{i}-p0", "relevance": 1})
        val_lists.append((f"q{i}", ids))
    features = CachedFeatures(Cache(pv), Cache(qv), list(pv), list(qv))
    cut = queries - 20
    train = Lists([f"q{i}" for i in range(cut)], lists[:cut], labels[:cut])
    validation = Validation(val_lists[cut:], pa.Table.from_pylist(qrels[cut:], schema=QRELS))
    return train, validation, features


def settings(**overrides) -> TrainSettings:
    base = dict(epochs=3, batch_size=8, lr=1e-2, patience=5, head=HEAD)
    base.update(overrides)
    return TrainSettings(**base)


def weights(directory) -> dict[str, torch.Tensor]:
    return load_file(str(directory / "model.safetensors"))


def test_the_loop_learns_and_keeps_the_best_epoch(tmp_path):
    train, validation, features = synthetic()
    result = fit(train, validation, features, settings(epochs=6), tmp_path / "out", schedule=SCHEDULE)
    assert result.best_metric > 0.9
    assert result.best_epoch == max(range(7), key=lambda e: (result.history[e]["val_ndcg@10"], -e))
    assert result.history[0]["epoch"] == 0 and result.best_epoch > 0
    saved = json.loads((tmp_path / "out" / "train_settings.json").read_text())
    assert saved["loss"] == "circle" and ListConRanker.from_pretrained(tmp_path / "out").config.hidden_size == 16


@pytest.mark.parametrize("loss", ["bce", "triplet", "cosent"])
def test_every_ablation_loss_trains(tmp_path, loss):
    train, validation, features = synthetic()
    result = fit(train, validation, features, settings(epochs=4, loss=loss), tmp_path / loss, schedule=SCHEDULE)
    assert result.best_metric > 0.8


def test_same_seed_same_weights_and_resume_equals_uninterrupted(tmp_path):
    train, validation, features = synthetic()
    fit(train, validation, features, settings(), tmp_path / "a", schedule=SCHEDULE)
    fit(train, validation, features, settings(), tmp_path / "b", schedule=SCHEDULE)
    a = load_file(str(next((tmp_path / "a" / "checkpoints").glob("epoch-*")) / "module.safetensors"))
    b = load_file(str(next((tmp_path / "b" / "checkpoints").glob("epoch-*")) / "module.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)

    class Killed(Exception):
        pass

    def die_after_two(record):
        if record["epoch"] == 2:
            raise Killed

    with pytest.raises(Killed):
        fit(train, validation, features, settings(), tmp_path / "c", on_epoch=die_after_two, schedule=SCHEDULE)
    assert [p.name for p in (tmp_path / "c" / "checkpoints").glob("epoch-*")] == ["epoch-0002"]
    result = fit(train, validation, features, settings(), tmp_path / "c", schedule=SCHEDULE)
    c = load_file(str(next((tmp_path / "c" / "checkpoints").glob("epoch-*")) / "module.safetensors"))
    assert all(torch.equal(a[k], c[k]) for k in a)
    assert [h["epoch"] for h in result.history] == [0, 1, 2, 3]


def word_lists(steps: tuple[int, ...], tail: tuple[str, ...] = ()) -> tuple[dict[str, str], dict[str, str], Lists]:
    """30 passages of the tiny BERT's words (passage i: word i*k for each k of ``steps``, then ``tail``), 6
    one-word queries, and a list of 8 per query (its first relevant)."""
    words = "cell protein gene cancer blood heart lung liver brain drug".split()
    passages = {f"p{i}": " ".join([*(words[(i * k) % 10] for k in steps), *tail]) for i in range(30)}
    queries = {f"q{i}": words[i % 10] for i in range(6)}
    lists = Lists(list(queries), [[f"p{(i + k) % 30}" for k in range(8)] for i in range(6)], [[1] + [0] * 7 for _ in range(6)])
    return passages, queries, lists


def test_stage_two_trains_the_encoder_end_to_end(tiny_bert_dir, tmp_path):
    encoder = TextEncoder(tiny_bert_dir, max_length=48)
    before = {k: v.clone() for k, v in encoder.model.state_dict().items()}
    passages, queries, lists = word_lists((1, 3), ("study",))
    val = Validation([("q5", [f"p{k}" for k in range(10)])],
                     pa.Table.from_pylist([{"query_id": "q5", "passage_id": "p5", "relevance": 1}], schema=QRELS))
    features = EncodedFeatures(encoder, passages, queries)
    result = fit(lists, val, features, settings(stage=2, epochs=1, batch_size=3, head=replace(HEAD, num_heads=4)),
                 tmp_path / "e2e", schedule=SCHEDULE, encoder_info={"model": "encoder", "fingerprint": "the start's"})
    assert result.epochs_run == 1
    changed = [k for k, v in encoder.model.state_dict().items() if not torch.equal(v, before[k])]
    assert changed, "stage 2 must update the encoder"
    # The saved encoder is the best epoch's: the trained one, or the one before training (epoch 0).
    best = encoder.model.state_dict() if result.best_epoch == 1 else before
    reloaded = TextEncoder(tmp_path / "e2e" / "encoder")
    assert all(torch.equal(reloaded.model.state_dict()[k], best[k].cpu()) for k in best)
    assert reloaded.max_length == 48  # it embeds with the limit it was trained and validated with
    # the head's features come from that encoder: its record names it, by the fingerprint of its weights
    recorded = json.loads((tmp_path / "e2e" / "encoder.json").read_text())
    assert recorded["fingerprint"] == head_encoder(tmp_path / "e2e")["fingerprint"] == reloaded.fingerprint
    assert result.best_epoch == 0 or reloaded.fingerprint != TextEncoder(tiny_bert_dir).fingerprint


def test_stage_two_on_the_top_layers_trains_those_alone_on_cut_passages(tiny_bert_dir, tmp_path, capfd):
    """``encoder_layers = 1``: of the encoder, only its top layer moves; ``passage_tokens``: training sees
    the passages cut to that many tokens, validation their full text."""
    encoder = TextEncoder(tiny_bert_dir)
    before = {k: v.clone() for k, v in encoder.model.state_dict().items()}
    passages, queries, lists = word_lists(tuple(range(1, 9)))
    features = EncodedFeatures(encoder, passages, queries, passage_tokens=5)
    cut = encoder.tokenizer([passages[p] for p in lists.passages[0]], truncation=True, max_length=5)["input_ids"]
    assert features.inputs(lists.query_ids[:1], lists.passages[:1], torch.device("cpu"))["passage_ids"][0].tolist() == cut
    _, full = features.lists(["q0"], [["p1"]])
    np.testing.assert_array_equal(full[0], encoder.encode([passages["p1"]]))  # validation: the whole passage
    fit(lists, None, features, settings(stage=2, epochs=1, batch_size=3, encoder_layers=1, passage_tokens=5,
                                        encoder_lr=1e-2, head=replace(HEAD, num_heads=4)), tmp_path / "e2e",
        schedule=SCHEDULE)
    assert "Writing model shards" not in capfd.readouterr().err  # saving the encoder shows no third-party bar
    changed = {k for k, v in encoder.model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and all(k.startswith("encoder.layer.1.") for k in changed), sorted(changed)
    reloaded = TextEncoder(tmp_path / "e2e" / "encoder").model.state_dict()
    assert all(torch.equal(reloaded[k], v) for k, v in encoder.model.state_dict().items())
    with pytest.raises(ValueError, match="encoder_layers = 3, but encoder .* has 2 transformer layers"):
        encoder.top_layers(3)


def test_stage_two_keeps_the_tuned_encoder_only_where_its_learned_part_beats_the_start(tiny_bert_dir, tmp_path):
    """A head with an anchor falls back to it where its learned part is off; after stage 2 that anchor would be the
    tuned encoder's, which validation never measured. So an epoch replaces the start only by the domain's test:
    a better mean that is not significant keeps epoch 0, the encoder it started from."""
    passages, queries, lists = word_lists((1, 3), ("study",))
    qrels = pa.Table.from_pylist([{"query_id": q, "passage_id": c[0], "relevance": 1}
                                  for q, c in zip(lists.query_ids, lists.passages)], schema=QRELS)
    val = Validation([(q, sorted(c)) for q, c in zip(lists.query_ids, lists.passages)], qrels)
    runs = {}
    for alpha in (1.0, 1e-9):
        encoder = TextEncoder(tiny_bert_dir)
        runs[alpha] = fit(lists, val, EncodedFeatures(encoder, passages, queries),
                          settings(stage=2, epochs=1, batch_size=2, lr=3e-2, encoder_lr=1e-2, domain_alpha=alpha,
                                   head=replace(HEAD, num_heads=4, first_stage_prior=True)),
                          tmp_path / str(alpha), schedule=SCHEDULE, encoder_info={"model": "encoder"})
    history = [h["val_ndcg@10"] for h in runs[1.0].history]
    assert history[1] > history[0] and runs[1.0].best_epoch == 1  # the epoch beat the start in the mean
    assert runs[1e-9].best_epoch == 0  # ... not by the test: the start stays
    assert TextEncoder(tmp_path / "1e-09" / "encoder").fingerprint == TextEncoder(tiny_bert_dir).fingerprint


def test_without_held_out_queries_the_lowest_loss_epoch_is_saved(tmp_path):
    """holdout_fraction = 0 still produces a loadable head (the best epoch by training loss)."""
    train, _, features = synthetic()
    result = fit(train, None, features, settings(epochs=3), tmp_path / "out", schedule=SCHEDULE)
    losses = [h["loss"] for h in result.history]
    assert result.best_epoch == 1 + min(range(3), key=lambda e: (losses[e], e))
    assert all(h["val_ndcg@10"] is None for h in result.history)
    head = ListConRanker.from_pretrained(tmp_path / "out")
    assert head.config.hidden_size == 16


def test_training_leaves_the_callers_random_state_alone(tmp_path):
    train, validation, features = synthetic(queries=40)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    fit(train, validation, features, settings(epochs=1), tmp_path / "out", schedule=SCHEDULE)
    assert torch.equal(torch.get_rng_state(), before)


def test_a_run_that_never_beats_the_untrained_head_keeps_it(tmp_path):
    """Epoch 0 (the head before training) is a candidate: with nothing learned, it stays the best."""
    train, validation, features = synthetic(queries=60)
    result = fit(train, validation, features, settings(epochs=2, lr=0.0, head=replace(HEAD, dropout=0.0)),
                 tmp_path / "out", schedule=SCHEDULE)
    assert result.best_epoch == 0 and [h["epoch"] for h in result.history] == [0, 1, 2]
    assert len({h["val_ndcg@10"] for h in result.history}) == 1
    assert ListConRanker.from_pretrained(tmp_path / "out").config.hidden_size == 16


def test_the_learned_part_is_kept_only_on_collections_where_it_beat_the_anchor():
    history = [{"epoch": 0, "val_by_collection": {"main": 0.50, "cranfield": 0.40}},
               {"epoch": 1, "val_by_collection": {"main": 0.60, "cranfield": 0.30}},
               {"epoch": 2, "val_by_collection": {"main": 0.55, "cranfield": 0.45}}]
    anchor = history[0]["val_by_collection"]
    # an epoch counts, per collection, the better of the head and the anchor
    assert gated(history[1]["val_by_collection"], anchor) == pytest.approx((0.60 + 0.40) / 2)
    assert gated(history[2]["val_by_collection"], anchor) == pytest.approx((0.55 + 0.45) / 2)
    assert gated(history[1]["val_by_collection"], None) == pytest.approx((0.60 + 0.30) / 2)
    # each held-out query alike: 30 main queries, 10 cranfield ones
    sizes = {"main": 30, "cranfield": 10}
    assert gated(history[1]["val_by_collection"], anchor, sizes) == pytest.approx((30 * 0.60 + 10 * 0.40) / 40)
    assert gated(history[2]["val_by_collection"], anchor, sizes) == pytest.approx((30 * 0.55 + 10 * 0.45) / 40)
    assert gated(history[1]["val_by_collection"], None, sizes) == pytest.approx((30 * 0.60 + 10 * 0.30) / 40)


def test_a_collection_joins_the_domain_only_where_its_held_out_queries_show_the_gain():
    def queries(name, values):
        return {f"{name}{i}": v for i, v in enumerate(values)}

    anchor = {"main": queries("m", [0.5] * 30), "medline": queries("d", [0.5] * 5), "cranfield": queries("c", [0.4] * 10)}
    # main: every query up by 0.1 (+-0.02); medline: the mean up by 0.05 from one query (noise)
    head = {"main": queries("m", [0.6 + (0.02 if i % 2 else -0.02) for i in range(30)]),
            "medline": queries("d", [0.75, 0.5, 0.5, 0.5, 0.5]), "cranfield": queries("c", [0.3] * 10)}
    history = [{"epoch": 0, "val_queries": anchor}, {"epoch": 1, "val_queries": head}]
    verdicts = domain_verdicts(history, 1)
    assert {k: v["learned_helps"] for k, v in verdicts.items()} == {"main": True, "medline": False, "cranfield": False}
    assert verdicts["main"]["anchor"] == pytest.approx(0.5) and verdicts["main"]["head"] == pytest.approx(0.6)
    assert verdicts["main"]["p"] < 1e-10
    assert verdicts["medline"]["head"] == pytest.approx(0.55) and verdicts["medline"]["p"] == pytest.approx(0.1870, abs=1e-4)
    assert verdicts["cranfield"]["p"] == 1.0  # every query equally worse: the test is undefined
    # alpha 1 takes any gain in the mean; a loss never joins
    assert {k: v["learned_helps"] for k, v in domain_verdicts(history, 1, alpha=1.0).items()} == \
        {"main": True, "medline": True, "cranfield": False}
    # nothing learned was kept: epoch 0 is the anchor itself
    assert {k: (v["learned_helps"], v["head"]) for k, v in domain_verdicts(history, 0).items()} == \
        {"main": (False, 0.5), "medline": (False, 0.5), "cranfield": (False, pytest.approx(0.4))}
    with pytest.raises(ValueError, match=r"domain_alpha must be a finite number above 0 and at most 1; got 0.0"):
        settings(domain_alpha=0.0)


def test_a_head_starts_as_its_anchor_exactly_when_it_has_a_prior_and_no_init_checkpoint():
    signals = replace(HEAD, signals=("fused", "lexical"))
    assert starts_as_anchor(settings(head=signals)) and starts_as_anchor(settings(head=signals, stage=2))
    assert starts_as_anchor(settings(head=replace(HEAD, first_stage_prior=True)))
    assert not starts_as_anchor(settings(head=HEAD))  # the paper's head has no prior
    assert not starts_as_anchor(settings(head=signals, init="some/head"))  # starts where that head ended


def test_validation_weighs_the_held_out_queries_each_collection_has():
    qrels = pa.Table.from_pylist([], schema=QRELS)
    grouped = Validation([("a1", ["p1"]), ("a2", ["p2"]), ("b1", ["p3"]), ("b2", [])], qrels,
                         {"a1": "adi", "a2": "adi", "b1": "main", "b2": "main"})
    assert grouped.sizes() == {"adi": 2, "main": 1}  # a query without candidates is not ranked
    assert Validation([("q", ["p"])], qrels).sizes() == {"main": 1}


def test_each_collection_gives_at_most_its_share_of_training_queries_drawn_by_seed(adi_embedded, tmp_path):
    """``queries_per_source``: a seeded draw of each source's mined training lists, validation untouched."""
    data = str(data_dir("adi"))
    sources = []
    for name in ("", "again"):  # the same collection twice: two sources of equal size
        work = shutil.copytree(adi_embedded, tmp_path / (name or "main"))
        assert cli(["mine", data, "--workdir", str(work), "--split", "test", "--no-progress"]) == 0
        sources.append(Source(name, data, str(work), "test"))
    load = lambda **kw: load_training(sources[0], sources[1:], TrainSettings(val_depth=20, **kw))  # noqa: E731
    whole, capped, same, other = load(), load(queries_per_source=5), load(queries_per_source=5), load(queries_per_source=5, seed=1)
    by_source = lambda lists: [sorted(q for q in lists.query_ids if q.startswith("again/") == again)  # noqa: E731
                               for again in (False, True)]
    assert [len(q) for q in by_source(capped.lists)] == [5, 5] and len(whole.lists) > 20
    assert capped.lists == same.lists and by_source(other.lists) != by_source(capped.lists)
    kept = {q: (p, l) for q, p, l in zip(whole.lists.query_ids, whole.lists.passages, whole.lists.labels)}
    assert all(kept[q] == (p, l) for q, p, l in zip(capped.lists.query_ids, capped.lists.passages, capped.lists.labels))
    assert capped.validation.lists == whole.validation.lists  # only training is capped


def test_a_head_fine_tuned_from_another_is_judged_against_its_anchor_ranked_apart(tmp_path):
    """Fine-tuning (``init``) starts from a trained head, so epoch 0 is not the anchor: the anchor is ranked on the
    held-out queries apart, and equals epoch 0 of the training from scratch (which ranks exactly as its anchor).
    The domain's verdicts are against it, so the fine-tuned head keeps a domain, even where epoch 0 stays best."""
    train, validation, features = synthetic()
    prior = settings(epochs=4, head=replace(HEAD, first_stage_prior=True))
    start = fit(train, validation, features, prior, tmp_path / "start", schedule=SCHEDULE)
    assert start.best_epoch > 0 and "anchor_queries" not in start.history[0]
    for lr, out in ((1e-3, "tuned"), (0.0, "unchanged")):
        tuned = fit(train, validation, features, replace(prior, epochs=1, lr=lr, init=str(tmp_path / "start")),
                    tmp_path / out, schedule=SCHEDULE)
        assert tuned.history[0]["anchor_queries"] == start.history[0]["val_queries"]
        assert tuned.history[0]["val_queries"] == start.history[start.best_epoch]["val_queries"]
        assert records_domain(replace(prior, init="start"), tuned.history) and not records_domain(
            replace(prior, init="start"), start.history[1:])
        verdict = domain_verdicts(tuned.history, tuned.best_epoch, alpha=1.0)["main"]  # 20 queries: any gain
        anchor, best = (start.history[0]["val_queries"]["main"],
                        tuned.history[tuned.best_epoch]["val_queries"]["main"])
        assert verdict["anchor"] == pytest.approx(np.mean(list(anchor.values())))
        assert verdict["head"] == pytest.approx(np.mean(list(best.values())))
        assert verdict["learned_helps"] == (np.mean(list(best.values())) > np.mean(list(anchor.values())))
    assert tuned.best_epoch == 0 and verdict["learned_helps"]  # lr 0: the head as given, its learned part kept
