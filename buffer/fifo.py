"""FIFO rollout queue for on-policy PPO, with back-pressure and the staleness bound.

Implements the ReplayBuffer contract (shoal/core.py) that the R2D2 prioritized sequence
replay implements too. Producers `add` scored rollouts; `add` accepts at most `free()` items
and returns how many it took, so a full queue pushes back on the rollout workers instead of
growing without bound. `sample(batch_size, learner_version)` pops the oldest items, first
discarding those older than `max_policy_lag` learner steps (`shoal.types.is_stale`: the one
staleness rule) and counting them; it returns None until a full batch of fresh items is there.

Deviation from a plain queue: items are timestamped on insert so `stats()` reports the
queueing delay next to depth and drop counts (`buffer/...` metrics).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence
from typing import Any

from shoal.types import SampledBatch, from_record, is_stale, policy_lag, to_record


class FIFOQueue:
    """A bounded FIFO of items that carry `policy_version`."""

    def __init__(self, capacity: int, max_policy_lag: int) -> None:
        if capacity <= 0:
            raise ValueError(f"buffer.capacity must be > 0, got {capacity}")
        self.capacity, self.max_policy_lag = capacity, max_policy_lag
        self._items: deque[tuple[float, Any]] = deque()
        self.added = self.sampled = self.dropped_stale = self.rejected_full = 0
        self._last_lags: list[int] = []
        self._last_wait_s = 0.0

    def __len__(self) -> int:
        return len(self._items)

    def room(self) -> int:
        """Room in units of a request (rollouts = prompts): the runners' back-pressure."""
        return self.free()

    def free(self) -> int:
        return self.capacity - len(self._items)

    def add(self, items: Sequence[Any]) -> int:
        """Insert up to free() items (oldest first); the rest are refused and counted."""
        take = min(len(items), self.free())
        now = time.monotonic()
        self._items.extend((now, it) for it in items[:take])
        self.added += take
        self.rejected_full += len(items) - take
        return take

    def _drop_stale(self, learner_version: int) -> int:
        kept = deque(x for x in self._items if not is_stale(learner_version, x[1].policy_version, self.max_policy_lag))
        dropped = len(self._items) - len(kept)
        self._items = kept
        self.dropped_stale += dropped
        return dropped

    def sample(self, batch_size: int, learner_version: int) -> SampledBatch | None:
        """Pop the `batch_size` oldest fresh items, or None (nothing popped) if too few."""
        dropped = self._drop_stale(learner_version)
        if len(self._items) < batch_size:
            return None
        now = time.monotonic()
        popped = [self._items.popleft() for _ in range(batch_size)]
        items = [it for _, it in popped]
        self.sampled += batch_size
        self._last_lags = [policy_lag(learner_version, it.policy_version) for it in items]
        self._last_wait_s = sum(now - t for t, _ in popped) / batch_size
        return SampledBatch(items=items, weights=[1.0] * batch_size, dropped_stale=dropped)

    def snapshot(self) -> dict[str, Any]:
        """Contents and counters as JSON-safe data (a checkpoint's replay snapshot; never
        pickle; `shoal.types.to_record`)."""
        return {
            "items": [to_record(it) for _, it in self._items],
            "counters": [self.added, self.sampled, self.dropped_stale, self.rejected_full],
        }

    def restore(self, snap: dict[str, Any]) -> None:
        """Replace contents and counters with a `snapshot()` (waiting times start again)."""
        now = time.monotonic()
        self._items = deque((now, from_record(d)) for d in snap["items"])
        self.added, self.sampled, self.dropped_stale, self.rejected_full = (int(x) for x in snap["counters"])

    def last_policy_lags(self) -> list[int]:
        """Policy lag of each item in the last sampled batch (for the lag distribution)."""
        return list(self._last_lags)

    def stats(self) -> dict[str, float]:
        return {
            "buffer/size": float(len(self._items)),
            "buffer/fill": len(self._items) / self.capacity,
            "buffer/added": float(self.added),
            "buffer/sampled": float(self.sampled),
            "buffer/dropped_stale": float(self.dropped_stale),
            "buffer/rejected_full": float(self.rejected_full),
            "buffer/queue_wait_s": self._last_wait_s,
        }
