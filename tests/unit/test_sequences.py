"""buffer/sequences.py: cutting episodes into R2D2 items, checked against slow loops."""

from __future__ import annotations

import numpy as np
import pytest

from shoal.buffer.sequences import (
    check_sequence_config,
    cut_episode,
    item_length,
    nbytes,
    sequence_starts,
    trace_positions,
)
from shoal.types import Episode, Turn

H = 3


def _episode(num_turns: int, truncated: bool = False, version: int = 7) -> tuple[Episode, np.ndarray]:
    turns = [
        Turn(observation=f"o{t}", action=f"a{t}", reward=float(t) + 0.5, done=(t == num_turns - 1 and not truncated))
        for t in range(num_turns)
    ]
    # state entering turn t: [2, H] filled with t (h) and -t (c), so the index is readable.
    states = np.zeros((num_turns, 2, H), np.float32)
    for t in range(num_turns):
        states[t, 0], states[t, 1] = t, -t
    return Episode(episode_id=f"ep{num_turns}", task="t", turns=turns, policy_version=version), states


def _slow_starts(num_turns, burn_in, trace, period, pad_start):
    starts, s = [], (-burn_in if pad_start else 0)
    while s + burn_in < num_turns:  # the first trace turn must be a real turn
        starts.append(s)
        s += period
    return starts


CONFIGS = [(0, 1, 1), (0, 4, 2), (2, 4, 2), (2, 4, 4), (3, 5, 1), (4, 8, 4), (1, 3, 3)]
LENGTHS = [0, 1, 2, 3, 4, 7, 8, 13, 40]


@pytest.mark.parametrize("burn_in,trace,period", CONFIGS)
@pytest.mark.parametrize("pad_start", [False, True])
def test_starts_match_loop_and_traces_cover_every_trainable_turn(burn_in, trace, period, pad_start):
    for T in LENGTHS:
        starts = sequence_starts(T, burn_in, trace, period, pad_start)
        assert starts == _slow_starts(T, burn_in, trace, period, pad_start)
        covered = {s + burn_in + p for s in starts for p in range(trace) if 0 <= s + burn_in + p < T}
        first_trained = 0 if pad_start else burn_in
        assert covered == set(range(first_trained, T)), (T, starts)


@pytest.mark.parametrize("burn_in,trace,period", CONFIGS)
@pytest.mark.parametrize("pad_start", [False, True])
@pytest.mark.parametrize("truncated", [False, True])
def test_items_match_slow_loop(burn_in, trace, period, pad_start, truncated):
    L = item_length(burn_in, trace)
    for T in LENGTHS:
        ep, states = _episode(T, truncated)
        items = cut_episode(ep, states, burn_in, trace, period, pad_start)
        assert [it.start for it in items] == _slow_starts(T, burn_in, trace, period, pad_start)
        for it in items:
            assert it.episode_id == ep.episode_id and it.policy_version == 7
            for field in (it.observations, it.actions, it.rewards, it.dones, it.mask):
                assert len(field) == L
            for p in range(L):  # the obvious per-position check
                i = it.start + p
                if 0 <= i < T:
                    t = ep.turns[i]
                    want = (t.observation, t.action, t.reward, t.done, 1.0)
                elif i >= T:
                    want = ("", "", 0.0, True, 0.0)  # tail padding: never crosses the episode end
                else:
                    want = ("", "", 0.0, False, 0.0)  # front padding (pad_start only)
                got = (it.observations[p], it.actions[p], it.rewards[p], it.dones[p], it.mask[p])
                assert got == want, (T, it.start, p)


@pytest.mark.parametrize("pad_start", [False, True])
def test_one_state_per_item_is_the_state_entering_its_first_real_turn(pad_start):
    ep, states = _episode(13)
    items = cut_episode(ep, states, 2, 4, 2, pad_start)
    for it in items:
        first = max(it.start, 0)
        assert it.start_state.shape == (2, H) and it.start_state.dtype == np.float32
        np.testing.assert_array_equal(it.start_state, states[first])
        assert not np.shares_memory(it.start_state, states)  # a copy, not a view of [T, ...]
    states[:] = 99.0
    assert items[0].start_state[0, 0] == 0.0


def test_episode_length_cases_without_pad_start():
    burn_in, trace, period = 2, 4, 2
    L = item_length(burn_in, trace)
    assert L == 7
    assert cut_episode(*_episode(2), burn_in, trace, period) == []  # all burn-in: nothing to train
    short = cut_episode(*_episode(3), burn_in, trace, period)  # shorter than one item
    assert len(short) == 1 and short[0].mask == [1, 1, 1, 0, 0, 0, 0]
    full = cut_episode(*_episode(L), burn_in, trace, period)  # exactly one item's worth of turns
    assert full[0].mask == [1.0] * L and full[0].dones[-1] is True
    assert [it.start for it in full] == [0, 2, 4]
    many = cut_episode(*_episode(40), burn_in, trace, period)
    assert [it.start for it in many] == list(range(0, 38, 2))
    assert all(sum(it.mask) == L for it in many[:-3])


def test_pad_start_short_episode_still_trains_its_first_turn():
    items = cut_episode(*_episode(2), 2, 4, 2, pad_start=True)
    assert [it.start for it in items] == [-2]
    assert items[0].mask == [0, 0, 1, 1, 0, 0, 0]
    assert trace_positions(2, 4) == [0, 0, 1, 1, 1, 1, 0]


def test_truncated_episode_has_no_real_done_but_padded_tail():
    ep, states = _episode(5, truncated=True)
    it = cut_episode(ep, states, 1, 4, 2)[-1]
    assert it.start == 2 and it.dones == [False, False, False, True, True, True]
    assert it.mask == [1, 1, 1, 0, 0, 0]


def test_truncated_episode_with_final_observation_holds_it_as_bootstrap_position():
    ep, states = _episode(5, truncated=True)
    ep = Episode(ep.episode_id, ep.task, ep.turns, ep.policy_version, final_observation="o_final")
    it = cut_episode(ep, states, 1, 4, 2)[-1]
    assert it.start == 2 and it.observations == ["o2", "o3", "o4", "o_final", "", ""]
    assert it.actions[3] == "" and it.rewards[3] == 0.0
    assert it.dones == [False, False, False, False, True, True] and it.mask == [1, 1, 1, 1, 0, 0]
    # a done episode's final observation is never bootstrapped from: plain padding
    done, states = _episode(5)
    done = Episode(done.episode_id, done.task, done.turns, done.policy_version, final_observation="o_final")
    last = cut_episode(done, states, 1, 4, 2)[-1]
    assert last.observations[3] == "" and last.mask == [1, 1, 1, 0, 0, 0]


def test_invalid_inputs_name_the_values():
    ep, states = _episode(5)
    with pytest.raises(ValueError, match="5 turns but 4 states"):
        cut_episode(ep, states[:4], 1, 2, 1)
    with pytest.raises(ValueError, match=r"sequence_period.*got 3"):
        check_sequence_config(1, 2, 3)
    with pytest.raises(ValueError, match="got 0"):
        sequence_starts(5, 1, 2, 0)
    with pytest.raises(ValueError, match="trace_length >= 1"):
        sequence_starts(5, 1, 0, 1)
    early = Episode("e", "t", [Turn("o", "a", 0.0, True), Turn("o", "a", 0.0, True)])
    with pytest.raises(ValueError, match=r"turns \[0\] are done"):
        cut_episode(early, np.zeros((2, 1)), 0, 1, 1)


def test_nbytes_counts_the_stored_state_once_per_item():
    ep, _ = _episode(20)
    small = cut_episode(ep, np.zeros((20, 2, 8), np.float32), 2, 4, 2)
    big = cut_episode(ep, np.zeros((20, 2, 512), np.float32), 2, 4, 2)
    grow = [nbytes(b) - nbytes(s) for s, b in zip(small, big)]
    assert all(abs(g - 2 * (512 - 8) * 4) < 16 for g in grow), grow  # one [2, H] float32 state per item
