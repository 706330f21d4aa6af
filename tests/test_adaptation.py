"""Self-supervised adaptation: pseudo-queries cut from a corpus's passages, the first stage over indexes that
hold each source passage without its query, and the rules that pick a fusion from them."""

from __future__ import annotations

import numpy as np
import pyarrow.compute as pc
import pytest

from conftest import data_dir
from listcon.pipeline.adaptation.fusion_choice import DEFAULT, DENSE_WEIGHTS, choose_fusion, fusion_name, pseudo_gains
from listcon.pipeline.adaptation.pseudo_lists import pseudo_candidates
from listcon.pipeline.adaptation.pseudo_queries import PseudoQuery, pseudo_queries
from listcon.pipeline.data.readers import read_corpus
from listcon.pipeline.encoding.settings import EncoderSettings
from listcon.pipeline.retrieval.lexical import LexicalIndex
from listcon.pipeline.store.embedding_cache import EmbeddingCache

IDS = ["two-sentences", "titled", "untitled", "short"]
TITLES = ["Heat transfer", "Cell biology", None, ""]
TEXTS = ["The first sentence has five words. A second sentence has six words here.",
         "Only one sentence about cells lives here",
         "alpha beta gamma delta epsilon zeta eta theta iota",
         "too short"]


def test_pseudo_queries_are_deterministic_by_seed_and_cut_from_their_passage():
    made = pseudo_queries(IDS, TITLES, TEXTS, count=10, seed=0)
    assert made == pseudo_queries(IDS, TITLES, TEXTS, count=10, seed=0)
    assert {q.passage_id: q.kind for q in made} == {"two-sentences": "sentence", "titled": "title", "untitled": "span"}
    for q in made:  # the query and the rest together are the passage's words, the query's taken out
        whole = ((TITLES[IDS.index(q.passage_id)] or "") + " " + TEXTS[IDS.index(q.passage_id)]).split()
        assert sorted(q.text.split() + q.rest.split()) == sorted(whole), q
        assert q.text not in q.rest
    by_id = {q.passage_id: q for q in made}
    assert by_id["titled"] == PseudoQuery("titled", "Cell biology", TEXTS[1], "title")
    assert by_id["two-sentences"].text in ("The first sentence has five words.", "A second sentence has six words here.")
    assert len(by_id["untitled"].text.split()) == 3  # a third of the nine words
    runs = {tuple(pseudo_queries(IDS, TITLES, TEXTS, count=10, seed=s)) for s in range(8)}
    assert len(runs) > 1  # the seed decides which sentence, which span and the order
    assert len(pseudo_queries(IDS, TITLES, TEXTS, count=2, seed=0)) == 2


def _gains(anchor: list[float], **fusions: list[float]) -> dict[str, dict[str, float]]:
    names = [fusion_name(w) for w in (0.0, 0.2, 0.35, 0.5, 0.65, 0.8, 1.0)]
    rows = {}
    for i, value in enumerate(anchor):
        rows[f"q{i}"] = {DEFAULT: value, **{n: fusions.get(n.replace(".", "_"), [0.0] * len(anchor))[i] for n in names}}
    return rows


def test_the_rules_keep_the_anchor_without_evidence_and_one_se_prefers_the_weight_nearest_the_default():
    flat = [0.5] * 40
    wobble = [0.5 + (0.1 if i % 2 else -0.1) for i in range(40)]
    # no fusion better than the anchor: both rules keep it
    same = _gains(flat, z0_5=wobble)
    assert choose_fusion(same, "significant").chosen == DEFAULT == choose_fusion(same, "one-se").chosen
    # z0.8 best by a clear margin, z0.65 within one standard error of it: significant takes the best,
    # one-se the weight nearer 0.5
    best = [0.7] * 40
    near = [0.7 - (0.1 if i % 2 else -0.08) for i in range(40)]
    clear = _gains(wobble, z0_8=best, z0_65=near, z0_5=[0.55] * 40)
    significant, one_se = choose_fusion(clear, "significant"), choose_fusion(clear, "one-se")
    assert (significant.chosen, significant.dense_weight, significant.best) == ("z0.8", 0.8, "z0.8")
    assert (one_se.chosen, one_se.dense_weight) == ("z0.65", 0.65)
    assert significant.p < 1e-10 and significant.gains["z0.65"] == pytest.approx(0.69)
    with pytest.raises(ValueError, match="fusion rule 'best': expected one of significant, one-se"):
        choose_fusion(clear, "best")


def test_pseudo_candidates_index_each_source_passage_without_its_query(adi_embedded):
    corpus = read_corpus(data_dir("adi"))
    ids, texts = corpus.table["id"].to_pylist(), corpus.texts()
    pseudo = pseudo_queries(ids, corpus.table["title"].to_pylist(), corpus.table["text"].to_pylist(), count=12, seed=3)
    passages = EmbeddingCache(adi_embedded / "passages.lance")
    cached_ids, vectors = passages.read_all()
    vectors = vectors[[cached_ids.index(p) for p in ids]]
    encoder = EncoderSettings().load("cpu")
    candidates, sources = pseudo_candidates(ids, texts, vectors, pseudo, encoder, passages, "cosine")
    again, _ = pseudo_candidates(ids, texts, vectors, pseudo, encoder, passages, "cosine")
    assert candidates.equals(again) and len(sources) == 12
    # the slow reference: BM25 over the corpus with every source passage shortened, cosine to the re-encoded rest
    shortened = list(texts)
    for q in pseudo:
        shortened[ids.index(q.passage_id)] = q.rest
    lexical = LexicalIndex.build(ids, shortened)
    unit = lambda v: v / np.linalg.norm(v, axis=-1, keepdims=True)  # noqa: E731
    rests = dict(zip((q.passage_id for q in pseudo), unit(encoder.encode([q.rest for q in pseudo]))))
    for (qid, source), q in zip(sources.items(), pseudo):
        rows = candidates.filter(pc.equal(candidates["query_id"], qid)).to_pylist()
        query = unit(encoder.encode([q.text])[0])
        for row in rows[:20]:
            p = row["passage_id"]
            expected = rests[p] if p in rests else unit(vectors[ids.index(p)])
            assert row["dense_score"] == pytest.approx(float(query @ expected), abs=1e-4), (qid, p)
            assert row["lexical_score"] == pytest.approx(float(lexical.scores(q.text, [p])[0]), rel=1e-5), (qid, p)
    gains = pseudo_gains(candidates, sources)
    assert set(gains) == set(sources) and choose_fusion(gains) == choose_fusion(pseudo_gains(again, sources))


def test_a_damaged_adaptation_record_is_refused_in_one_line(tmp_path):
    from listcon.pipeline.adaptation.record import ADAPTATION_FILE, read_adaptation
    from listcon.pipeline.store.workdir import Workdir

    work = Workdir(tmp_path)
    assert read_adaptation(work) is None
    (tmp_path / ADAPTATION_FILE).write_text('{"corpus": "abc"}')
    with pytest.raises(ValueError, match=r"adaptation.json is not a listcon adaptation record \(run `listcon adapt` "
                                         r"again\): KeyError\('choice'\)"):
        read_adaptation(work)


def test_adapt_without_a_cache_says_what_to_run_first(tmp_path, caplog):
    from listcon.jobs.cli import main

    assert main(["adapt", str(data_dir("adi")), "--workdir", str(tmp_path / "empty"), "--no-progress"]) == 2
    assert "adapt needs the passage cache and both indexes" in caplog.text and "run `listcon embed" in caplog.text


def test_the_shipped_weights_keep_both_sides_and_the_edges_are_chosen_only_when_offered():
    """Pure dense (or pure BM25) best on the pseudo-queries by far: the shipped grid stops a fifth short of it."""
    anchor = [0.3 + (0.05 if i % 2 else -0.05) for i in range(40)]
    dense_only = _gains(anchor, z1=[0.9] * 40, z0_8=[0.6] * 40, z0_65=[0.4] * 40)
    assert 0.0 not in DENSE_WEIGHTS and 1.0 not in DENSE_WEIGHTS and min(DENSE_WEIGHTS) == pytest.approx(1 - max(DENSE_WEIGHTS))
    for rule in ("one-se", "significant"):
        shipped = choose_fusion(dense_only, rule)
        assert (shipped.chosen, shipped.dense_weight, shipped.best) == ("z0.8", 0.8, "z0.8")
        assert set(shipped.gains) == {DEFAULT, *map(fusion_name, DENSE_WEIGHTS)}
        edges = choose_fusion(dense_only, rule, (0.0, *DENSE_WEIGHTS, 1.0))
        assert (edges.chosen, edges.dense_weight) == ("z1", 1.0)


def test_adapt_init_fine_tunes_the_head_on_pseudo_queries_from_the_corpus_alone(adi_embedded, tmp_path, caplog):
    """`listcon adapt --init HEAD` trains from HEAD on a collection made of the corpus's pseudo-queries: every passage
    as the corpus has it but the sources, each shortened to the rest its pseudo-query was cut from and judged relevant
    to it. Garbled queries and qrels give the same head, byte for byte; a rerun does nothing."""
    import json
    import logging
    import shutil
    from pathlib import Path

    import torch

    from listcon.jobs.cli import main
    from listcon.jobs.config import load_config
    from listcon.model import ListConRanker
    from listcon.pipeline.data.readers import read_qrels, read_queries
    from listcon.pipeline.heads.directory import ENCODER_FILE

    torch.manual_seed(5)
    head = ListConRanker(load_config(Path(__file__).resolve().parents[1] / "jobs" / "demo.toml").train.settings.head)
    head.save_pretrained(tmp_path / "head")
    (tmp_path / "head" / ENCODER_FILE).write_text(json.dumps(EmbeddingCache(adi_embedded / "passages.lance").metadata))
    garbled = Path(shutil.copytree(data_dir("adi"), tmp_path / "adi-garbled"))
    (garbled / "queries.jsonl").write_text("".join(json.dumps({"_id": f"g{i}", "text": f"nothing {i}"}) + "\n"
                                                   for i in range(5)))
    (garbled / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\ng0\t1\t1\n")
    adapt = ["--init", str(tmp_path / "head"), "--epochs", "2", "--pseudo-queries", "30", "--no-progress"]
    weights = []
    for i, data in enumerate((garbled, data_dir("adi"))):
        work = shutil.copytree(adi_embedded, tmp_path / f"work-{i}")
        assert main(["adapt", str(data), "--workdir", str(work), *adapt]) == 0
        weights.append((work / "adaptation" / "head" / "model.safetensors").read_bytes())
    assert weights[0] == weights[1]
    # its domain is the pseudo collection's, never the target's: there the adapted fusion ranks, not its learned part
    from listcon.pipeline.adaptation.record import adapted_fusion
    from listcon.pipeline.heads.domain import corpus_digest, read_domain
    from listcon.pipeline.heads.rule import rerank_rule
    from listcon.pipeline.store.workdir import Workdir

    tuned = work / "adaptation" / "head"
    assert list(read_domain(tuned)) == [corpus_digest(Workdir(work / "adaptation" / "work"))]
    rule = rerank_rule(ListConRanker.from_pretrained(tuned).config, tuned, Workdir(work))
    assert not rule.learned and rule.fusion == adapted_fusion(Workdir(work))
    assert rerank_rule(ListConRanker.from_pretrained(tuned).config, tuned, Workdir(work), outside_domain="head").learned
    result = json.loads((work / "adaptation" / "head" / "train_result.json").read_text())
    assert result["provenance"]["settings"]["init"] == str(tmp_path / "head")
    assert [h["epoch"] for h in result["history"]] == [0, 1, 2]

    corpus, made = read_corpus(data_dir("adi")), read_corpus(work / "adaptation" / "data")
    pseudo = pseudo_queries(corpus.table["id"].to_pylist(), corpus.table["title"].to_pylist(),
                            corpus.table["text"].to_pylist(), count=30, seed=0)
    rest = {q.passage_id: q.rest for q in pseudo}
    assert made.table["id"].to_pylist() == corpus.table["id"].to_pylist()
    for passage, original, text in zip(corpus.table["id"].to_pylist(), corpus.texts(), made.texts()):
        assert text == rest.get(passage, original), passage
    queries = read_queries(work / "adaptation" / "data")
    assert queries["text"].to_pylist() == [q.text for q in pseudo]
    qrels = read_qrels(work / "adaptation" / "data", "pseudo")
    assert list(zip(qrels["query_id"].to_pylist(), qrels["passage_id"].to_pylist())) == \
        [(f"pseudo-{i}", q.passage_id) for i, q in enumerate(pseudo)]

    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert main(["adapt", str(data_dir("adi")), "--workdir", str(work), *adapt]) == 0
    assert "already holds this training's result; nothing to do" in caplog.text and "encoded 0 passages" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO):  # the fusion choice does not depend on the fine-tuning's options
        assert main(["adapt", str(data_dir("adi")), "--workdir", str(work), "--pseudo-queries", "30", "--no-progress"]) == 0
    assert "adaptation.json is up to date" in caplog.text and "fine-tuned" not in caplog.text
    assert main(["adapt", str(data_dir("adi")), "--workdir", str(work), "--init", str(tmp_path / "none")]) == 2
    assert f"adapt: --init {tmp_path / 'none'} is not a head directory" in caplog.text

    from listcon.jobs.status import status  # `listcon status` knows whether `run` would fine-tune again

    def adapt_step(epochs: int) -> str:
        job = tmp_path / "job.toml"
        job.write_text(f'data = "{data_dir("adi")}"\nworkdir = "{work}"\n\n[adapt]\npseudo_queries = 30\n'
                       f'init = "{tmp_path / "head"}"\nepochs = {epochs}\n')
        return next(s.detail for s in status(load_config(job)).steps if s.step == "adapt")

    chosen = json.loads((work / "adaptation.json").read_text())["choice"]["chosen"]
    assert adapt_step(2) == f"adapt: up to date ({chosen}; head fine-tuned)"
    assert adapt_step(3) == f"adapt: to fine-tune {tmp_path / 'head'} (its options changed)"
