"""LMRL-Gym normalised score against a slow, obvious reference loop."""

import random

import numpy as np
import pytest

from shoal.rollout.envs import dataset_anchors, normalized_score, normalized_scores


def slow_score(ret, lo, avg, hi):
    """Walk the two segments [(lo, 0) -> (avg, 50)] and [(avg, 50) -> (hi, 100)] explicitly."""
    points = [(lo, 0.0), (avg, 50.0), (hi, 100.0)]
    seg = 0 if ret <= avg else 1
    (x0, y0), (x1, y1) = points[seg], points[seg + 1]
    slope = (y1 - y0) / (x1 - x0)
    return y0 + slope * (ret - x0)


def test_matches_the_slow_reference():
    rng = random.Random(0)
    for _ in range(300):
        lo = rng.uniform(-100, 0)
        avg = lo + rng.uniform(0.1, 50)
        hi = avg + rng.uniform(0.1, 50)
        rets = [rng.uniform(lo - 20, hi + 20) for _ in range(8)] + [lo, avg, hi]
        expected = [slow_score(r, lo, avg, hi) for r in rets]
        assert [normalized_score(r, lo, avg, hi) for r in rets] == pytest.approx(expected, abs=1e-9)
        np.testing.assert_allclose(normalized_scores(rets, lo, avg, hi), expected, atol=1e-9)


def test_anchors_and_lmrl_maze_example():
    assert [normalized_score(r, -100, -40, 0) for r in (-100, -40, 0, -70, -20, -110)] == [
        0,
        50,
        100,
        25,
        75,
        pytest.approx(-50 / 6),
    ]
    assert dataset_anchors([-3.0, 0.0, -6.0]) == (-6.0, -3.0, 0.0)


@pytest.mark.parametrize("anchors", [(0, 0, 1), (0, 1, 1), (1, 0, 2), (0, 0, 0)])
def test_degenerate_anchors_are_refused(anchors):
    with pytest.raises(ValueError, match="min < average < max"):
        normalized_score(0.5, *anchors)
    with pytest.raises(ValueError):
        normalized_scores([0.5], *anchors)
