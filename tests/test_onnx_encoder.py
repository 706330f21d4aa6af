"""ONNX Runtime encoder backends: the same vectors as torch, exported once, never mixed in a cache."""

from __future__ import annotations

import json

import numpy as np
import pytest

from listcon.model import OnnxEncoder, TextEncoder, encoder_from_info
from listcon.pipeline.encoding.embed import embed_texts
from listcon.pipeline.encoding.encode_batch import EncoderSettings
from listcon.pipeline.store.embedding_cache import CacheMismatchError, EmbeddingCache
from tests.test_encoder import TEXTS


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.mark.parametrize("pooling,normalize", [("mean", False), ("cls", True)])
def test_onnx_vectors_equal_torch(tiny_bert_dir, tmp_path, pooling, normalize):
    torch_vectors = TextEncoder(tiny_bert_dir, pooling=pooling, normalize=normalize, batch_size=2).encode(TEXTS)
    onnx = OnnxEncoder(tiny_bert_dir, pooling=pooling, normalize=normalize, batch_size=2, export_dir=tmp_path)
    np.testing.assert_allclose(onnx.encode(TEXTS), torch_vectors, atol=1e-5)
    assert onnx.info().backend == "onnx" and onnx.dim == 32


def test_int8_stays_close_and_each_backend_has_its_own_export_and_fingerprint(tiny_bert_dir, tmp_path):
    torch_encoder = TextEncoder(tiny_bert_dir)
    fp32 = OnnxEncoder(tiny_bert_dir, export_dir=tmp_path)
    int8 = OnnxEncoder(tiny_bert_dir, backend="onnx-int8", export_dir=tmp_path)
    assert len({torch_encoder.fingerprint, fp32.fingerprint, int8.fingerprint}) == 3
    assert fp32.path.parent != int8.path.parent
    manifest = json.loads((int8.path.parent / "export.json").read_text())
    assert manifest["weights"] == torch_encoder.fingerprint and manifest["int8"]["per_channel"]
    assert cosine(int8.encode(TEXTS), torch_encoder.encode(TEXTS)).min() > 0.98
    stamp = int8.path.stat().st_mtime_ns
    again = OnnxEncoder(tiny_bert_dir, backend="onnx-int8", export_dir=tmp_path)  # reuses the export
    assert again.path == int8.path and again.path.stat().st_mtime_ns == stamp
    assert again.fingerprint == int8.fingerprint
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging left behind


def test_an_int8_vector_depends_on_its_text_alone(tiny_bert_dir, tmp_path):
    """The quantized graph takes one activation scale per run: every text runs alone, so its vector is the same
    in any batch, beside any other text (an incremental embed equals one from scratch)."""
    int8 = OnnxEncoder(tiny_bert_dir, backend="onnx-int8", export_dir=tmp_path, batch_size=8)
    texts = [*TEXTS, " ".join(["a much longer text that pads every other one"] * 6)]
    together = int8.encode(texts)
    for i, text in enumerate(texts):
        np.testing.assert_array_equal(int8.encode([text])[0], together[i])
    np.testing.assert_array_equal(int8.encode(texts[::-1])[::-1], together)


def test_a_cache_refuses_another_backend_until_rebuilt(tiny_bert_dir, tmp_path):
    ids, texts = [f"d{i}" for i in range(len(TEXTS))], TEXTS
    uri = str(tmp_path / "passages.lance")
    torch_settings = EncoderSettings(model=str(tiny_bert_dir))
    onnx_settings = EncoderSettings(model=str(tiny_bert_dir), backend="onnx", export_dir=str(tmp_path / "encoders"))
    embed_texts(ids, texts, uri, torch_settings, progress=False)
    with pytest.raises(CacheMismatchError, match="backend: cache has 'torch', asked for 'onnx'"):
        embed_texts(ids, texts, uri, onnx_settings, progress=False)
    report = embed_texts(ids, texts, uri, onnx_settings, rebuild=True, progress=False)
    cache = EmbeddingCache(uri)
    assert report.encoded == len(ids) and cache.metadata["backend"] == "onnx"
    # what wrote the table encodes more texts the same way (queries, the Reranker's ad-hoc texts)
    again = encoder_from_info(cache.metadata, export_dir=tmp_path / "encoders")
    np.testing.assert_allclose(cache.take(ids), again.encode(texts), atol=1e-6)


def test_a_table_written_before_backends_existed_reads_as_torch(tiny_bert_dir, tmp_path):
    from listcon.schemas import embedding_schema, vectors_table

    settings = EncoderSettings(model=str(tiny_bert_dir))
    encoder = settings.load()
    expected = settings.expected_metadata(encoder)
    legacy = {k: v for k, v in expected.items() if k not in ("backend", "dim", "dtype")}
    cache = EmbeddingCache(str(tmp_path / "legacy.lance"))
    schema = embedding_schema(encoder.dim, "float32", legacy)
    cache.upsert(vectors_table(["d0"], ["h0"], encoder.encode(TEXTS[:1]), schema))
    cache = EmbeddingCache(str(tmp_path / "legacy.lance"))
    assert "backend" not in cache.metadata
    cache.check_encoder(expected)  # the torch backend it was written with
    onnx = EncoderSettings(model=str(tiny_bert_dir), backend="onnx", export_dir=str(tmp_path / "encoders"))
    with pytest.raises(CacheMismatchError, match="backend: cache has 'torch'"):
        cache.check_encoder(onnx.expected_metadata(onnx.load()))


def test_onnx_backend_refuses_gpu_and_half_precision(tiny_bert_dir, tmp_path):
    from listcon.model import load_encoder

    with pytest.raises(ValueError, match="runs on CPU"):
        load_encoder(tiny_bert_dir, backend="onnx", device="cuda", export_dir=tmp_path)
    with pytest.raises(ValueError, match="precision must be auto or fp32"):
        load_encoder(tiny_bert_dir, backend="onnx-int8", precision="bf16", export_dir=tmp_path)


def test_packaged_minilm_onnx_matches_torch(tmp_path):
    texts = TEXTS * 2
    reference = TextEncoder(batch_size=4).encode(texts)
    assert cosine(OnnxEncoder(batch_size=4, export_dir=tmp_path).encode(texts), reference).min() >= 0.9999
