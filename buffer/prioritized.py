"""Prioritized sequence replay for R2D2: sum-tree sampling, IS weights, FIFO eviction, rate limiter.

Implements the ReplayBuffer contract (shoal/core.py) like `buffer.fifo.FIFOQueue`, plus
`update_priorities(keys, priorities)`. Items are `SequenceItem`s (any object with
`policy_version` works). Papers: PER (Schaul et al. 2016) for proportional sampling and
importance weights; R2D2 (Kapturowski et al. 2019) for the numbers (priority exponent 0.9,
IS exponent 0.6); Reverb/Acme for the samples-per-insert rate limiter.

- Sampling: item i is drawn with P(i) = p_i^alpha / sum_j p_j^alpha (alpha =
  priority_exponent), independently, with replacement (as Reverb). New items get the largest
  priority seen so far (1.0 at first), so each is likely to be sampled soon (PER).
- Importance weights: w_i = (N P(i))^-beta / max_j w_j with beta = importance_sampling_exponent,
  N the number of items held and max_j over ALL items held (min tree, as PER/baselines), so
  weights are <= 1 and comparable across batches. use_importance_weights=False gives 1.0
  (R2D2 reports no benefit from them; switchable).
- Keys: the insert counter, never reused; an item lives in slot key % capacity. Eviction is
  FIFO: an insert overwrites the oldest slot when the ring is full (counted as evicted).
- update_priorities ignores keys whose item is gone (evicted or dropped stale): between
  `sample` and the learner's update, actors may have overwritten the slot, and the TD error of
  the old item would wrongly become the priority of the new one. Priorities must be finite
  and >= 0; they are floored at PRIORITY_FLOOR so no item becomes unsamplable forever and the
  total mass never reaches 0.
- Staleness: with max_policy_lag set, `sample` first removes every item with
  learner_version - policy_version > max_policy_lag (shoal.types.is_stale), counted in
  `dropped_stale`. Offline items (policy_version < 0: scripted or logged data, e.g. ILQL's
  data set) were produced by no learner version and are never stale.
- Rate limiter (Reverb's SampleToInsertRatio, simplified and non-blocking), with
  samples_per_insert = s, I items inserted so far (evicted ones included), S items sampled so
  far, offset = s * min_size_to_sample:
    sample of k allowed iff  s I - (S + k) >= offset - error_buffer
    insert of m allowed iff  s (I + m) - S <= offset + error_buffer
  so `add` takes only the allowed prefix (back-pressure on actors; `free()` says how many) and
  `sample` returns None when the learner is ahead. As in Reverb, the ratio is not checked
  while fewer than max(min_size_to_sample, batch_size) items are held: inserts are then always
  allowed and samples never (so stale drops cannot starve the learner). Never blocks: the
  caller retries. Deadlock-free iff 2 * error_buffer >= batch_size + s, checked at sample
  time (ValueError for an explicit error_buffer; error_buffer=None starts at
  max(1, s) * min_size_to_sample and grows to (batch_size + s) / 2 when a batch needs it).
  Simplified from Reverb: no blocking/timeouts, counts in items, one table.
  samples_per_insert=None: no ratio (`NoRateLimit`); `add` never refuses and `free()` is capacity.
- `sample` returns None (nothing changed but stale drops) while fewer than
  max(min_size_to_sample, batch_size) items are held; batch_size > capacity is a ValueError
  (it could never be served). It never returns an empty slot.

No Ray; `services/actors.py` hosts it. Tests: `pytest tests/unit/test_prioritized_replay.py`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from shoal.buffer.sum_tree import MinTree, SumTree
from shoal.types import SampledBatch, from_record, policy_lag, to_record

PRIORITY_FLOOR = 1e-6
INITIAL_MAX_PRIORITY = 1.0  # PER / baselines


class NoRateLimit:
    """Null limiter: inserts always allowed, samples whenever enough items are held."""

    def insert_allowance(self, size: int, inserts: int, samples: int) -> float:
        return math.inf

    def can_sample(self, k: int, inserts: int, samples: int) -> bool:
        return True

    def check_batch(self, batch_size: int) -> None:
        return None


class SampleToInsertRatio:
    """Keeps samples / inserts near `samples_per_insert` within +- error_buffer samples (Reverb).

    As Reverb, the ratio is not checked while too few items are held to sample (fewer than
    min_size_to_sample or the largest batch asked for): inserts are then always allowed.
    """

    def __init__(self, samples_per_insert: float, min_size_to_sample: int, error_buffer: float | None = None) -> None:
        """error_buffer None: auto, max(1, spi) * min_size_to_sample, raised to the deadlock-free
        (batch_size + spi) / 2 by the first `check_batch` that needs it."""
        self.auto = error_buffer is None
        if error_buffer is None:
            error_buffer = max(1.0, samples_per_insert) * min_size_to_sample
        if samples_per_insert <= 0 or error_buffer <= 0:
            raise ValueError(
                f"rate limiter needs samples_per_insert > 0 and error_buffer > 0, got {samples_per_insert}, {error_buffer}"
            )
        self.spi, self.error_buffer = float(samples_per_insert), float(error_buffer)
        self.offset = self.spi * min_size_to_sample
        self.min_size = min_size_to_sample  # grows to the largest batch size asked for

    def insert_allowance(self, size: int, inserts: int, samples: int) -> float:
        """The largest m with spi (inserts + m) - samples <= offset + error_buffer, or enough to reach min size."""
        room = math.floor((self.offset + self.error_buffer + samples) / self.spi - inserts + 1e-9)
        return max(0, room, self.min_size - size)

    def can_sample(self, k: int, inserts: int, samples: int) -> bool:
        """spi inserts - (samples + k) >= offset - error_buffer (the size gate is the buffer's)."""
        return self.spi * inserts - (samples + k) >= self.offset - self.error_buffer - 1e-9

    def check_batch(self, batch_size: int) -> None:
        self.min_size = max(self.min_size, batch_size)
        if 2 * self.error_buffer < batch_size + self.spi and self.auto:
            self.error_buffer = (batch_size + self.spi) / 2
        if 2 * self.error_buffer < batch_size + self.spi:
            raise ValueError(
                f"rate limiter would deadlock: error_buffer={self.error_buffer} < (batch_size={batch_size} + "
                f"samples_per_insert={self.spi}) / 2; raise error_buffer"
            )


class PrioritizedSequenceReplay:
    """Proportional prioritized replay with FIFO eviction, staleness bound and rate limiter."""

    def __init__(
        self,
        capacity: int,
        priority_exponent: float = 0.9,
        importance_sampling_exponent: float = 0.6,
        use_importance_weights: bool = True,
        samples_per_insert: float | None = None,
        min_size_to_sample: int = 1,
        max_policy_lag: int | None = None,
        seed: int = 0,
        error_buffer: float | None = None,
    ) -> None:
        """error_buffer: rate-limiter slack in samples (see SampleToInsertRatio; None = auto)."""
        if capacity <= 0:
            raise ValueError(f"buffer.capacity must be > 0, got {capacity}")
        if not 1 <= min_size_to_sample <= capacity:
            raise ValueError(f"min_size_to_sample must be in [1, capacity={capacity}], got {min_size_to_sample}")
        if priority_exponent < 0 or importance_sampling_exponent < 0:
            raise ValueError(
                f"exponents must be >= 0, got priority {priority_exponent}, importance sampling {importance_sampling_exponent}"
            )
        self.capacity, self.alpha, self.beta = capacity, priority_exponent, importance_sampling_exponent
        self.use_importance_weights, self.max_policy_lag = use_importance_weights, max_policy_lag
        self.min_size_to_sample = min_size_to_sample
        self.limiter = _make_limiter(samples_per_insert, min_size_to_sample, error_buffer)
        self.rng = np.random.default_rng(seed)
        self._items: list[Any] = [None] * capacity
        self._keys = np.full(capacity, -1, dtype=np.int64)
        self._versions = np.zeros(capacity, dtype=np.int64)
        self._priorities = np.zeros(capacity, dtype=np.float64)
        self._sum, self._min = SumTree(capacity), MinTree(capacity)
        self._size, self.max_priority = 0, INITIAL_MAX_PRIORITY
        self.inserts = self.samples = self.evicted = self.dropped_stale = 0
        self.rate_limited_inserts = self.rate_limited_samples = self.ignored_updates = 0
        self._last_lags: list[int] = []

    # ---- the ReplayBuffer contract ---------------------------------------------------------

    def __len__(self) -> int:
        return self._size

    def room(self) -> int:
        """Room in units of a request (items): the runners' back-pressure."""
        return self.free()

    def free(self) -> int:
        """How many items `add` would take now: the rate limiter's allowance, at most capacity."""
        return int(min(self.capacity, self.limiter.insert_allowance(self._size, self.inserts, self.samples)))

    def add(self, items: Sequence[Any], already_refused: int = 0) -> int:
        """Insert up to the rate limiter's allowance (oldest first) at max priority; FIFO-evict when full.

        rate_limited_inserts counts each refused item once: the first `already_refused` items
        are a caller's re-offer of items refused before (EpisodeReplay's pending queue) and are
        not counted again."""
        take = int(min(len(items), self.limiter.insert_allowance(self._size, self.inserts, self.samples)))
        self.rate_limited_inserts += len(items) - max(take, min(already_refused, len(items)))
        if take == 0:
            return 0
        slots = (self.inserts + np.arange(take)) % self.capacity
        for slot, item in zip(slots.tolist(), items[:take]):
            if self._keys[slot] >= 0:
                self.evicted += 1
            else:
                self._size += 1
            self._items[slot], self._keys[slot] = item, self.inserts
            self._versions[slot] = item.policy_version
            self.inserts += 1
        self._set_priorities(slots, np.full(take, self.max_priority))
        return take

    def sample(self, batch_size: int, learner_version: int) -> SampledBatch | None:
        """A prioritized batch (with replacement) with keys and IS weights, or None if too few items or rate-limited."""
        self._check_batch_size(batch_size)
        dropped = self._drop_stale(learner_version)
        if self._size < max(self.min_size_to_sample, batch_size):
            return None
        if not self.limiter.can_sample(batch_size, self.inserts, self.samples):
            self.rate_limited_samples += 1
            return None
        slots = self._sum.sample(batch_size, self.rng)
        if (self._keys[slots] < 0).any():
            raise RuntimeError(
                f"sum tree returned empty slots {slots[self._keys[slots] < 0].tolist()}: buffer corrupted"
            )
        items = [self._items[s] for s in slots.tolist()]
        self.samples += batch_size
        self._last_lags = [policy_lag(learner_version, it.policy_version) for it in items]
        weights = self._importance_weights(slots)
        return SampledBatch(
            items=items, keys=self._keys[slots].tolist(), weights=weights.tolist(), dropped_stale=dropped
        )

    def update_priorities(self, keys: Sequence[int], priorities: Sequence[float]) -> int:
        """Set raw priorities (before the exponent) of still-held keys; returns how many were applied."""
        keys_a = np.asarray(keys, dtype=np.int64).reshape(-1)
        pr = np.asarray(priorities, dtype=np.float64).reshape(-1)
        if keys_a.shape != pr.shape:
            raise ValueError(f"update_priorities got {keys_a.size} keys but {pr.size} priorities")
        bad = ~np.isfinite(pr) | (pr < 0)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"priority for key {int(keys_a[i])} must be finite and >= 0, got {pr[i]}")
        slots = keys_a % self.capacity
        live = (keys_a >= 0) & (self._keys[slots] == keys_a)
        self.ignored_updates += int((~live).sum())
        if live.any():
            pr = np.maximum(pr[live], PRIORITY_FLOOR)
            self._set_priorities(slots[live], pr)
            self.max_priority = max(self.max_priority, float(pr.max()))
        return int(live.sum())

    def last_policy_lags(self) -> list[int]:
        """Policy lag of each item in the last sampled batch (for the lag distribution)."""
        return list(self._last_lags)

    def stats(self) -> dict[str, float]:
        held = self._priorities[self._keys >= 0]
        return {
            "buffer/size": float(self._size),
            "buffer/fill": self._size / self.capacity,
            "buffer/inserts": float(self.inserts),
            "buffer/samples": float(self.samples),
            "buffer/samples_per_insert": self.samples / max(self.inserts, 1),
            "buffer/evicted": float(self.evicted),
            "buffer/priority_mean": float(held.mean()) if held.size else 0.0,
            "buffer/priority_max": float(held.max()) if held.size else 0.0,
            "buffer/dropped_stale": float(self.dropped_stale),
            "buffer/rate_limited_inserts": float(self.rate_limited_inserts),
            "buffer/rate_limited_samples": float(self.rate_limited_samples),
            "buffer/ignored_priority_updates": float(self.ignored_updates),
        }

    # ---- snapshots (JSON-safe; never pickle) ----------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Held items with their slots, keys and raw priorities, the counters, the sampling
        RNG and the rate limiter's state: `restore` continues exactly where this left off."""
        held = np.flatnonzero(self._keys >= 0).tolist()
        counters = [
            self.inserts, self.samples, self.evicted, self.dropped_stale,
            self.rate_limited_inserts, self.rate_limited_samples, self.ignored_updates,
        ]  # fmt: skip
        return {
            "capacity": self.capacity,
            "items": [[s, int(self._keys[s]), float(self._priorities[s]), to_record(self._items[s])] for s in held],
            "counters": counters,
            "max_priority": self.max_priority,
            "rng": self.rng.bit_generator.state,
            "limiter": [getattr(self.limiter, "error_buffer", None), getattr(self.limiter, "min_size", None)],
        }

    def restore(self, snap: dict[str, Any]) -> None:
        """Replace everything with a `snapshot()` of a replay of the same capacity."""
        if int(snap["capacity"]) != self.capacity:
            raise ValueError(
                f"the snapshot is of a replay of capacity {snap['capacity']}, this one has {self.capacity}"
            )
        self._items = [None] * self.capacity
        self._keys[:], self._versions[:], self._priorities[:] = -1, 0, 0.0
        self._sum, self._min = SumTree(self.capacity), MinTree(self.capacity)
        for slot, key, priority, record in snap["items"]:
            item = from_record(record)
            self._items[slot], self._keys[slot], self._versions[slot] = item, key, item.policy_version
            self._set_priorities(np.array([slot]), np.array([priority]))
        self._size = len(snap["items"])
        (
            self.inserts, self.samples, self.evicted, self.dropped_stale,
            self.rate_limited_inserts, self.rate_limited_samples, self.ignored_updates,
        ) = (int(x) for x in snap["counters"])  # fmt: skip
        self.max_priority = float(snap["max_priority"])
        self.rng.bit_generator.state = snap["rng"]
        error_buffer, min_size = snap["limiter"]
        if error_buffer is not None:
            self.limiter.error_buffer, self.limiter.min_size = float(error_buffer), int(min_size)

    # ---- internals -------------------------------------------------------------------------

    def probabilities(self, keys: Sequence[int]) -> np.ndarray:
        """P(i) of held keys (ValueError naming keys no longer held)."""
        keys_a = np.asarray(keys, dtype=np.int64)
        slots = keys_a % self.capacity
        gone = keys_a[self._keys[slots] != keys_a]
        if gone.size:
            raise ValueError(f"keys {gone.tolist()} are not held")
        return self._sum.get(slots) / self._sum.total

    def _set_priorities(self, slots: np.ndarray, priorities: np.ndarray) -> None:
        self._priorities[slots] = priorities
        scaled = priorities**self.alpha
        self._sum.set(slots, scaled)
        self._min.set(slots, scaled)

    def _remove(self, slots: np.ndarray) -> None:
        for s in slots.tolist():
            self._items[s] = None
        self._keys[slots], self._priorities[slots] = -1, 0.0
        self._sum.set(slots, 0.0)
        self._min.set(slots, np.inf)
        self._size -= int(slots.size)

    def _drop_stale(self, learner_version: int) -> int:
        if self.max_policy_lag is None or self._size == 0:
            return 0
        offline = self._versions < 0  # policy_version -1: offline data, exempt from the bound
        stale = (self._keys >= 0) & ~offline & (learner_version - self._versions > self.max_policy_lag)
        slots = np.flatnonzero(stale)
        if slots.size:
            self._remove(slots)
            self.dropped_stale += int(slots.size)
        return int(slots.size)

    def _importance_weights(self, slots: np.ndarray) -> np.ndarray:
        if not self.use_importance_weights:
            return np.ones(slots.size)
        total = self._sum.total
        probs = self._sum.get(slots) / total
        max_weight = (self._size * self._min.min / total) ** (-self.beta)
        return (self._size * probs) ** (-self.beta) / max_weight

    def _check_batch_size(self, batch_size: int) -> None:
        if not 1 <= batch_size <= self.capacity:
            raise ValueError(
                f"batch_size must be in [1, capacity={self.capacity}], got {batch_size}: the buffer could never serve it"
            )
        self.limiter.check_batch(batch_size)


def _make_limiter(samples_per_insert: float | None, min_size_to_sample: int, error_buffer: float | None) -> Any:
    if samples_per_insert is None:
        return NoRateLimit()
    return SampleToInsertRatio(samples_per_insert, min_size_to_sample, error_buffer)
