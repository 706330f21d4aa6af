"""Algorithm 1 (iterative inference): batched vs slow per-query reference, and edge cases."""

from __future__ import annotations

import math

import pytest
import torch

from listcon.model import ListConRanker, ListConRankerConfig, iterative_rerank


def set_dependent(query, passages, mask):
    """A score that depends on the surviving set: closeness to the set's mean first coordinate."""
    x = passages[..., 0]
    mean = (x * mask).sum(1, keepdim=True) / mask.sum(1, keepdim=True)
    return torch.sigmoid(-(x - mean).abs() + query[:, :1])


def reference(score_fn, query, passages, n, theta, beta, min_drop):
    """Algorithm 1 for one query, written as plainly as possible."""
    remaining = list(range(n))
    fixed_bottom: list[tuple[int, float, int]] = []  # appended worst-last per round
    rnd = 0
    while len(remaining) > theta:
        s = score_fn(query[None], passages[None, remaining], torch.ones(1, len(remaining), dtype=torch.bool))[0]
        ranked = sorted(range(len(remaining)), key=lambda j: (-float(s[j]), remaining[j]))
        drop = min(max(math.ceil(beta * len(remaining)), min_drop), len(remaining))
        out = ranked[len(ranked) - drop :]
        fixed_bottom = [(remaining[j], rnd + float(s[j]), rnd) for j in out] + fixed_bottom
        remaining = [remaining[j] for j in ranked[: len(ranked) - drop]]
        rnd += 1
    top = []
    if remaining:
        s = score_fn(query[None], passages[None, remaining], torch.ones(1, len(remaining), dtype=torch.bool))[0]
        ranked = sorted(range(len(remaining)), key=lambda j: (-float(s[j]), remaining[j]))
        top = [(remaining[j], rnd + float(s[j]), rnd) for j in ranked]
    return top + fixed_bottom


def random_lists(b=5, n=120, e=8, lengths=(120, 57, 20, 3, 0), seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, e, generator=g, dtype=torch.float64)
    p = torch.randn(b, n, e, generator=g, dtype=torch.float64)
    mask = torch.arange(n)[None] < torch.tensor(lengths)[:, None]
    return q, p, mask


@pytest.mark.parametrize("theta,beta,min_drop", [(20, 0.2, 10), (5, 0.5, 1), (1, 0.1, 3), (30, 0.2, 50)])
def test_batched_equals_the_per_query_reference(theta, beta, min_drop):
    q, p, mask = random_lists()
    order, scores, rounds = iterative_rerank(set_dependent, q, p, mask, theta, beta, min_drop, return_rounds=True)
    for i, n in enumerate(mask.sum(1).tolist()):
        expected = reference(set_dependent, q[i], p[i], n, theta, beta, min_drop)
        assert order[i, :n].tolist() == [c for c, _, _ in expected]
        assert rounds[i, :n].tolist() == [r for _, _, r in expected]
        torch.testing.assert_close(scores[i, :n], torch.tensor([s for _, s, _ in expected], dtype=torch.float64), rtol=0, atol=1e-12)
        assert (order[i, n:] == -1).all() and torch.isinf(scores[i, n:]).all() and (rounds[i, n:] == -1).all()


def test_released_schedule_of_drops():
    q, p, mask = random_lists(b=1, n=100, lengths=(100,))
    _, _, rounds = iterative_rerank(set_dependent, q, p, mask, return_rounds=True)
    per_round = torch.bincount(rounds[0]).tolist()
    # 100 -> drop 20 -> 80 -> 16 -> 64 -> 13 -> 51 -> 11 -> 40 -> 10 -> 30 -> 10 -> 20 (final)
    assert per_round == [20, 16, 13, 11, 10, 10, 20]  # rounds 0..5 pruned, round 6 final


def test_theta_at_least_n_is_exactly_one_sorted_pass():
    q, p, mask = random_lists()
    probs = set_dependent(q, p, mask)
    order, scores = iterative_rerank(set_dependent, q, p, mask, theta=120)
    for i, n in enumerate(mask.sum(1).tolist()):
        expected = sorted(range(n), key=lambda j: (-float(probs[i, j]), j))
        assert order[i, :n].tolist() == expected
        torch.testing.assert_close(scores[i, :n], probs[i, expected], rtol=0, atol=0)


def test_model_batched_equals_per_query():
    torch.manual_seed(0)
    model = ListConRanker(ListConRankerConfig(embed_dim=8, hidden_size=16, num_heads=2, ffn_size=32)).double().eval()
    q, p, mask = random_lists()
    with torch.no_grad():
        order, scores = iterative_rerank(model, q, p, mask)
        for i, n in enumerate(mask.sum(1).tolist()):
            o, s = iterative_rerank(model, q[i : i + 1], p[i : i + 1, :n], mask[i : i + 1, :n])
            assert order[i, :n].tolist() == o[0].tolist()
            torch.testing.assert_close(scores[i, :n], s[0], rtol=0, atol=1e-12)


def test_ties_go_to_the_lower_index_and_scores_strictly_decrease():
    constant = lambda q, p, m: torch.full(m.shape, 0.5, dtype=torch.float64)  # noqa: E731
    saturated = lambda q, p, m: torch.ones(m.shape, dtype=torch.float64)  # noqa: E731
    q, p, mask = random_lists(b=2, n=60, lengths=(60, 33))
    for fn in (constant, saturated):
        order, scores = iterative_rerank(fn, q, p, mask)
        assert order[0].tolist() == list(range(60))
        assert order[1, :33].tolist() == list(range(33))
        for i, n in enumerate((60, 33)):
            assert (scores[i, 1:n] < scores[i, : n - 1]).all()


def test_one_score_call_per_round_for_the_whole_batch():
    calls = []

    def counting(q, p, m):
        calls.append(q.shape[0])
        return set_dependent(q, p, m)

    q, p, mask = random_lists()
    _, _, rounds = iterative_rerank(counting, q, p, mask, return_rounds=True)
    assert len(calls) == int(rounds.max()) + 1
    assert calls[0] == 4  # the empty list is never scored


def test_bad_arguments_and_nan_scores():
    q, p, mask = random_lists(b=1, n=30, lengths=(30,))
    with pytest.raises(ValueError, match="theta >= 1"):
        iterative_rerank(set_dependent, q, p, mask, theta=0)
    with pytest.raises(ValueError, match="NaN"):
        iterative_rerank(lambda a, b, m: torch.full(m.shape, math.nan), q, p, mask)
