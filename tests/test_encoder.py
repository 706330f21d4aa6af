"""Text encoder: pooling by hand on a tiny BERT, and the packaged MiniLM vs sentence-transformers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from listcon.model import TextEncoder, default_model_path

TEXTS = [
    "the cell",
    "cancer patients with increased risk of heart disease in a clinical trial",
    "a",
    "gene expression levels in human blood and liver were associated with the response",
    "mice",
]


def by_hand(directory, texts, pooling):
    tok = AutoTokenizer.from_pretrained(directory)
    model = AutoModel.from_pretrained(directory).eval()
    out = []
    for text in texts:  # one at a time: no padding at all
        ids = tok(text, return_tensors="pt")
        with torch.no_grad():
            hidden = model(**ids).last_hidden_state[0].numpy().astype(np.float64)
        out.append(hidden.mean(axis=0) if pooling == "mean" else hidden[0])
    return np.stack(out)


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_pooling_equals_hand_computation(tiny_bert_dir, pooling):
    encoder = TextEncoder(tiny_bert_dir, pooling=pooling, batch_size=2)
    got = encoder.encode(TEXTS)
    assert got.dtype == np.float32 and got.shape == (len(TEXTS), 32)
    np.testing.assert_allclose(got, by_hand(tiny_bert_dir, TEXTS, pooling), rtol=0, atol=2e-5)


def test_normalize_option_and_fingerprint(tiny_bert_dir):
    plain = TextEncoder(tiny_bert_dir).encode(TEXTS)
    unit = TextEncoder(tiny_bert_dir, normalize=True).encode(TEXTS)
    np.testing.assert_allclose(unit, plain / np.linalg.norm(plain, axis=1, keepdims=True), atol=1e-6)
    assert TextEncoder(tiny_bert_dir).fingerprint == TextEncoder(tiny_bert_dir, normalize=True).fingerprint


def test_missing_directory_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        TextEncoder(tmp_path / "no-such-model")


def test_packaged_minilm_matches_sentence_transformers():
    from sentence_transformers import SentenceTransformer

    texts = TEXTS * 3
    ours = TextEncoder(batch_size=4).encode(texts)
    reference = SentenceTransformer(str(default_model_path()), device="cpu").encode(texts, convert_to_numpy=True)
    unit = ours / np.linalg.norm(ours, axis=1, keepdims=True)
    ref_unit = reference / np.linalg.norm(reference, axis=1, keepdims=True)
    assert ours.shape == (len(texts), 384)
    assert (np.sum(unit * ref_unit, axis=1) >= 0.9999).all()


def test_the_hash_encoder_gives_each_text_one_unit_vector_in_any_batch():
    from listcon.model import load_encoder

    encoder = load_encoder(backend="hash")
    texts = ["alpha beta", "gamma", "alpha beta", "a much longer text than the others"]
    vectors = encoder.encode(texts, batch_size=3)
    assert vectors.shape == (4, 384) and np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)
    assert np.array_equal(vectors[0], vectors[2]) and not np.allclose(vectors[0], vectors[1])
    assert np.array_equal(encoder.encode(texts[::-1], batch_size=1)[::-1], vectors)
    info = encoder.info()
    assert (info.model, info.backend) == ("hash", "hash") and info.fingerprint == load_encoder(backend="hash").fingerprint
