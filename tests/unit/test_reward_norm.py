"""Reward normalisation (learner/reward_norm.py) against slow, obvious loops."""

from __future__ import annotations

import math
import random

import pytest
import torch

from shoal.learner.reward_norm import RewardNormalizer, RunningMoments


def slow_moments(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))


def test_running_moments_match_a_loop_over_everything_seen():
    rng = random.Random(0)
    moments, seen = RunningMoments(), []
    assert (moments.count, moments.mean, moments.std) == (0, 0.0, 0.0)
    for size in (1, 7, 64, 3, 0, 128, 2):
        batch = [rng.gauss(3.0, 2.5) + (50.0 if size == 3 else 0.0) for _ in range(size)]
        moments.update(torch.tensor(batch, dtype=torch.float32))
        seen += [float(torch.tensor(v, dtype=torch.float32)) for v in batch]
        mean, std = slow_moments(seen)
        assert moments.count == len(seen)
        assert moments.mean == pytest.approx(mean, rel=1e-9, abs=1e-9)
        assert moments.std == pytest.approx(std, rel=1e-9, abs=1e-9)


def test_running_mode_uses_the_moments_including_the_current_batch():
    norm, seen = RewardNormalizer("running"), []
    for batch in ([1.0, 2.0, 3.0], [10.0], [-4.0, 0.5]):
        seen += batch
        mean, std = slow_moments(seen)
        out = norm(torch.tensor(batch, dtype=torch.float64))
        expected = [(v - mean) / math.sqrt(std * std + 1e-8) for v in batch]
        assert out.tolist() == pytest.approx(expected, rel=1e-9)
    assert norm.metrics() == {
        "learner/reward_norm_mean": pytest.approx(mean),
        "learner/reward_norm_std": pytest.approx(std),
    }


def test_batch_mode_whitens_each_batch_alone_and_none_is_the_identity():
    batch = [2.0, -1.0, 0.25, 7.0]
    mean, std = slow_moments(batch)
    norm = RewardNormalizer("batch")
    for _ in range(2):  # no memory between batches
        out = norm(torch.tensor(batch, dtype=torch.float64)).tolist()
        assert out == pytest.approx([(v - mean) / math.sqrt(std * std + 1e-8) for v in batch], rel=1e-9)
    assert norm.metrics() == {}
    x = torch.tensor(batch)
    assert torch.equal(RewardNormalizer("none")(x), x)
    # A batch of equal rewards: zeros, not NaN.
    assert RewardNormalizer("batch")(torch.full((4,), 3.0)).tolist() == [0.0] * 4


def test_moments_state_round_trips_and_a_bad_mode_is_named():
    a = RewardNormalizer("running")
    a(torch.tensor([1.0, 5.0, 2.0]))
    b = RewardNormalizer("running")
    b.moments.load_state_dict(a.moments.state_dict())
    x = torch.tensor([0.0, 9.0])
    assert torch.allclose(a(x), b(x))
    with pytest.raises(ValueError, match="reward_normalization"):
        RewardNormalizer("whiten")
