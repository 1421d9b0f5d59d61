"""The R2D2 sequence adder: cut one episode into overlapping replay items with one stored state.

Kapturowski et al. 2019 (R2D2), as Acme's `SequenceAdder` does it: an item is
L = burn_in_length + trace_length + 1 consecutive turns of ONE episode (see
`shoal.types.SequenceItem`); item k starts k * sequence_period turns after the first, so
adjacent items overlap by L - sequence_period turns; items never cross an episode end, and an
item that runs past the last turn is padded (empty strings, reward 0, done=True, mask 0).
Truncated episodes (cut off by max_turns: last turn done=False) with a `final_observation`:
the position just past the last turn holds that observation (action "", reward 0,
done=False, mask 1) so the n-step targets of the final turns bootstrap from
Q(final_observation); it has no successor, so it never gets a target (or loss) itself.
Without a final_observation the last turn has nothing to bootstrap from and gets no target.
Each item stores ONE recurrent state: the state ENTERING its first turn, `states[start]`
(copied, float32), never one per turn. Positions of an item:

    [0, burn_in)                  burn-in: unrolled from start_state without loss
    [burn_in, burn_in + trace)    trace: TD loss and priorities
    L - 1                         bootstrap only (the "+1")

The first burn_in turns of an episode (the choice to know):
- pad_start=False (default; the paper and Acme): the first item starts at turn 0, so turns
  0..burn_in-1 are only ever burn-in and never get a TD loss; an episode of <= burn_in turns
  yields no item. Every mask is a prefix 1...1 0...0 and `start >= 0`.
- pad_start=True: every start moves back by burn_in (the first item starts at -burn_in), so
  the traces tile the episode from turn 0. Positions before turn 0 are front padding (empty
  strings, reward 0, done=False, mask 0) and start_state is `states[0]`, the state entering
  the first real turn - the episode's initial state, which is exact, so that item needs no
  burn-in. The learner's unroll must then keep the state unchanged on mask-0 steps
  (h = where(mask_t, cell(x_t, h), h)); use it for short episodes, where losing burn_in turns
  per episode matters.
Item starts: s0, s0 + period, ... while the item's first trace turn s + burn_in is a real turn.
`sequence_period > trace_length` is refused: some turns would be in no trace.

`nbytes(item)` is the item's pickled size (what Ray ships and the buffer holds) so benchmarks
can compare stored-state items with storing full histories per turn (O(T^2) per episode).

Pure functions; no Ray. Tests: `pytest tests/unit/test_sequences.py`.
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from typing import Any

import numpy as np

from shoal.types import Episode, SequenceItem, Turn


def item_length(burn_in_length: int, trace_length: int) -> int:
    """L = burn_in_length + trace_length + 1."""
    return burn_in_length + trace_length + 1


def check_sequence_config(burn_in_length: int, trace_length: int, sequence_period: int) -> None:
    """ValueError naming the bad value: burn_in >= 0, trace >= 1, 1 <= period <= trace."""
    if burn_in_length < 0 or trace_length < 1:
        raise ValueError(f"need burn_in_length >= 0 and trace_length >= 1, got {burn_in_length}, {trace_length}")
    if not 1 <= sequence_period <= trace_length:
        raise ValueError(
            f"sequence_period must be in [1, trace_length={trace_length}] (else turns fall in no trace), got {sequence_period}"
        )


def trace_positions(burn_in_length: int, trace_length: int) -> list[float]:
    """[L] 1.0 on the trace positions of an item (where the TD loss and priorities apply), else 0."""
    return [0.0] * burn_in_length + [1.0] * trace_length + [0.0]


def sequence_starts(
    num_turns: int, burn_in_length: int, trace_length: int, sequence_period: int, pad_start: bool = False
) -> list[int]:
    """Start turns of the items of an episode of `num_turns` turns (negative with pad_start)."""
    check_sequence_config(burn_in_length, trace_length, sequence_period)
    first = -burn_in_length if pad_start else 0
    return list(range(first, num_turns - burn_in_length, sequence_period))


def check_episode(episode: Episode, states: Any) -> None:
    """ValueError unless there is one state per turn and only the last turn may be done."""
    if len(states) != len(episode.turns):
        raise ValueError(
            f"episode {episode.episode_id}: {len(episode.turns)} turns but {len(states)} states (need one entering each turn)"
        )
    early = [i for i, t in enumerate(episode.turns[:-1]) if t.done]
    if early:
        raise ValueError(
            f"episode {episode.episode_id}: turns {early} are done before the last turn {len(episode.turns) - 1}"
        )


def _position(turns: Sequence[Turn], i: int, final_observation: str = "") -> tuple[str, str, float, bool, float]:
    """(observation, action, reward, done, mask) of turn i, or padding outside the episode.

    Position T (just past the last turn) of a truncated episode (last turn not done) with a
    final_observation is the bootstrap position: (final_observation, "", 0.0, False, 1.0)."""
    if i < 0:
        return "", "", 0.0, False, 0.0
    if i == len(turns) and final_observation and turns and not turns[-1].done:
        return final_observation, "", 0.0, False, 1.0
    if i >= len(turns):
        return "", "", 0.0, True, 0.0
    t = turns[i]
    return t.observation, t.action, float(t.reward), bool(t.done), 1.0


def make_item(episode: Episode, states: Any, start: int, length: int) -> SequenceItem:
    """The item of `length` positions starting at turn `start`; start_state = states[max(start, 0)]."""
    cols = list(zip(*(_position(episode.turns, start + p, episode.final_observation) for p in range(length))))
    state = np.array(states[max(start, 0)], dtype=np.float32, copy=True)
    return SequenceItem(
        episode_id=episode.episode_id,
        start=start,
        observations=list(cols[0]),
        actions=list(cols[1]),
        rewards=list(cols[2]),
        dones=list(cols[3]),
        mask=list(cols[4]),
        start_state=state,
        policy_version=episode.policy_version,
    )


def cut_episode(
    episode: Episode,
    states: Any,
    burn_in_length: int,
    trace_length: int,
    sequence_period: int,
    pad_start: bool = False,
) -> list[SequenceItem]:
    """All replay items of one episode.

    states: [T, ...] (numpy array or list of arrays), states[t] = the recurrent state ENTERING
    turn t (states[0] is the initial state). Returns [] for an episode too short to hold a trace
    turn (<= burn_in turns without pad_start; 0 turns with it).
    """
    check_episode(episode, states)
    starts = sequence_starts(len(episode.turns), burn_in_length, trace_length, sequence_period, pad_start)
    length = item_length(burn_in_length, trace_length)
    return [make_item(episode, states, s, length) for s in starts]


def nbytes(item: Any) -> int:
    """Bytes of an item as pickled (what Ray moves and what the buffer keeps per item)."""
    return len(pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL))
