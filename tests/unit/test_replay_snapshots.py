"""Replay snapshots (buffer/*.py `snapshot` / `restore`, shoal.types records): every replay
kind goes through JSON and, restored into a fresh replay, behaves exactly as the original
for whatever comes next - the same batches, keys, weights and counters. This is what a
restarted buffer actor and a resumed run depend on."""

from __future__ import annotations

import json

import numpy as np
import pytest

from shoal.buffer.episode_replay import EpisodeReplay
from shoal.buffer.fifo import FIFOQueue
from shoal.buffer.groups import GroupQueue
from shoal.buffer.pairs import PairDataset, PairQueue
from shoal.buffer.prioritized import PrioritizedSequenceReplay
from shoal.buffer.sequences import cut_episode
from shoal.types import (
    Episode,
    PreferencePair,
    Prompt,
    RewardTerms,
    Rollout,
    ScoredRollout,
    Turn,
    from_record,
    to_record,
)


def _json(x):
    return json.loads(json.dumps(x))


def _scored(i: int, version: int, prompt: int | None = None) -> ScoredRollout:
    pid = f"keywords-p{i if prompt is None else prompt}"
    p = Prompt(pid, "write about ko :", [1, 5, 6], {"topic": "ko"})
    r = Rollout(p, [7, 8, i % 5], "kofa", [-0.5, -1.25, -0.125], version, "rollout-0", "stop")
    return ScoredRollout(
        r, RewardTerms({"reward_model": 0.1 * i}, [-0.4, -1.0, -0.2], {"gold": 0.25 * (i % 3)}), 0.1 * i
    )


def _pair(i: int, version: int = -1) -> PreferencePair:
    p = Prompt(f"p{i}", "q", [3, 4], {})
    return PreferencePair(f"pair{i}", p, [5, i], [6, i], "a", "b", version, 0.5, 0.25 if i % 2 else None)


def _episode(i: int, turns: int = 6, version: int = 0) -> Episode:
    ts = [Turn(f"o{i}.{t}", f"a{t}", float(t == turns - 1), t == turns - 1, {"k": t}) for t in range(turns)]
    return Episode(f"ep{i}", "cue", ts, version, "rollout-1", "")


def _states(turns: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(turns, 2, 3)).astype(np.float32)


def _same(a, b):
    """Equal replay items, arrays compared by value and dtype."""
    ra, rb = to_record(a), to_record(b)
    assert ra == rb


def test_records_round_trip_every_item_type_through_json():
    item = cut_episode(_episode(1), _states(6, 0), 2, 2, 1)[1]
    for x in (_scored(3, 2), _pair(4, 1), _episode(2), item):
        y = from_record(_json(to_record(x)))
        assert type(y) is type(x)
        _same(x, y)
    y = from_record(_json(to_record(item)))
    assert y.start_state.dtype == np.float32 and np.array_equal(y.start_state, item.start_state)
    with pytest.raises(ValueError, match="unknown replay record type 'Rollout'"):
        from_record({"type": "Rollout"})
    with pytest.raises(TypeError, match="no JSON record for dict"):
        to_record({})


def test_group_queue_restored_serves_the_same_groups():
    q = GroupQueue(capacity=20, max_policy_lag=1)
    q.add([_scored(i, 0, prompt=i // 3) for i in range(9)])  # 3 groups of 3
    q.add([_scored(9, 0, prompt=9)])  # a group of 1: dropped small
    q.sample(1, learner_version=0)
    q.add([_scored(i, 1, prompt=i // 4) for i in range(12, 24)])  # 3 groups of 4, one refused (full)
    r = GroupQueue(capacity=20, max_policy_lag=1)
    r.restore(_json(q.snapshot()))
    assert r.stats() | {"buffer/queue_wait_s": 0} == q.stats() | {"buffer/queue_wait_s": 0}
    a, b = q.sample(2, learner_version=2), r.sample(2, learner_version=2)  # the version-0 groups are stale
    assert a is not None and b is not None and a.dropped_stale == b.dropped_stale == 6
    for x, y in zip(a.items, b.items, strict=True):
        _same(x, y)
    assert r.stats() | {"buffer/queue_wait_s": 0} == q.stats() | {"buffer/queue_wait_s": 0}


def test_pair_queue_restored_serves_the_same_pairs():
    def judge(s):
        return s.reward

    q = PairQueue(capacity=6, max_policy_lag=3, score=judge, pairing="all_pairs", group_size=3)
    q.add([_scored(i, 0, prompt=i // 3) for i in range(6)])
    q.sample(2, learner_version=1)
    r = PairQueue(capacity=6, max_policy_lag=3, score=judge, pairing="all_pairs", group_size=3)
    r.restore(_json(q.snapshot()))
    assert r.stats() == q.stats() and r.room() == q.room()
    for x, y in zip(q.sample(4, 2).items, r.sample(4, 2).items, strict=True):
        _same(x, y)


def test_pair_dataset_continues_its_pass_and_refuses_another_data_set():
    pairs = [_pair(i) for i in range(10)]
    d = PairDataset(capacity=10, seed=4)
    d.add(pairs)
    for _ in range(3):
        d.sample(3, learner_version=0)  # the second pass has begun
    r = PairDataset(capacity=10, seed=99)
    r.add(pairs)
    r.restore(_json(d.snapshot()))
    for _ in range(5):
        assert [p.pair_id for p in r.sample(4, 0).items] == [p.pair_id for p in d.sample(4, 0).items]
    assert r.stats() == d.stats()
    other = PairDataset(capacity=10)
    other.add(pairs[:7])
    with pytest.raises(ValueError, match="snapshot is of 10 pairs but the data set has 7"):
        other.restore(_json(d.snapshot()))


def _r2d2(seed: int = 0) -> EpisodeReplay:
    replay = PrioritizedSequenceReplay(
        capacity=12, samples_per_insert=2.0, min_size_to_sample=4, max_policy_lag=3, seed=seed
    )
    return EpisodeReplay(replay, cut=lambda ep, st: cut_episode(ep, st, 2, 2, 1), recent=4)


def test_prioritized_sequence_replay_restored_draws_the_same_batches_keys_and_weights():
    """Items with stored states, evictions, priorities, the rate limiter's pending queue and
    the sampling RNG: after a restore the next batches are identical."""
    e = _r2d2()
    for i in range(6):
        e.add([(_episode(i, version=i // 2), _states(6, i))])  # 4 items each: evictions, some pending
        b = e.sample(4, learner_version=i // 2) if i % 2 else None
        if b is not None:
            e.update_priorities(b.keys, [0.1 * (k % 7) + 0.05 for k in b.keys])
    assert len(e.pending) > 0 and e.replay.evicted > 0, (len(e.pending), e.replay.evicted)
    r = _r2d2(seed=123)  # a different seed: the RNG comes from the snapshot
    r.restore(_json(e.snapshot()))
    assert r.stats() == e.stats() and r.free() == e.free()
    assert r.recent_episodes(4) == []  # the dQ diagnostic's episodes are not in a snapshot
    for step in range(6):
        ep = (_episode(10 + step, version=2), _states(6, 10 + step))
        e.add([ep])
        r.add([ep])
        a, b = e.sample(4, learner_version=3), r.sample(4, learner_version=3)
        assert (a is None) == (b is None)
        if a is not None:
            assert a.keys == b.keys and np.allclose(a.weights, b.weights, rtol=0, atol=0)
            for x, y in zip(a.items, b.items, strict=True):
                _same(x, y)
            e.update_priorities(a.keys, [1.0 + k for k in a.keys])
            r.update_priorities(b.keys, [1.0 + k for k in b.keys])
    assert r.stats() == e.stats()


def test_prioritized_replay_refuses_a_snapshot_of_another_capacity():
    e = _r2d2()
    other = PrioritizedSequenceReplay(capacity=13)
    with pytest.raises(ValueError, match="capacity 12, this one has 13"):
        other.restore(_json(e.replay.snapshot()))


def test_offline_episode_items_round_trip_in_the_episode_replay():
    """ILQL keeps whole Episodes as items (cut=None, offline: policy_version -1)."""
    e = EpisodeReplay(PrioritizedSequenceReplay(capacity=5, seed=1))
    e.add([(_episode(i, version=-1), None) for i in range(7)])
    r = EpisodeReplay(PrioritizedSequenceReplay(capacity=5, seed=8))
    r.restore(_json(e.snapshot()))
    a, b = e.sample(3, 0), r.sample(3, 0)
    assert a.keys == b.keys and [x.episode_id for x in a.items] == [y.episode_id for y in b.items]
    _same(a.items[0], b.items[0])


def test_fifo_queue_of_scored_rollouts_round_trips():
    q = FIFOQueue(capacity=4, max_policy_lag=1)
    q.add([_scored(i, 0) for i in range(3)])
    r = FIFOQueue(capacity=4, max_policy_lag=1)
    r.restore(_json(q.snapshot()))
    for x, y in zip(q.sample(3, 0).items, r.sample(3, 0).items, strict=True):
        _same(x, y)


def test_snapshot_files_are_whole_or_refused(tmp_path):
    from shoal.buffer.snapshots import read_snapshot, snapshot_path, write_snapshot

    assert read_snapshot(tmp_path) is None
    q = FIFOQueue(capacity=4, max_policy_lag=1)
    q.add([_scored(i, 0) for i in range(3)])
    write_snapshot(tmp_path, q.snapshot(), offered=3)
    snap = read_snapshot(tmp_path)
    assert snap["offered"] == 3 and len(snap["replay"]["items"]) == 3
    assert [p.name for p in snapshot_path(tmp_path).parent.iterdir()] == ["snapshot.json"]  # no temporary left
    snapshot_path(tmp_path).write_text('{"format": "shoal-replay-snapshot/1", "repl')
    with pytest.raises(ValueError, match=r"snapshot.json: not a readable replay snapshot"):
        read_snapshot(tmp_path)
    snapshot_path(tmp_path).write_text('{"items": []}')
    with pytest.raises(ValueError, match=r"not a replay snapshot"):
        read_snapshot(tmp_path)


def test_snapshot_clock_keeps_writing_under_five_percent_of_the_time():
    import time

    from shoal.buffer.snapshots import SnapshotClock

    clock = SnapshotClock(0.2)
    clock.last = time.monotonic() - 0.3
    assert clock.due()
    clock.mark()
    clock.took(0.1)  # a 100 ms write: the next is due 2 s later, not 0.2 s
    clock.last = time.monotonic() - 1.0
    assert not clock.due()
    clock.last = time.monotonic() - 2.1
    assert clock.due()
    assert not SnapshotClock(0.0).due()
