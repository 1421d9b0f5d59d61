"""Prioritized sequence replay: sampling frequencies, IS weights, eviction, rate limiter, staleness."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest

from shoal.buffer.prioritized import PRIORITY_FLOOR, PrioritizedSequenceReplay, SampleToInsertRatio
from shoal.buffer.sequences import cut_episode
from shoal.core import ReplayBuffer
from shoal.services.stages import BufferStage
from shoal.types import Episode, SequenceItem, Turn


@dataclass(frozen=True)
class Item:
    name: int
    policy_version: int = 0


def _items(n: int, start: int = 0, version: int = 0) -> list[Item]:
    return [Item(start + i, version) for i in range(n)]


def _chi2(counts: np.ndarray, probs: np.ndarray) -> tuple[float, int]:
    expected = counts.sum() * probs
    return float(((counts - expected) ** 2 / expected).sum()), len(probs) - 1


def test_contract_basics():
    buf = PrioritizedSequenceReplay(capacity=8, seed=0)
    assert isinstance(buf, ReplayBuffer)
    assert buf.add(_items(5)) == 5 and len(buf) == 5 and buf.free() == 8
    batch = buf.sample(4, learner_version=0)
    assert len(batch.items) == len(batch.keys) == len(batch.weights) == 4
    assert all(it == Item(k) for it, k in zip(batch.items, batch.keys))  # key = insert index here
    stats = buf.stats()
    assert stats["buffer/size"] == 5 and stats["buffer/inserts"] == 5 and stats["buffer/samples"] == 4
    assert stats["buffer/fill"] == 5 / 8 and stats["buffer/samples_per_insert"] == 4 / 5
    assert stats["buffer/priority_max"] == 1.0 and stats["buffer/evicted"] == 0


@pytest.mark.parametrize("alpha", [0.9, 0.0, 1.0])
def test_sampling_frequencies_match_priorities_to_the_alpha(alpha):
    buf = PrioritizedSequenceReplay(capacity=8, priority_exponent=alpha, seed=1)
    buf.add(_items(6))
    raw = np.array([0.5, 1.0, 2.0, 4.0, 0.25, 3.0])
    buf.update_priorities(list(range(6)), raw)
    counts = np.zeros(6)
    for _ in range(5000):
        for k in buf.sample(6, 0).keys:
            counts[k] += 1
    want = raw**alpha / (raw**alpha).sum()  # the obvious formula
    chi2, dof = _chi2(counts, want)
    assert chi2 < dof + 5 * math.sqrt(2 * dof), (chi2, counts.tolist())
    np.testing.assert_allclose(buf.probabilities(range(6)), want, rtol=1e-12)


@pytest.mark.parametrize("beta", [0.6, 0.0, 1.0])
def test_importance_weights_match_loop_over_all_held_items(beta):
    buf = PrioritizedSequenceReplay(capacity=10, priority_exponent=0.9, importance_sampling_exponent=beta, seed=2)
    buf.add(_items(7))
    raw = [0.1, 2.0, 0.7, 5.0, 1.0, 0.3, 2.2]
    buf.update_priorities(range(7), raw)
    batch = buf.sample(7, 0)
    scaled = [p**0.9 for p in raw]
    probs = [s / sum(scaled) for s in scaled]
    max_w = max((7 * p) ** -beta for p in probs)  # over every held item, not just the batch
    for k, w in zip(batch.keys, batch.weights):
        assert w == pytest.approx((7 * probs[k]) ** -beta / max_w, rel=1e-9)
    assert max(batch.weights) <= 1.0 + 1e-12


def test_importance_weights_can_be_switched_off():
    buf = PrioritizedSequenceReplay(capacity=4, use_importance_weights=False)
    buf.add(_items(4))
    buf.update_priorities([0, 1], [9.0, 0.1])
    assert buf.sample(4, 0).weights == [1.0] * 4


def test_new_items_get_the_max_priority_seen_so_far():
    buf = PrioritizedSequenceReplay(capacity=10, priority_exponent=1.0)
    buf.add(_items(2))
    buf.update_priorities([0, 1], [5.0, 0.5])
    buf.update_priorities([0], [0.1])  # the max seen stays 5.0
    buf.add(_items(1, start=2))
    probs = buf.probabilities([0, 1, 2])
    np.testing.assert_allclose(probs, np.array([0.1, 0.5, 5.0]) / 5.6)
    assert buf.stats()["buffer/priority_max"] == 5.0


def test_fifo_eviction_order_and_stale_keys_are_ignored():
    buf = PrioritizedSequenceReplay(capacity=4, priority_exponent=1.0, seed=3)
    buf.add(_items(6))  # items 0 and 1 are evicted, in insertion order
    assert len(buf) == 4 and buf.stats()["buffer/evicted"] == 2
    held = set()
    for _ in range(50):
        held.update(it.name for it in buf.sample(4, 0).items)
    assert held == {2, 3, 4, 5}
    # key 0 lived in the slot item 4 holds now: its late priority must not touch item 4.
    assert buf.update_priorities([0, 4], [1000.0, 2.0]) == 1
    np.testing.assert_allclose(buf.probabilities([2, 3, 4, 5]), np.array([1, 1, 2, 1]) / 5)
    assert buf.stats()["buffer/ignored_priority_updates"] == 1
    buf.add(_items(1, start=6))  # evicts the oldest (item 2), regardless of priority
    assert {it.name for _ in range(30) for it in buf.sample(4, 0).items} == {3, 4, 5, 6}


def test_one_add_larger_than_capacity_keeps_the_newest():
    buf = PrioritizedSequenceReplay(capacity=3)
    assert buf.add(_items(7)) == 7
    assert len(buf) == 3 and buf.stats()["buffer/evicted"] == 4
    assert {it.name for it in buf.sample(3, 0).items} <= {4, 5, 6}


def test_too_few_items_return_none_and_impossible_batches_raise():
    buf = PrioritizedSequenceReplay(capacity=8, min_size_to_sample=3)
    buf.add(_items(2))
    assert buf.sample(2, 0) is None  # below min_size_to_sample
    buf.add(_items(2, start=2))
    assert buf.sample(5, 0) is None  # fewer items than the batch: never a padded or repeated garbage batch
    assert buf.sample(4, 0) is not None
    with pytest.raises(ValueError, match=r"capacity=8\], got 9"):
        buf.sample(9, 0)
    with pytest.raises(ValueError, match="got 0"):
        buf.sample(0, 0)
    with pytest.raises(ValueError, match="min_size_to_sample"):
        PrioritizedSequenceReplay(capacity=4, min_size_to_sample=5)
    with pytest.raises(ValueError, match="buffer.capacity"):
        PrioritizedSequenceReplay(capacity=0)


@pytest.mark.parametrize("learner_version, max_lag", [(0, 0), (3, 1), (5, 2), (9, 0)])
def test_stale_items_are_dropped_like_a_slow_filter(learner_version, max_lag):
    versions = [0, 1, 2, 3, 4, 5, 3, 2, 5, 1, 9, 8]
    items = [Item(i, v) for i, v in enumerate(versions)]
    fresh = {it.name for it in items if learner_version - it.policy_version <= max_lag}  # the obvious loop
    buf = PrioritizedSequenceReplay(capacity=20, max_policy_lag=max_lag, seed=4)
    buf.add(items)
    batch = buf.sample(1, learner_version) if fresh else None
    assert len(buf) == len(fresh)
    assert buf.stats()["buffer/dropped_stale"] == len(items) - len(fresh)
    if batch:
        assert batch.dropped_stale == len(items) - len(fresh)
        seen = {it.name for _ in range(100) for it in buf.sample(1, learner_version).items}
        assert seen == fresh
        last = buf.sample(1, learner_version)
        assert buf.last_policy_lags() == [learner_version - it.policy_version for it in last.items]
    dropped_keys = [i for i in range(len(items)) if i not in fresh]
    assert buf.update_priorities(dropped_keys, [1.0] * len(dropped_keys)) == 0


def test_offline_items_are_never_stale():
    # Offline data (ILQL's data set, scripted policies) has policy_version -1: no learner made it,
    # so a staleness bound must not drop it however far the learner has moved on.
    buf = PrioritizedSequenceReplay(capacity=20, max_policy_lag=2, seed=4)
    buf.add(_items(6, version=-1) + _items(3, start=6, version=0))
    batch = buf.sample(4, learner_version=100)
    assert batch is not None and batch.dropped_stale == 3  # only the on-policy version-0 items
    assert len(buf) == 6 and buf.stats()["buffer/dropped_stale"] == 3
    assert {it.name for _ in range(50) for it in buf.sample(2, 100).items} == set(range(6))


def test_priorities_are_validated_and_floored():
    buf = PrioritizedSequenceReplay(capacity=4)
    buf.add(_items(3))
    with pytest.raises(ValueError, match="key 1 must be finite"):
        buf.update_priorities([0, 1], [1.0, math.nan])
    with pytest.raises(ValueError, match="-0.5"):
        buf.update_priorities([2], [-0.5])
    with pytest.raises(ValueError, match="2 keys but 1"):
        buf.update_priorities([0, 1], [1.0])
    buf.update_priorities([0, 1, 2], [0.0, 0.0, 0.0])  # all-zero TD errors: still samplable
    assert buf.stats()["buffer/priority_max"] == PRIORITY_FLOOR
    assert len(buf.sample(3, 0).items) == 3


def test_rate_limiter_blocks_and_permits_by_hand():
    # spi = 2, min size 4, error_buffer 4: offset 8; inserts while 2 I - S <= 12, samples while 2 I - S - k >= 4.
    buf = PrioritizedSequenceReplay(capacity=100, samples_per_insert=2.0, min_size_to_sample=4, error_buffer=4.0)
    assert buf.add(_items(10)) == 6 and buf.free() == 0  # actors pushed back
    assert buf.stats()["buffer/rate_limited_inserts"] == 4
    assert [buf.sample(2, 0) is not None for _ in range(5)] == [True] * 4 + [False]  # learner ahead
    assert buf.stats()["buffer/rate_limited_samples"] == 1
    assert buf.free() == 4 and buf.add(_items(5, start=10)) == 4
    assert buf.sample(2, 0) is not None


def test_rate_limiter_invariants_and_no_deadlock_under_random_interleaving():
    spi, min_size, eb, batch = 4.0, 8, 40.0, 16
    buf = PrioritizedSequenceReplay(
        capacity=50, samples_per_insert=spi, min_size_to_sample=min_size, error_buffer=eb, seed=5
    )
    rng = np.random.default_rng(6)
    offset = spi * min_size
    for step in range(500):
        progressed = False
        if rng.random() < 0.5:
            progressed |= buf.add(_items(int(rng.integers(1, 6)))) > 0
        progressed |= buf.sample(batch, 0) is not None
        if not progressed:  # neither side could move: the other one must be able to
            assert buf.add(_items(1)) == 1 or buf.sample(batch, 0) is not None, step
        diff = spi * buf.inserts - buf.samples
        assert diff <= offset + eb + 1e-9  # actors never run ahead of the band
        if buf.samples:
            assert diff >= offset - eb - 1e-9  # the learner never runs ahead of the band
    assert abs(buf.samples / buf.inserts - spi) < (offset + eb) / buf.inserts


def test_rate_limiter_deadlock_is_refused_or_avoided():
    buf = PrioritizedSequenceReplay(capacity=100, samples_per_insert=1.0, min_size_to_sample=4, error_buffer=2.0)
    buf.add(_items(10))
    with pytest.raises(ValueError, match="would deadlock"):
        buf.sample(8, 0)
    auto = SampleToInsertRatio(1.0, min_size_to_sample=4)
    auto.check_batch(32)
    assert auto.error_buffer == (32 + 1.0) / 2


def test_stale_drops_cannot_starve_the_learner_under_the_rate_limiter():
    buf = PrioritizedSequenceReplay(
        capacity=100, samples_per_insert=1.0, min_size_to_sample=4, error_buffer=8.0, max_policy_lag=0
    )
    buf.add(_items(12, version=0))
    assert buf.sample(4, learner_version=0) is not None
    assert buf.sample(4, learner_version=1) is None and len(buf) == 0  # everything went stale
    assert buf.free() >= 4 and buf.add(_items(4, start=100, version=1)) == 4  # inserts re-open
    assert buf.sample(4, learner_version=1) is not None


def test_same_seed_same_batches():
    a, b = PrioritizedSequenceReplay(capacity=16, seed=9), PrioritizedSequenceReplay(capacity=16, seed=9)
    for buf in (a, b):
        buf.add(_items(16))
        buf.update_priorities(range(16), np.linspace(0.1, 3.0, 16))
    assert a.sample(8, 0).keys == b.sample(8, 0).keys


def test_sequence_items_through_buffer_stage():
    turns = [Turn(f"o{t}", f"a{t}", 0.0, t == 9) for t in range(10)]
    ep = Episode("e0", "corridor", turns, policy_version=3)
    items = cut_episode(ep, np.zeros((10, 2, 4), np.float32), 2, 4, 2)
    stage = BufferStage(PrioritizedSequenceReplay(capacity=32, seed=0))
    assert stage.add(items) == 32
    batch = stage.sample(4, learner_version=5)
    assert all(isinstance(it, SequenceItem) for it in batch.items)
    assert stage.stats()["buffer/size"] == len(items)
