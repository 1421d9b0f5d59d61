"""Segment trees for prioritized replay: a sum tree (sampling by prefix sum) and a min tree.

Schaul et al. 2016 (PER), as in OpenAI baselines' `SegmentTree`: a complete binary tree in
one array, node i has children 2i and 2i+1, leaves at [size, 2 size) with size the capacity
rounded up to a power of two. `SumTree.find_prefix_sum(x)` returns, for each x in
[0, total), the smallest leaf i with leaf_0 + ... + leaf_i > x, so drawing x uniformly in
[0, total) samples leaf i with probability leaf_i / total. `MinTree.min` gives the smallest
live priority, for the PER importance-weight normalisation max_j w_j = (N P_min)^-beta.

Deviations from baselines:
- Vectorized with numpy: `set` writes a batch of leaves and recomputes only their ancestors,
  level by level (parents from children, never by adding deltas, so sums do not drift;
  recomputing a parent twice is harmless, so no per-level deduplication);
  `find_prefix_sum` descends for a whole batch at once. Duplicate indices in one `set`: the
  last value wins (as a Python loop would).
- The descent goes right only when the right subtree has positive mass, so a prefix sum that
  rounding pushes to `total` still lands on a positive leaf, never on an empty slot.
- Priorities must be finite and >= 0 (ValueError naming the first bad one).

No Ray (RLlib's segment trees would import it). Tests: `pytest tests/unit/test_sum_tree.py`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


class SegmentTree:
    """Array segment tree over `capacity` leaves with an associative `op` and its neutral element."""

    def __init__(self, capacity: int, op: Callable[[np.ndarray, np.ndarray], np.ndarray], neutral: float) -> None:
        if capacity <= 0:
            raise ValueError(f"segment tree capacity must be > 0, got {capacity}")
        self.capacity = int(capacity)
        self.depth = max(0, (self.capacity - 1).bit_length())
        self.size = 1 << self.depth
        self.op, self.neutral = op, float(neutral)
        self.tree = np.full(2 * self.size, self.neutral, dtype=np.float64)

    def _check_indices(self, indices: np.ndarray) -> None:
        if indices.size and (indices.min() < 0 or indices.max() >= self.capacity):
            raise IndexError(
                f"leaf indices must be in [0, {self.capacity}), got min {indices.min()} max {indices.max()}"
            )

    def set(self, indices, values) -> None:
        """Leaves[indices] = values (broadcast), then recompute their ancestors."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        vals = np.broadcast_to(np.asarray(values, dtype=np.float64), idx.shape)
        self._check_indices(idx)
        if idx.size > 1:  # keep the last write of each index (numpy leaves duplicates unordered)
            idx, last = np.unique(idx[::-1], return_index=True)
            vals = vals[::-1][last]
        nodes = idx + self.size
        self.tree[nodes] = vals
        for _ in range(self.depth):  # parents from children: repeated nodes are harmless
            nodes = nodes // 2
            self.tree[nodes] = self.op(self.tree[2 * nodes], self.tree[2 * nodes + 1])

    def get(self, indices) -> np.ndarray:
        """Leaf values at `indices`."""
        idx = np.asarray(indices, dtype=np.int64)
        self._check_indices(idx.reshape(-1))
        return self.tree[idx + self.size]

    def leaves(self) -> np.ndarray:
        """A copy of all `capacity` leaf values."""
        return self.tree[self.size : self.size + self.capacity].copy()

    @property
    def root(self) -> float:
        return float(self.tree[1])


class SumTree(SegmentTree):
    """Leaves are non-negative masses; `total` is their sum; sample by prefix sum."""

    def __init__(self, capacity: int) -> None:
        super().__init__(capacity, np.add, 0.0)

    def set(self, indices, values) -> None:
        vals = np.asarray(values, dtype=np.float64)
        bad = ~np.isfinite(vals) | (vals < 0)
        if bad.any():
            raise ValueError(f"sum tree values must be finite and >= 0, got {vals.reshape(-1)[bad.reshape(-1)][0]}")
        super().set(indices, vals)

    @property
    def total(self) -> float:
        return self.root

    def find_prefix_sum(self, prefix_sums) -> np.ndarray:
        """For each x in [0, total): the smallest leaf i with sum(leaves[: i + 1]) > x."""
        x = np.array(prefix_sums, dtype=np.float64).reshape(-1)
        if self.total <= 0:
            raise ValueError(f"cannot sample from a sum tree with total mass {self.total}")
        if x.size == 0:
            return np.zeros(0, dtype=np.int64)
        if x.min() < 0 or x.max() > self.total:
            raise ValueError(f"prefix sums must be in [0, {self.total}], got [{x.min()}, {x.max()}]")
        node = np.ones_like(x, dtype=np.int64)
        for _ in range(self.depth):
            left_child = 2 * node
            left = self.tree[left_child]
            go_right = (x >= left) & (self.tree[left_child + 1] > 0)
            x = np.where(go_right, x - left, x)
            node = left_child + go_right
        return node - self.size

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """n leaf indices drawn independently with probability leaf / total (with replacement)."""
        return self.find_prefix_sum(rng.uniform(0.0, self.total, size=n))


class MinTree(SegmentTree):
    """Leaves hold values (+inf when empty); `min` is the smallest."""

    def __init__(self, capacity: int) -> None:
        super().__init__(capacity, np.minimum, np.inf)

    @property
    def min(self) -> float:
        return self.root
