"""FIFO queue: order, back-pressure, the staleness bound (checked against a slow filter)."""

from dataclasses import dataclass

import pytest

from shoal.buffer.fifo import FIFOQueue
from shoal.types import is_stale, policy_lag


@dataclass(frozen=True)
class Item:
    name: int
    policy_version: int


def test_fifo_order_and_batches():
    q = FIFOQueue(capacity=10, max_policy_lag=5)
    assert q.add([Item(i, 0) for i in range(6)]) == 6
    assert q.sample(4, learner_version=0).items == [Item(i, 0) for i in range(4)]
    assert q.sample(4, learner_version=0) is None  # only 2 left: nothing popped
    assert len(q) == 2


def test_back_pressure_refuses_and_counts():
    q = FIFOQueue(capacity=5, max_policy_lag=1)
    assert q.add([Item(i, 0) for i in range(8)]) == 5
    assert q.free() == 0 and q.stats()["buffer/rejected_full"] == 3
    assert q.add([Item(9, 0)]) == 0


@pytest.mark.parametrize("learner_version, max_lag", [(0, 0), (3, 1), (5, 2), (9, 0)])
def test_staleness_matches_slow_filter(learner_version, max_lag):
    items = [Item(i, v) for i, v in enumerate([0, 1, 2, 3, 4, 5, 3, 2, 5, 1, 9, 8])]
    expected = []
    for it in items:  # the obvious loop
        if learner_version - it.policy_version <= max_lag:
            expected.append(it)
    q = FIFOQueue(capacity=100, max_policy_lag=max_lag)
    q.add(items)
    batch = q.sample(len(expected), learner_version) if expected else None
    assert (batch.items if batch else []) == expected
    assert q.stats()["buffer/dropped_stale"] == len(items) - len(expected)
    if batch:
        assert q.last_policy_lags() == [learner_version - it.policy_version for it in expected]


def test_lag_helpers():
    assert policy_lag(5, 3) == 2
    assert is_stale(5, 2, 2) and not is_stale(5, 3, 2)


def test_capacity_must_be_positive():
    with pytest.raises(ValueError, match="buffer.capacity"):
        FIFOQueue(0, 1)
