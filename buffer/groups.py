"""Group queue for the critic-free estimators (GRPO, RLOO, REINFORCE++): whole groups only.

A group is the G samples of one prompt. The critic-free builders send a request of
`rollout.prompts_per_request` prompts, each repeated `group_size` times (the same Prompt
object, so the same prompt_id), so a group's samples come from one worker, one request and
one policy_version, and reach `add` in the same call (act -> score -> add). The advantage
of a sample is computed from its group, so this queue never splits a group:

- `add(items)` sorts the items of the call into groups by `key(item)` (the prompt_id) and
  seals every group at the end of the call: a group is released to `sample` only when its
  request's items have all arrived. A group left short by the scorers (a non-finite reward is
  rejected, so a group of G can arrive with G-1 members) is kept when it still has at least
  `min_group_size` members (2: a group baseline needs two samples) and dropped otherwise,
  counted in `buffer/dropped_small_groups` (rollouts).
- Back-pressure is in rollouts (`capacity`, `free()`, `room()`), as the FIFO queue's: a
  whole group is taken or refused, never part of one; refused rollouts count in
  `buffer/rejected_full`.
- `sample(batch_size, learner_version)` pops the `batch_size` oldest whole GROUPS (not
  rollouts), first discarding groups whose OLDEST member is older than `max_policy_lag`
  learner steps (`shoal.types.is_stale`, the one staleness rule), counting their rollouts in
  `buffer/dropped_stale`; it returns None (nothing popped) until `batch_size` fresh groups
  are there. The batch lists each group's members together, in arrival order.

Implements the ReplayBuffer contract (shoal/core.py) like `buffer/fifo.py`'s FIFOQueue.
Tests: `pytest tests/unit/test_critic_free.py -k group_queue`.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from shoal.types import SampledBatch, from_record, is_stale, policy_lag, to_record


def prompt_key(item: Any) -> str:
    """The group key of a ScoredRollout (or Rollout): its prompt_id."""
    rollout = getattr(item, "rollout", item)
    return rollout.prompt.prompt_id


class GroupQueue:
    """A bounded FIFO of whole groups of items that carry `policy_version` (module docstring)."""

    def __init__(
        self,
        capacity: int,
        max_policy_lag: int,
        min_group_size: int = 2,
        key: Callable[[Any], Any] = prompt_key,
    ) -> None:
        if capacity <= 0:
            raise ValueError(f"buffer.capacity must be > 0, got {capacity}")
        if min_group_size < 1:
            raise ValueError(f"min_group_size must be >= 1, got {min_group_size}")
        self.capacity, self.max_policy_lag, self.min_group_size, self.key = (
            capacity,
            max_policy_lag,
            min_group_size,
            key,
        )
        self._groups: deque[tuple[float, list[Any]]] = deque()
        self._size = 0  # rollouts held
        self.added = self.sampled = self.dropped_stale = self.rejected_full = self.dropped_small = 0
        self.groups_added = self.groups_sampled = 0
        self._last_lags: list[int] = []
        self._last_wait_s = 0.0

    def __len__(self) -> int:
        """Rollouts held (every group complete)."""
        return self._size

    def num_groups(self) -> int:
        return len(self._groups)

    def room(self) -> int:
        """Room in rollouts: the unit of the critic-free builders' `request_size`."""
        return self.free()

    def free(self) -> int:
        return self.capacity - self._size

    def add(self, items: Sequence[Any]) -> int:
        """Seal the call's items into groups (by key, first-seen order); keep groups of at least
        `min_group_size`, while whole groups fit. Returns the rollouts taken."""
        groups: dict[Any, list[Any]] = {}
        for it in items:
            groups.setdefault(self.key(it), []).append(it)
        now, taken = time.monotonic(), 0
        for members in groups.values():
            if len(members) < self.min_group_size:
                self.dropped_small += len(members)
            elif len(members) > self.free():
                self.rejected_full += len(members)
            else:
                self._groups.append((now, members))
                self._size += len(members)
                taken += len(members)
                self.groups_added += 1
        self.added += taken
        return taken

    def _drop_stale(self, learner_version: int) -> int:
        kept: deque[tuple[float, list[Any]]] = deque()
        dropped = 0
        for entry in self._groups:
            oldest = min(it.policy_version for it in entry[1])
            if is_stale(learner_version, oldest, self.max_policy_lag):
                dropped += len(entry[1])
            else:
                kept.append(entry)
        self._groups = kept
        self._size -= dropped
        self.dropped_stale += dropped
        return dropped

    def sample(self, batch_size: int, learner_version: int) -> SampledBatch | None:
        """Pop the `batch_size` oldest fresh GROUPS, or None (nothing popped) if too few."""
        dropped = self._drop_stale(learner_version)
        if len(self._groups) < batch_size:
            return None
        now = time.monotonic()
        popped = [self._groups.popleft() for _ in range(batch_size)]
        items = [it for _, members in popped for it in members]
        self._size -= len(items)
        self.sampled += len(items)
        self.groups_sampled += batch_size
        self._last_lags = [policy_lag(learner_version, it.policy_version) for it in items]
        self._last_wait_s = sum(now - t for t, _ in popped) / batch_size
        return SampledBatch(items=items, weights=[1.0] * len(items), dropped_stale=dropped)

    def snapshot(self) -> dict[str, Any]:
        """Whole groups and counters as JSON-safe data (a replay snapshot; never pickle)."""
        return {
            "groups": [[to_record(it) for it in members] for _, members in self._groups],
            "counters": [
                self.added, self.sampled, self.dropped_stale, self.rejected_full, self.dropped_small,
                self.groups_added, self.groups_sampled,
            ],
        }  # fmt: skip

    def restore(self, snap: dict[str, Any]) -> None:
        """Replace groups and counters with a `snapshot()` (waiting times start again)."""
        now = time.monotonic()
        self._groups = deque((now, [from_record(d) for d in members]) for members in snap["groups"])
        self._size = sum(len(m) for _, m in self._groups)
        (
            self.added, self.sampled, self.dropped_stale, self.rejected_full, self.dropped_small,
            self.groups_added, self.groups_sampled,
        ) = (int(x) for x in snap["counters"])  # fmt: skip

    def last_policy_lags(self) -> list[int]:
        """Policy lag of each item (rollout) in the last sampled batch."""
        return list(self._last_lags)

    def stats(self) -> dict[str, float]:
        return {
            "buffer/size": float(self._size),
            "buffer/groups": float(len(self._groups)),
            "buffer/fill": self._size / self.capacity,
            "buffer/added": float(self.added),
            "buffer/sampled": float(self.sampled),
            "buffer/dropped_stale": float(self.dropped_stale),
            "buffer/dropped_small_groups": float(self.dropped_small),
            "buffer/rejected_full": float(self.rejected_full),
            "buffer/queue_wait_s": self._last_wait_s,
        }
