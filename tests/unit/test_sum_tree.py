"""buffer/sum_tree.py against a slow list: totals, minima, prefix-sum search, sampling frequencies."""

from __future__ import annotations

import math

import numpy as np
import pytest

from shoal.buffer.sum_tree import MinTree, SumTree


def _slow_find(leaves: list[float], x: float) -> int:
    """The smallest i with leaves[0] + ... + leaves[i] > x (the last positive leaf if none)."""
    running = 0.0
    for i, v in enumerate(leaves):
        running += v
        if running > x:
            return i
    return max(i for i, v in enumerate(leaves) if v > 0)


def _random_ops(capacity: int, seed: int, rounds: int = 30):
    """Random batched writes (with duplicate indices and zeros); yields the slow list after each."""
    rng = np.random.default_rng(seed)
    for _ in range(rounds):
        k = int(rng.integers(1, capacity + 3))
        idx = rng.integers(0, capacity, size=k)
        vals = rng.integers(0, 6, size=k).astype(float)  # integers: prefix sums are exact
        yield idx, vals


@pytest.mark.parametrize("capacity", [1, 2, 3, 5, 8, 13, 64])
def test_sum_and_min_match_slow_list_after_random_writes(capacity):
    s, m = SumTree(capacity), MinTree(capacity)
    leaves, mins = [0.0] * capacity, [math.inf] * capacity
    for idx, vals in _random_ops(capacity, seed=capacity):
        s.set(idx, vals)
        m.set(idx, vals)
        for i, v in zip(idx.tolist(), vals.tolist()):  # the obvious loop: last write wins
            leaves[i], mins[i] = v, v
        assert s.total == sum(leaves)
        assert m.min == min(mins)
        assert s.leaves().tolist() == leaves
        assert s.get(np.arange(capacity)).tolist() == leaves


@pytest.mark.parametrize("capacity", [1, 3, 5, 13, 64])
def test_find_prefix_sum_matches_slow_search_including_boundaries(capacity):
    s = SumTree(capacity)
    for idx, vals in _random_ops(capacity, seed=100 + capacity, rounds=10):
        s.set(idx, vals)
        leaves = s.leaves().tolist()
        if sum(leaves) == 0:
            continue
        cums = list(np.cumsum(leaves))
        xs = [
            0.0,
            sum(leaves),
            *cums,
            *[c - 0.5 for c in cums if c >= 0.5],
            *np.random.default_rng(0).uniform(0, sum(leaves), 50),
        ]
        xs = [x for x in xs if 0 <= x <= sum(leaves)]
        got = s.find_prefix_sum(xs).tolist()
        assert got == [_slow_find(leaves, x) for x in xs]
        assert all(leaves[i] > 0 for i in got)  # never an empty slot


def test_zero_leaves_are_never_sampled():
    s = SumTree(10)
    s.set([0, 3, 9], [0.0, 1e-9, 2.0])
    idx = s.sample(5000, np.random.default_rng(0))
    assert set(idx.tolist()) <= {3, 9}


def test_sampling_frequencies_match_masses_chi_square():
    masses = np.array([1.0, 0.0, 3.0, 0.5, 6.0, 2.5, 0.0, 7.0, 1.0])
    s = SumTree(len(masses))
    s.set(np.arange(len(masses)), masses)
    n = 40_000
    counts = np.bincount(s.sample(n, np.random.default_rng(1)), minlength=len(masses))
    assert counts[masses == 0].sum() == 0
    expected = n * masses / masses.sum()
    pos = masses > 0
    chi2 = float((((counts - expected) ** 2)[pos] / expected[pos]).sum())
    dof = int(pos.sum()) - 1
    assert chi2 < dof + 5 * math.sqrt(2 * dof), (chi2, counts.tolist(), expected.tolist())


def test_min_tree_empty_is_inf_and_clears():
    m = MinTree(4)
    assert m.min == math.inf
    m.set([1, 2], [3.0, 0.5])
    m.set(2, math.inf)
    assert m.min == 3.0


def test_errors_name_the_bad_value():
    s = SumTree(4)
    with pytest.raises(ValueError, match="-1.0"):
        s.set([0], [-1.0])
    with pytest.raises(ValueError, match="nan"):
        s.set([0], [math.nan])
    with pytest.raises(IndexError, match=r"\[0, 4\)"):
        s.set([4], [1.0])
    with pytest.raises(ValueError, match="total mass 0"):
        s.find_prefix_sum([0.0])
    s.set([1], [2.0])
    with pytest.raises(ValueError, match="prefix sums"):
        s.find_prefix_sum([2.5])
    with pytest.raises(ValueError, match="capacity"):
        SumTree(0)
