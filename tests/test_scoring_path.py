"""One scoring path: the rerank step, training's validation and the re-encode baseline rank alike."""

from __future__ import annotations

import numpy as np
import torch

from listcon.model import ListConRanker, ListConRankerConfig, ListScorer, PruneSchedule, TextEncoder, pad_lists
from listcon.pipeline.rerank.cached import CachedReranker
from listcon.pipeline.rerank.reencode import ReencodeReranker
from listcon.pipeline.rerank.settings import RerankSettings
from listcon.pipeline.store.embedding_cache import EmbeddingCache, content_hash
from listcon.pipeline.training.features import CachedFeatures, EncodedFeatures
from listcon.pipeline.training.loop import rank_lists
from listcon.schemas import embedding_schema, vectors_table

WORDS = "cell protein gene cancer blood heart lung liver brain drug risk dose trial mice virus".split()


def test_rerank_validation_and_reencode_give_identical_orders(tiny_bert_dir, tmp_path):
    encoder = TextEncoder(tiny_bert_dir, device="cpu")
    passages = {f"p{i}": f"{WORDS[i % 15]} {WORDS[(i * 7) % 15]} {WORDS[(i * 11) % 15]} study {i}" for i in range(60)}
    queries = {f"q{i}": f"{WORDS[i]} {WORDS[(i + 3) % 15]}" for i in range(4)}
    lists = [(q, [f"p{(5 * i + k) % 60}" for k in range(23 + 4 * i)]) for i, q in enumerate(queries)]
    # The caches hold exactly what the encoder gives each text alone (no batch effects in the reference).
    caches = {}
    for name, texts in (("passages", passages), ("queries", queries)):
        ids = list(texts)
        vectors = np.concatenate([encoder.encode([texts[i]]) for i in ids])
        meta = {k: v for k, v in encoder.info().__dict__.items() if k != "dim"}
        caches[name] = EmbeddingCache(tmp_path / f"{name}.lance")
        caches[name].upsert(vectors_table(ids, [content_hash(texts[i]) for i in ids], vectors,
                                          embedding_schema(encoder.dim, "float32", meta)))
    torch.manual_seed(0)
    head = ListConRanker(ListConRankerConfig(embed_dim=encoder.dim, hidden_size=16, num_heads=2, ffn_size=32)).eval()
    schedule = PruneSchedule(theta=6, beta=0.3, min_drop=2)

    step = CachedReranker(head, caches["passages"], caches["queries"], RerankSettings(device="cpu"), schedule).rerank(lists)
    step_order = {q: step.filter(step["query_id"].to_numpy(zero_copy_only=False) == q)["passage_id"].to_pylist()
                  for q, _ in lists}

    scorer = ListScorer(head, schedule, device="cpu")
    cached = CachedFeatures(caches["passages"], caches["queries"], list(passages), list(queries))
    validation = rank_lists(scorer, cached, lists, depth=100)
    assert {q: list(run) for q, run in validation.items()} == step_order

    class OneByOne(TextEncoder):
        """The encoder, one text per forward (as the caches were filled)."""

        def encode(self, texts, batch_size=None, progress=False):
            return np.concatenate([super(OneByOne, self).encode([t]) for t in texts])

    alone = OneByOne(tiny_bert_dir, device="cpu")
    encoded = rank_lists(scorer, EncodedFeatures(alone, passages, queries), lists, depth=100)
    assert {q: list(run) for q, run in encoded.items()} == step_order
    reencoded = ReencodeReranker(head, alone, passages, queries, RerankSettings(device="cpu"), schedule).rerank(lists)
    assert reencoded["passage_id"].to_pylist() == step["passage_id"].to_pylist()
    assert reencoded["round"].to_pylist() == step["round"].to_pylist()
    np.testing.assert_allclose(reencoded["score"].to_numpy(), step["score"].to_numpy(), atol=1e-6)


def test_pad_lists_zero_pads_and_masks():
    blocks = [np.ones((2, 3), np.float32), np.zeros((0, 3), np.float32), torch.full((3, 3), 2.0)]
    padded, mask = pad_lists(blocks, 3)
    assert padded.shape == (3, 3, 3) and mask.tolist() == [[True, True, False], [False] * 3, [True] * 3]
    assert padded[0, 2].abs().sum() == 0 and padded[2].eq(2.0).all()
