"""The Lance embedding cache and the encoder callable, without Ray."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from listcon.pipeline.store.lance_tables import TableError
from listcon.pipeline.store.ranked_lists import read_provenance
from listcon.pipeline.store.embedding_cache import CacheMismatchError, EmbeddingCache, MissingPassagesError, content_hash
from listcon.pipeline.encoding.encode_batch import EncodeBatch, EncoderSettings
from listcon.schemas import DataError, embedding_schema, vectors_table

META = {"model": "m", "fingerprint": "abc", "pooling": "mean", "normalize": False, "max_length": 128}


def rows(ids, dim=4, dtype="float32", seed=0, meta=META):
    vectors = np.random.default_rng(seed).standard_normal((len(ids), dim)).astype(np.float32)
    schema = embedding_schema(dim, dtype, meta)
    return vectors_table(ids, [content_hash(i) for i in ids], vectors, schema), vectors


def test_take_returns_vectors_in_the_order_asked(tmp_path):
    cache = EmbeddingCache(tmp_path / "p.lance")
    assert not cache.exists and cache.missing(["a"]) == ["a"]
    table, vectors = rows(["a", "b", "c", "d"])
    cache.upsert(table.slice(0, 2))
    cache.upsert(table.slice(2))
    got = cache.take(["d", "a", "c", "a"])
    np.testing.assert_array_equal(got, vectors[[3, 0, 2, 0]])
    assert cache.missing(["a", "x", "b", "y"]) == ["x", "y"]
    with pytest.raises(MissingPassagesError, match=r"2 id\(s\) are not in the embedding cache .*\['x', 'y'\]"):
        cache.take(["a", "x", "y"])


def test_upsert_replaces_changed_rows_without_duplicates(tmp_path):
    cache = EmbeddingCache(tmp_path / "p.lance")
    first, _ = rows(["a", "b", "c"], seed=1)
    cache.upsert(first)
    second, vectors = rows(["b", "e"], seed=2)
    cache.upsert(second)
    assert sorted(cache.ids()) == ["a", "b", "c", "e"]
    np.testing.assert_array_equal(cache.take(["b", "e"]), vectors)
    version = cache.version
    cache.upsert(second.slice(0, 0))
    assert EmbeddingCache(tmp_path / "p.lance").version == version


def test_digest_follows_the_rows_asked_for_not_the_table(tmp_path):
    cache = EmbeddingCache(tmp_path / "p.lance")
    table, _ = rows(["a", "b", "c"])
    cache.upsert(table.slice(0, 2))
    digest = cache.digest(["a", "b"])
    cache.upsert(table.slice(2))  # another row: a new version, the same digest for a and b
    assert cache.digest(["a", "b"]) == digest != cache.digest(["a", "b", "c"])
    assert cache.digest(["b", "a"]) != digest  # order is part of what a ranked list depends on
    edited = vectors_table(["b"], [content_hash("b, edited")], np.ones((1, 4), np.float32), table.schema)
    cache.upsert(edited)
    assert cache.digest(["a", "b"]) != digest


def test_float16_storage(tmp_path):
    cache = EmbeddingCache(tmp_path / "p.lance")
    table, vectors = rows(["a", "b"], dtype="float16")
    cache.upsert(table)
    assert cache.metadata["dtype"] == "float16"
    np.testing.assert_allclose(cache.take(["b", "a"]), vectors[[1, 0]], atol=2e-3)
    assert cache.take(["a"], dtype=None).dtype == np.float16


def test_other_encoder_is_refused_with_a_fix(tmp_path):
    cache = EmbeddingCache(tmp_path / "p.lance")
    cache.upsert(rows(["a"])[0])
    expected = {**META, "dim": 4, "dtype": "float32"}
    cache.check_encoder(expected)
    with pytest.raises(CacheMismatchError, match=r"fingerprint: cache has 'abc', asked for 'zzz'.*--rebuild"):
        cache.check_encoder({**expected, "fingerprint": "zzz"})
    with pytest.raises(CacheMismatchError, match=r"dim: cache has 4, asked for 8"):
        cache.check_encoder({**expected, "dim": 8})


def test_encode_batch_is_a_plain_callable(tiny_bert_dir):
    settings = EncoderSettings(model=str(tiny_bert_dir), dtype="float16")
    batch = {"id": np.array(["x", "y"], dtype=object), "text": np.array(["the cell", "a gene of mice"], dtype=object),
             "content_hash": np.array(["h1", "h2"], dtype=object)}
    out = EncodeBatch(settings)(batch)
    assert list(out["id"]) == ["x", "y"] and list(out["content_hash"]) == ["h1", "h2"]
    expected = settings.load().encode(["the cell", "a gene of mice"])
    assert out["vector"].dtype == np.float16
    np.testing.assert_allclose(out["vector"].astype(np.float32), expected, atol=2e-3)


def test_nan_vectors_are_refused_naming_the_ids(tiny_bert_dir, tmp_path):
    broken = tmp_path / "nan-bert"
    broken.mkdir()
    for item in tiny_bert_dir.iterdir():
        (broken / item.name).write_bytes(item.read_bytes())
    state = load_file(str(broken / "model.safetensors"))
    key = "embeddings.LayerNorm.bias"
    state[key] = torch.full_like(state[key], float("nan"))
    save_file(state, str(broken / "model.safetensors"), metadata={"format": "pt"})
    batch = {"id": np.array(["p1", "p2"], dtype=object), "text": np.array(["cell", "gene"], dtype=object),
             "content_hash": np.array(["h", "h"], dtype=object)}
    with pytest.raises(DataError, match=r"2 vector\(s\) contain NaN or inf, e.g. ids \['p1', 'p2'\]"):
        EncodeBatch(EncoderSettings(model=str(broken)))(batch)


def test_no_table_is_not_an_error_but_a_broken_one_is(tmp_path):
    assert not EmbeddingCache(tmp_path / "absent.lance").exists
    (tmp_path / "file.lance").write_text("not a table")
    with pytest.raises(TableError, match=r"cannot open the Lance table at .*file.lance"):
        EmbeddingCache(tmp_path / "file.lance")
    broken = tmp_path / "broken.lance" / "_versions"
    broken.mkdir(parents=True)
    (broken / "1.manifest").write_text("garbage")
    with pytest.raises(TableError, match="broken.lance"):
        EmbeddingCache(tmp_path / "broken.lance")
    with pytest.raises(TableError):
        read_provenance(str(tmp_path / "broken.lance"))
