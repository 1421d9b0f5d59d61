"""Bradley-Terry losses against slow loops written with math.log / math.exp."""

from __future__ import annotations

import math
import random

import pytest
import torch

from shoal.reward.bradley_terry import bradley_terry_loss, pairwise_accuracy, pearson, ranking_loss


def _neg_log_sigmoid(d: float) -> float:
    return -math.log(1.0 / (1.0 + math.exp(-d)))


def _slow_bt(rc: list[float], rr: list[float]) -> float:
    return sum(_neg_log_sigmoid(c - r) for c, r in zip(rc, rr)) / len(rc)


def _slow_ranking(rows: list[list[float]]) -> float:
    total, count = 0.0, 0
    for row in rows:
        for i in range(len(row)):
            for j in range(i + 1, len(row)):
                total += _neg_log_sigmoid(row[i] - row[j])
                count += 1
    return total / count


def _randn(rng: random.Random, *shape: int) -> list:
    if len(shape) == 1:
        return [rng.gauss(0, 3) for _ in range(shape[0])]
    return [_randn(rng, *shape[1:]) for _ in range(shape[0])]


def test_bt_loss_matches_loop():
    rng = random.Random(0)
    rc, rr = _randn(rng, 37), _randn(rng, 37)
    got = bradley_terry_loss(torch.tensor(rc, dtype=torch.float64), torch.tensor(rr, dtype=torch.float64)).item()
    assert got == pytest.approx(_slow_bt(rc, rr), rel=1e-10)


def test_bt_loss_values_and_stability():
    zero = torch.zeros(4)
    assert bradley_terry_loss(zero, zero).item() == pytest.approx(math.log(2))
    big = bradley_terry_loss(torch.tensor([-200.0]), torch.tensor([200.0]))
    assert big.item() == pytest.approx(400.0)  # softplus, no overflow to inf
    assert bradley_terry_loss(torch.tensor([200.0]), torch.tensor([-200.0])).item() == pytest.approx(0.0, abs=1e-12)


def test_bt_loss_gradient_pushes_chosen_up():
    rc, rr = torch.tensor([0.3], requires_grad=True), torch.tensor([0.5], requires_grad=True)
    bradley_terry_loss(rc, rr).backward()
    sig = 1.0 / (1.0 + math.exp(-(0.3 - 0.5)))
    assert rc.grad.item() == pytest.approx(-(1 - sig))
    assert rr.grad.item() == pytest.approx(1 - sig)


def test_bt_loss_rejects_shape_mismatch():
    with pytest.raises(ValueError, match=r"\(3,\).*\(4,\)"):
        bradley_terry_loss(torch.zeros(3), torch.zeros(4))


@pytest.mark.parametrize("k", [2, 3, 4, 7])
def test_ranking_loss_matches_loop(k):
    rng = random.Random(k)
    rows = _randn(rng, 5, k)
    got = ranking_loss(torch.tensor(rows, dtype=torch.float64)).item()
    assert got == pytest.approx(_slow_ranking(rows), rel=1e-10)


def test_ranking_loss_k2_is_pairwise_loss():
    rng = random.Random(1)
    rows = torch.tensor(_randn(rng, 9, 2), dtype=torch.float64)
    assert ranking_loss(rows).item() == pytest.approx(bradley_terry_loss(rows[:, 0], rows[:, 1]).item(), rel=1e-12)


def test_ranking_loss_rejects_bad_shape():
    with pytest.raises(ValueError, match=r"\(4, 1\)"):
        ranking_loss(torch.zeros(4, 1))


def test_pairwise_accuracy_matches_loop():
    rng = random.Random(2)
    rc, rr = _randn(rng, 50), _randn(rng, 50)
    rr[:5] = rc[:5]  # ties count one half
    slow = sum(1.0 if c > r else 0.5 if c == r else 0.0 for c, r in zip(rc, rr)) / 50
    assert pairwise_accuracy(torch.tensor(rc), torch.tensor(rr)) == pytest.approx(slow)


def test_pearson_matches_loop():
    rng = random.Random(3)
    xs = _randn(rng, 40)
    ys = [x + rng.gauss(0, 2) for x in xs]
    mx, my = sum(xs) / 40, sum(ys) / 40
    cov = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    slow = cov / math.sqrt(sum((x - mx) ** 2 for x in xs) * sum((y - my) ** 2 for y in ys))
    assert pearson(torch.tensor(xs), torch.tensor(ys)) == pytest.approx(slow, rel=1e-6)
    assert math.isnan(pearson(torch.ones(5), torch.arange(5.0)))
