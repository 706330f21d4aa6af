"""Ranking losses against float64 hand computations, gradients included."""

from __future__ import annotations

import math

import pytest
import torch

from listcon.model import bce_loss, circle_loss, cosent_loss, triplet_loss


def lse(values: list[float]) -> float:
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


def circle_by_hand(s: list[float], y: list[int], gamma: float, m: float) -> float:
    pos = [v for v, t in zip(s, y) if t]
    neg = [v for v, t in zip(s, y) if not t]
    a_p = [max(1 + m - v, 0.0) for v in pos]
    a_n = [max(v + m, 0.0) for v in neg]
    lp = lse([-gamma * a * (v - (1 - m)) for a, v in zip(a_p, pos)])
    ln = lse([gamma * a * (v - m) for a, v in zip(a_n, neg)])
    x = lp + ln
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))  # softplus


LISTS = [  # (scores, labels, real length)
    ([0.9, 0.2, 0.4, 0.7, 0.1], [1, 0, 0, 1, 0], 5),
    ([0.3, 0.8, 0.6, 0.0, 0.0], [1, 0, 0, 0, 0], 3),
    ([0.5, 0.45, 0.99, 0.01, 0.3], [0, 1, 0, 0, 1], 5),
]


def tensors(lists=LISTS):
    n = max(len(s) for s, _, _ in lists)
    scores = torch.tensor([s for s, _, _ in lists], dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([y for _, y, _ in lists])
    mask = torch.arange(n)[None] < torch.tensor([k for _, _, k in lists])[:, None]
    return scores, labels, mask


@pytest.mark.parametrize("gamma,m", [(10.0, -0.2), (10.0, 0.1), (32.0, 0.25)])
def test_circle_loss_equals_hand_computation_with_gradients(gamma, m):
    scores, labels, mask = tensors()
    loss = circle_loss(scores, labels, mask, gamma=gamma, m=m)
    expected = sum(circle_by_hand(s[:k], y[:k], gamma, m) for s, y, k in LISTS) / len(LISTS)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()

    # Reference gradient: autograd through the same formula in float64, alpha detached.
    ref_grad = torch.zeros_like(scores)
    for i, (s, y, k) in enumerate(LISTS):
        x = torch.tensor(s[:k], dtype=torch.float64, requires_grad=True)
        t = torch.tensor(y[:k], dtype=torch.bool)
        a_p = torch.clamp_min(1 + m - x.detach(), 0)
        a_n = torch.clamp_min(x.detach() + m, 0)
        lp = torch.logsumexp((-gamma * a_p * (x - (1 - m)))[t], 0)
        ln = torch.logsumexp((gamma * a_n * (x - m))[~t], 0)
        (torch.nn.functional.softplus(lp + ln) / len(LISTS)).backward()
        ref_grad[i, :k] = x.grad
    torch.testing.assert_close(scores.grad, ref_grad, rtol=1e-5, atol=1e-7)
    assert (scores.grad[~mask] == 0).all()


def test_circle_loss_is_stable_at_large_gamma():
    scores = torch.tensor([[1.0, 0.0, 0.999, 1e-6], [0.0, 1.0, 0.5, 0.5]], requires_grad=True)
    labels = torch.tensor([[1, 0, 1, 0], [1, 0, 0, 1]])
    loss = circle_loss(scores, labels, torch.ones_like(labels, dtype=torch.bool), gamma=256.0, m=0.25)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(scores.grad).all()
    expected = (circle_by_hand([1.0, 0.0, 0.999, 1e-6], [1, 0, 1, 0], 256, 0.25)
                + circle_by_hand([0.0, 1.0, 0.5, 0.5], [1, 0, 0, 1], 256, 0.25)) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize("loss_fn", [circle_loss, triplet_loss, cosent_loss])
def test_queries_without_positive_or_negative_do_not_dilute_the_mean(loss_fn):
    valid = LISTS[:1]
    no_positive = ([0.3, 0.2, 0.1, 0.5, 0.6], [0, 0, 0, 0, 0], 5)
    no_negative = ([0.3, 0.2, 0.1, 0.5, 0.6], [1, 1, 1, 0, 0], 3)
    alone = loss_fn(*tensors(valid))
    mixed = loss_fn(*tensors([no_positive, *valid, no_negative]))
    assert mixed.item() == pytest.approx(alone.item(), rel=1e-12)
    nothing = loss_fn(*tensors([no_positive]))
    nothing.backward()
    assert nothing.item() == 0.0


def test_bce_equals_hand_computation():
    scores, labels, mask = tensors()
    expected = 0.0
    for s, y, k in LISTS:
        expected += sum(-(t * math.log(v) + (1 - t) * math.log(1 - v)) if 0 < v < 1 else
                        -(t * math.log(max(v, 1e-7)) + (1 - t) * math.log(max(1 - v, 1e-7)))
                        for v, t in zip(s[:k], y[:k])) / k
    assert bce_loss(scores, labels, mask).item() == pytest.approx(expected / len(LISTS), rel=1e-5)


def test_triplet_equals_hand_computation():
    scores, labels, mask = tensors()
    expected = 0.0
    for s, y, k in LISTS:
        pairs = [(p, n) for p, tp in zip(s[:k], y[:k]) if tp for n, tn in zip(s[:k], y[:k]) if not tn]
        expected += sum(max(0.0, 0.1 - (p - n)) for p, n in pairs) / len(pairs)
    assert triplet_loss(scores, labels, mask, margin=0.1).item() == pytest.approx(expected / len(LISTS), rel=1e-6)


def test_cosent_respects_graded_labels():
    s, y = [0.2, 0.9, 0.5, 0.4], [2, 1, 0, 1]
    scores = torch.tensor([s], dtype=torch.float64)
    pairs = [(i, j) for i in range(4) for j in range(4) if y[i] > y[j]]
    expected = math.log1p(sum(math.exp(20 * (s[j] - s[i])) for i, j in pairs))
    got = cosent_loss(scores, torch.tensor([y]), torch.ones(1, 4, dtype=torch.bool))
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_shape_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="share one"):
        circle_loss(torch.zeros(2, 3), torch.zeros(2, 4), torch.ones(2, 3, dtype=torch.bool))
