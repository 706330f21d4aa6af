"""The listwise head: equivalences, masks, checkpoints, and the released-layout import."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from listcon.model import CheckpointError, ListConRanker, ListConRankerConfig


def tiny(**overrides) -> ListConRanker:
    torch.manual_seed(0)
    cfg = dict(embed_dim=24, hidden_size=32, num_heads=4, num_layers=2, ffn_size=48, dropout=0.1)
    cfg.update(overrides)
    return ListConRanker(ListConRankerConfig(**cfg)).double().eval()


def batch(b=4, n=30, e=24, lengths=(30, 7, 19, 1), seed=1):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, e, generator=g, dtype=torch.float64)
    p = torch.randn(b, n, e, generator=g, dtype=torch.float64)
    mask = torch.arange(n)[None, :] < torch.tensor(lengths)[:, None]
    return q, p, mask


@pytest.mark.parametrize("attention", ["list", "bidirectional", "passage"])
@pytest.mark.parametrize("features", ["fused", "list", "original"])
def test_batched_equals_one_query_at_a_time(attention, features):
    model = tiny(attention=attention, features=features)
    q, p, mask = batch()
    with torch.no_grad():
        together = model(q, p, mask)
        for i, n in enumerate(mask.sum(1).tolist()):
            alone = model(q[i : i + 1], p[i : i + 1, :n], mask[i : i + 1, :n])
            torch.testing.assert_close(together[i, :n], alone[0], rtol=0, atol=1e-12)
    assert (together[~mask] == 0).all()
    assert ((together[mask] > 0) & (together[mask] < 1)).all()


def test_padding_values_never_change_real_scores():
    model = tiny()
    q, p, mask = batch()
    garbage = p.clone()
    garbage[~mask] = 1e3 * torch.randn_like(garbage[~mask])
    with torch.no_grad():
        torch.testing.assert_close(model(q, p, mask)[mask], model(q, garbage, mask)[mask], rtol=0, atol=1e-12)


@pytest.mark.parametrize("attention", ["list", "bidirectional", "passage"])
def test_scores_follow_a_permutation_of_the_passages(attention):
    model = tiny(attention=attention)
    q, p, mask = batch(b=1, lengths=(30,))
    perm = torch.randperm(30, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(model(q, p, mask)[0, perm], model(q, p[:, perm], mask)[0], rtol=0, atol=1e-12)


def contextual(model: ListConRanker, q, p, mask, layer: int = -1) -> torch.Tensor:
    """Outputs [B, 1+N, W] of one Transformer layer, read through a forward hook."""
    seen = {}
    handle = model.layers[layer].register_forward_hook(lambda mod, args, out: seen.setdefault("z", out))
    with torch.no_grad():
        model(q, p, mask)
    handle.remove()
    return seen["z"]


def test_three_attentions_share_parameters_but_differ_in_reach():
    models = {a: tiny(attention=a) for a in ("list", "bidirectional", "passage")}
    shapes = {a: {k: v.shape for k, v in m.state_dict().items()} for a, m in models.items()}
    assert shapes["list"] == shapes["bidirectional"] == shapes["passage"]
    for m in models.values():
        m.load_state_dict(models["list"].state_dict())
    q, p, mask = batch(b=1, lengths=(30,))
    changed = p.clone()
    changed[0, 5] += 3.0  # perturb one passage
    z = {a: (contextual(m, q, p, mask), contextual(m, q, changed, mask)) for a, m in models.items()}
    first = models["passage"]
    z_first = (contextual(first, q, p, mask, layer=0), contextual(first, q, changed, mask, layer=0))
    # ListAttention: the query sees only itself; every other passage sees passage 5.
    torch.testing.assert_close(z["list"][0][0, 0], z["list"][1][0, 0], rtol=0, atol=1e-12)
    assert not torch.allclose(z["list"][0][0, 1], z["list"][1][0, 1])
    # Bidirectional: the query sees the passages.
    assert not torch.allclose(z["bidirectional"][0][0, 0], z["bidirectional"][1][0, 0])
    # PassageAttention: the query sees passages; within a layer, passage 1 sees only itself
    # and the query (deeper layers reach passage 5 through the query's state).
    assert not torch.allclose(z["passage"][0][0, 0], z["passage"][1][0, 0])
    torch.testing.assert_close(z_first[0][0, 1], z_first[1][0, 1], rtol=0, atol=1e-12)
    assert not torch.allclose(z["passage"][0][0, 1], z["passage"][1][0, 1])


def test_save_then_load_gives_identical_outputs(tmp_path):
    model = tiny(attention="passage", features="list").float()
    q, p, mask = (t.float() if t.is_floating_point() else t for t in batch())
    model.save_pretrained(tmp_path / "ckpt")
    saved = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert saved["attention"] == "passage" and saved["features"] == "list"
    loaded = ListConRanker.from_pretrained(tmp_path / "ckpt")
    assert loaded.config == model.config
    with torch.no_grad():
        assert torch.equal(model(q, p, mask), loaded(q, p, mask))


def test_checkpoint_errors_name_the_problem(tmp_path):
    with pytest.raises(CheckpointError, match="config.json is missing"):
        ListConRanker.from_pretrained(tmp_path)
    tiny().save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"\x80\x04 not safetensors")
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        ListConRanker.from_pretrained(tmp_path)
    other = tmp_path / "other"
    tiny(hidden_size=64).save_pretrained(other)
    cfg = json.loads((other / "config.json").read_text())
    cfg["hidden_size"] = 32
    (other / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="shape mismatches"):
        ListConRanker.from_pretrained(other)


def test_config_rejects_unknown_variants():
    with pytest.raises(ValueError, match="attention must be one of"):
        ListConRankerConfig(attention="causal")
    with pytest.raises(ValueError, match="divisible"):
        ListConRankerConfig(hidden_size=30, num_heads=4)


def test_wrong_feature_width_is_a_clear_error():
    model = tiny()
    q, p, mask = batch(e=16)
    with pytest.raises(ValueError, match="embed_dim=24"):
        model(q, p, mask)


# -- the released checkpoint layout ----------------------------------------------------------


class ReleasedStyleHead(nn.Module):
    """Reference built from the documented released structure, with PyTorch's own layers."""

    def __init__(self, width: int, heads: int, layers: int) -> None:
        super().__init__()
        self.list_transformer_layer = nn.TransformerEncoderLayer(
            width, heads, batch_first=True, activation=F.gelu, norm_first=False
        )
        self.list_transformer = nn.TransformerEncoder(self.list_transformer_layer, layers, enable_nested_tensor=False)
        self.query_embedding = nn.Module()
        self.query_embedding.query_embedding = nn.Embedding(2, width)
        self.query_embedding.layerNorm = nn.LayerNorm(width)
        self.linear_score3 = nn.Linear(2 * width, width)
        self.linear_score2 = nn.Linear(2 * width, width)
        self.linear_score1 = nn.Linear(2 * width, 1)

    def forward(self, h_q, h_p, real):  # projected features
        b, n, _ = h_p.shape
        x = torch.cat([h_q[:, None], h_p], dim=1)
        tags = torch.zeros(b, n + 1, dtype=torch.long)
        tags[:, 0] = 1
        x = self.query_embedding.layerNorm(x + self.query_embedding.query_embedding(tags))
        pad = torch.cat([torch.zeros(b, 1, dtype=torch.bool), ~real], dim=1)
        query_mask = torch.zeros(n + 1, n + 1, dtype=torch.bool)
        query_mask[0, 1:] = True
        z = self.list_transformer(x, mask=query_mask, src_key_padding_mask=pad)
        orig = F.relu(self.linear_score2(torch.cat([h_q[:, None].expand_as(h_p), h_p], -1)))
        lst = F.relu(self.linear_score3(torch.cat([z[:, :1].expand_as(h_p), z[:, 1:]], -1)))
        return torch.sigmoid(self.linear_score1(torch.cat([orig, lst], -1)).squeeze(-1))


@pytest.mark.parametrize(
    "embed_dim,width,heads,ffn_ok",
    [(48, 64, 4, True), (1024, 1792, 16, True)],  # a small head, and the released sizes
)
def test_from_released_reproduces_the_released_head(tmp_path, embed_dim, width, heads, ffn_ok):
    torch.manual_seed(0)
    reference = ReleasedStyleHead(width, heads, layers=2).eval()
    linear_in = nn.Linear(embed_dim, width)
    torch.save(reference.state_dict(), tmp_path / "list_transformer.pt")
    torch.save(linear_in.state_dict(), tmp_path / "linear_in_embedding.pt")
    assert any(k.startswith("list_transformer_layer.") for k in reference.state_dict())

    model = ListConRanker.from_released(tmp_path / "list_transformer.pt", tmp_path / "linear_in_embedding.pt", num_heads=heads)
    assert (model.config.embed_dim, model.config.hidden_size, model.config.num_layers, model.config.ffn_size) == (
        embed_dim, width, 2, 2048
    )
    lengths = (12, 5, 9)
    q = torch.randn(3, embed_dim)
    p = torch.randn(3, 12, embed_dim)
    real = torch.arange(12)[None] < torch.tensor(lengths)[:, None]
    with torch.no_grad():
        expected = reference(linear_in(q), linear_in(p), real)
        got = model(q, p, real)
    torch.testing.assert_close(got[real], expected[real], rtol=0, atol=1e-5)


def test_from_released_refuses_pickled_objects(tmp_path):
    torch.save({"weights": nn.Linear(2, 2)}, tmp_path / "list_transformer.pt")
    with pytest.raises(CheckpointError, match="weights-only"):
        ListConRanker.from_released(tmp_path / "list_transformer.pt")


def test_first_stage_prior_ranks_like_cosine_until_trained():
    model = tiny(first_stage_prior=True)
    q, p, mask = batch(b=2, lengths=(30, 30))
    with torch.no_grad():
        got = model(q, p, mask)
        cosine = F.cosine_similarity(q[:, None, :], p, dim=-1)
        assert torch.equal(torch.argsort(got, dim=1, descending=True), torch.argsort(cosine, dim=1, descending=True))
        torch.testing.assert_close(got, torch.sigmoid(10 * cosine), rtol=0, atol=1e-12)
        model.prior[1] = 1.0  # once b moves, the listwise head changes the scores
        assert not torch.allclose(model(q, p, mask), got)
    assert "prior" not in tiny().state_dict()
