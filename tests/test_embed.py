"""The embed job on Ray: equals the encoder, incremental, refuses other encoders, resumes after SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import lance
import numpy as np
import pytest

from conftest import data_dir
from listcon.jobs.cli import main
from listcon.jobs.config import EmbedOptions, RayOptions
from listcon.jobs.embed_job import ray_encoder
from listcon.pipeline.encoding.embed import embed_texts
from listcon.pipeline.store.embedding_cache import CacheMismatchError, EmbeddingCache
from listcon.pipeline.encoding.encode_batch import EncoderSettings
from listcon.pipeline.data.readers import read_corpus


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_cached_vectors_equal_the_encoder_and_reruns_are_incremental(tmp_path, tiny_bert_dir, ray_session):
    corpus = read_corpus(data_dir("adi"))
    ids, texts = corpus.table["id"].to_pylist(), corpus.texts()
    settings = EncoderSettings(model=str(tiny_bert_dir), batch_size=16)
    uri = str(tmp_path / "passages.lance")
    on_ray = ray_encoder(RayOptions(), EmbedOptions())
    first = embed_texts(ids, texts, uri, settings, on_ray, chunk_rows=20, progress=False)
    assert (first.encoded, first.skipped) == (82, 0)
    cache = EmbeddingCache(uri)
    expected = settings.load().encode(texts)
    np.testing.assert_allclose(cache.take(ids), expected, rtol=0, atol=1e-5)

    again = embed_texts(ids, texts, uri, settings, lambda *_: pytest.fail("nothing may be encoded for a no-op"),
                        progress=False)
    assert (again.encoded, again.skipped, again.version) == (0, 82, first.version)

    changed = list(texts)
    changed[3] = "an edited abstract about the cell"
    more_ids, more_texts = [*ids[1:], "new-1"], [*changed[1:], "a brand new passage"]
    third = embed_texts(more_ids, more_texts, uri, settings, on_ray, chunk_rows=20, progress=False)
    assert (third.encoded, third.skipped, third.stale) == (2, 80, 1)
    cache = EmbeddingCache(uri)
    np.testing.assert_allclose(cache.take([ids[3], "new-1"]), settings.load().encode([changed[3], "a brand new passage"]), atol=1e-5)
    pruned = embed_texts(more_ids, more_texts, uri, settings, on_ray, prune=True, progress=False)
    assert pruned.encoded == 0 and sorted(EmbeddingCache(uri).ids()) == sorted(more_ids)


def test_the_ray_stream_yields_one_result_per_encoder_batch(tiny_bert_dir, ray_session):
    """What the progress bar advances on: every encoder batch, not every commit."""
    import pyarrow as pa

    texts = [f"cell study number {i}" for i in range(50)]
    work = pa.table({"id": [str(i) for i in range(50)], "text": texts, "content_hash": ["h"] * 50})
    settings = EncoderSettings(model=str(tiny_bert_dir), batch_size=8)
    sizes = [len(b["id"]) for b in ray_encoder(RayOptions(), EmbedOptions(chunk_rows=1024))(work, settings)]
    assert sorted(sizes) == sorted([8] * 6 + [2])


def test_the_cache_records_the_workers_arithmetic_and_refuses_to_mix_it(tmp_path, tiny_bert_dir):
    """Vectors computed in bf16 (a GPU worker under auto) never join a cache of fp32 ones."""
    from listcon.pipeline.encoding.embed import encode_here

    settings = EncoderSettings(model=str(tiny_bert_dir))
    uri = str(tmp_path / "passages.lance")
    embed_texts(["a", "b"], ["the cell", "a gene"], uri, settings, progress=False)
    assert EmbeddingCache(uri).metadata["precision"] == "fp32"
    version = EmbeddingCache(uri).version

    def on_a_bf16_worker(work, settings):  # what an encoder actor on a GPU reports
        for batch in encode_here(work, settings):
            yield {**batch, "precision": np.full(len(batch["id"]), "bf16")}

    with pytest.raises(CacheMismatchError, match="holds vectors computed in fp32, but this run's encoder workers compute in bf16"):
        embed_texts(["a", "b", "c"], ["the cell", "a gene", "blood risk"], uri, settings, on_a_bf16_worker, progress=False)
    assert EmbeddingCache(uri).version == version and len(EmbeddingCache(uri)) == 2


def test_another_encoder_is_refused_unless_rebuilt(tmp_path, tiny_bert_dir, ray_session):
    ids, texts = ["a", "b", "c"], ["the cell", "a gene", "blood risk"]
    uri = str(tmp_path / "passages.lance")
    embed_texts(ids, texts, uri, EncoderSettings(model=str(tiny_bert_dir)), progress=False)
    version = EmbeddingCache(uri).version
    other = EncoderSettings(model=str(tiny_bert_dir), pooling="cls")
    with pytest.raises(CacheMismatchError, match="pooling: cache has 'mean', asked for 'cls'.*--rebuild"):
        embed_texts(ids, texts, uri, other, progress=False)
    assert EmbeddingCache(uri).version == version
    report = embed_texts(ids, texts, uri, other, rebuild=True, progress=False)
    cache = EmbeddingCache(uri)
    assert report.encoded == 3 and cache.metadata["pooling"] == "cls"
    np.testing.assert_allclose(cache.take(ids), other.load().encode(texts), atol=1e-5)
    assert not (tmp_path / "passages.lance.rebuild").exists()


def test_bad_corpus_writes_nothing(tmp_path, tiny_bert_dir):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"_id": "a", "text": "x"}\n{"_id": "a", "text": "y"}\n')
    assert main(["embed", str(corpus), "--workdir", str(tmp_path / "w"), "--model", str(tiny_bert_dir)]) == 2
    assert not (tmp_path / "w" / "passages.lance").exists()


def table_state(uri: str) -> dict[str, np.ndarray]:
    table = lance.dataset(uri).to_table()
    vectors = np.stack(table["vector"].to_numpy(zero_copy_only=False))
    return dict(zip(table["id"].to_pylist(), vectors))


@pytest.mark.parametrize("kill_at", [3, *(pytest.param(k, marks=pytest.mark.slow) for k in (6, 9, 14, 20))])
def test_a_killed_embed_job_resumes_to_the_uninterrupted_table(tmp_path, tiny_bert_dir, ray_session, kill_at):
    data = data_dir("medline")
    args = ["embed", str(data), "--model", str(tiny_bert_dir), "--chunk-rows", "16", "--batch-size", "4", "--no-progress"]
    killed = tmp_path / "killed"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "listcon.jobs.cli", *args, "--workdir", str(killed)],
                            env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    uri = str(killed / "passages.lance")
    deadline = time.time() + 240
    try:
        while time.time() < deadline and proc.poll() is None:
            try:
                if lance.dataset(uri).version >= kill_at:  # some chunks committed, more to come
                    break
            except (ValueError, OSError):
                pass
            time.sleep(0.05)
        assert proc.poll() is None, "the job ended before it could be killed mid-way"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    partial = table_state(uri)
    assert 0 < len(partial) < 1033

    assert main([*args, "--workdir", str(killed)]) == 0
    resumed = table_state(uri)
    reference_dir = tmp_path / "reference"
    assert main([*args, "--workdir", str(reference_dir)]) == 0
    reference = table_state(str(reference_dir / "passages.lance"))
    assert len(resumed) == len(reference) == 1033 and resumed.keys() == reference.keys()
    assert lance.dataset(uri).count_rows() == 1033  # no duplicated rows
    worst = max(float(np.abs(resumed[k] - reference[k]).max()) for k in reference)
    assert worst <= 1e-6, worst
    for k, v in partial.items():  # committed rows were kept, not re-encoded differently
        np.testing.assert_array_equal(resumed[k], v)


@pytest.mark.parametrize("name", ["adi", pytest.param("medline", marks=pytest.mark.slow)])
def test_packaged_minilm_vectors_in_the_table_equal_the_encoder(tmp_path, ray_session, name):
    corpus = read_corpus(data_dir(name))
    ids, texts = corpus.table["id"].to_pylist(), corpus.texts()
    settings = EncoderSettings()
    uri = str(tmp_path / "passages.lance")
    embed_texts(ids, texts, uri, settings, progress=False)
    cached = EmbeddingCache(uri)
    assert json.loads(json.dumps(cached.metadata))["dim"] == 384
    assert (cosine(cached.take(ids), settings.load().encode(texts)) >= 0.9999).all()


def test_prune_refuses_to_empty_the_cache_on_a_partial_input(tmp_path, tiny_bert_dir):
    ids, texts = [f"d{i}" for i in range(10)], [f"cell study number {i}" for i in range(10)]
    uri = str(tmp_path / "passages.lance")
    settings = EncoderSettings(model=str(tiny_bert_dir))
    embed_texts(ids, texts, uri, settings, progress=False)
    version = EmbeddingCache(uri).version
    with pytest.raises(ValueError, match=r"prune would delete 7 of the 10 cached passages \(70%, more than prune_limit 20%\)"):
        embed_texts(ids[:3], texts[:3], uri, settings, prune=True, prune_limit=0.2, progress=False)
    assert EmbeddingCache(uri).version == version and len(EmbeddingCache(uri)) == 10
    embed_texts(ids[:9], texts[:9], uri, settings, prune=True, prune_limit=0.2, progress=False)  # 10% is fine
    assert sorted(EmbeddingCache(uri).hashes()) == sorted(ids[:9])


@pytest.mark.parametrize("args,corpus,message", [
    (["--prune", "--limit", "10"], None, "prune with limit would delete every cached passage beyond the first 10"),
    (["--limit", "0"], None, "limit must be at least 1"),
    ([], "", "the corpus has no passages"),
])
def test_embed_inputs_that_would_lose_data_are_one_line_errors(tmp_path, tiny_bert_dir, caplog, args, corpus, message):
    data = data_dir("adi")
    if corpus is not None:
        (tmp_path / "corpus.jsonl").write_text(corpus)
        data = tmp_path / "corpus.jsonl"
    code = main(["embed", str(data), "--workdir", str(tmp_path / "w"), "--model", str(tiny_bert_dir), *args])
    assert code == 2 and message in caplog.text and "Traceback" not in caplog.text
    assert not (tmp_path / "w" / "passages.lance").exists()
