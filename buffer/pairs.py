"""Preference pairs for DPO, offline and online; both implement the ReplayBuffer contract.

`PairDataset` (offline): a fixed data set (policy_version < 0: never stale) served in seeded,
shuffled passes: `sample` hands out the next `batch_size` pairs of the current permutation and
draws a new one when a pass ends, so every pair is trained on once per epoch (a pass's last
short batch is completed from the next pass, never with a pair twice in one batch).

`PairQueue` (online): the k answers a worker sampled for one prompt arrive together (one
request, one policy_version, as GroupQueue's groups); the judge's scores rank them and
`rank_pairs` turns the group into pairs (best vs worst, or all pairs); ties give none and are
counted. Pairs carry the group's policy_version and are dropped past `max_policy_lag`.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from shoal.buffer.groups import prompt_key
from shoal.types import PreferencePair, SampledBatch, ScoredRollout, from_record, is_stale, policy_lag, to_record


class PairDataset:
    """A fixed set of preference pairs, sampled epoch by epoch without replacement."""

    def __init__(self, capacity: int, seed: int = 0) -> None:
        if capacity <= 0:
            raise ValueError(f"capacity must be > 0, got {capacity}")
        self.capacity, self.rng = capacity, random.Random(seed)
        self._items: list[Any] = []
        self._order: list[int] = []
        self.added = self.sampled = self.rejected_full = self.epochs = 0
        self._last_lags: list[int] = []

    def __len__(self) -> int:
        return len(self._items)

    def free(self) -> int:
        return self.capacity - len(self._items)

    def room(self) -> int:
        return self.free()

    def add(self, items: Sequence[Any]) -> int:
        take = min(len(items), self.free())
        self._items.extend(items[:take])
        self.added += take
        self.rejected_full += len(items) - take
        return take

    def _next_index(self) -> int:
        if not self._order:
            self._order = list(range(len(self._items)))
            self.rng.shuffle(self._order)
            self.epochs += 1
        return self._order.pop()

    def sample(self, batch_size: int, learner_version: int) -> SampledBatch | None:
        """The next `batch_size` distinct pairs, or None while the data set is smaller than that."""
        if len(self._items) < batch_size:
            return None
        picked: list[int] = []
        while len(picked) < batch_size:
            i = self._next_index()
            if i in picked:  # a pass boundary inside the batch: that pair waits for the next batch
                self._order.insert(0, i)
            else:
                picked.append(i)
        items = [self._items[i] for i in picked]
        self.sampled += batch_size
        self._last_lags = [
            policy_lag(learner_version, it.policy_version) if it.policy_version >= 0 else 0 for it in items
        ]
        return SampledBatch(items=items, weights=[1.0] * batch_size)

    def snapshot(self) -> dict[str, Any]:
        """The pass position (order left, RNG) and counters, not the pairs: they are the
        run's data set, loaded again before `restore` (`ShoalBuilder.initial_items`)."""
        version, internal, gauss = self.rng.getstate()
        return {
            "size": len(self._items),
            "order": list(self._order),
            "rng": [version, list(internal), gauss],
            "counters": [self.added, self.sampled, self.rejected_full, self.epochs],
        }

    def restore(self, snap: dict[str, Any]) -> None:
        """Continue the pass of a `snapshot()` over the same data set (ValueError if its size differs)."""
        if int(snap["size"]) != len(self._items):
            raise ValueError(f"the snapshot is of {snap['size']} pairs but the data set has {len(self._items)}")
        version, internal, gauss = snap["rng"]
        self.rng.setstate((version, tuple(internal), gauss))
        self._order = [int(i) for i in snap["order"]]
        self.added, self.sampled, self.rejected_full, self.epochs = (int(x) for x in snap["counters"])

    def last_policy_lags(self) -> list[int]:
        return list(self._last_lags)

    def stats(self) -> dict[str, float]:
        return {
            "buffer/size": float(len(self._items)),
            "buffer/fill": len(self._items) / self.capacity,
            "buffer/added": float(self.added),
            "buffer/sampled": float(self.sampled),
            "buffer/epochs": float(self.epochs),
            "buffer/rejected_full": float(self.rejected_full),
        }


# ---- online DPO: pairs from groups of k answers ---------------------------------------------
def rank_pairs(scores: Sequence[float], pairing: str) -> list[tuple[int, int]]:
    """(chosen, rejected) index pairs of one group by its judge's scores: `best_worst` (the
    highest vs the lowest score; first-seen wins ties) or `all_pairs` (every pair with different
    scores, higher one chosen). Exact ties give no pair: they say nothing."""
    if pairing == "best_worst":
        best = max(range(len(scores)), key=lambda i: (scores[i], -i))
        worst = min(range(len(scores)), key=lambda i: (scores[i], i))
        return [(best, worst)] if scores[best] > scores[worst] else []
    if pairing == "all_pairs":
        out = []
        for i in range(len(scores)):
            for j in range(i + 1, len(scores)):
                if scores[i] != scores[j]:
                    out.append((i, j) if scores[i] > scores[j] else (j, i))
        return out
    raise ValueError(f"pairing {pairing!r} is not one of ('best_worst', 'all_pairs')")


def pairs_per_group(pairing: str, group_size: int) -> int:
    """How many pairs `rank_pairs` makes at most from a group of `group_size` answers."""
    return 1 if pairing == "best_worst" else group_size * (group_size - 1) // 2


def preference_pair(chosen: ScoredRollout, rejected: ScoredRollout) -> PreferencePair:
    """Two scored answers of one prompt (one policy version) -> a PreferencePair."""
    c, r = chosen.rollout, rejected.rollout
    gold_c, gold_r = chosen.terms.metrics_only.get("gold"), rejected.terms.metrics_only.get("gold")
    pair_id = f"{c.prompt.prompt_id}:{c.worker_id}:{c.policy_version}"
    version = min(c.policy_version, r.policy_version)
    return PreferencePair(
        pair_id, c.prompt, list(c.response_ids), list(r.response_ids), c.response_text, r.response_text,
        policy_version=version, gold_chosen=gold_c, gold_rejected=gold_r,
    )  # fmt: skip


class PairQueue:
    """Online pairs: `add` takes scored rollouts (whole groups of one prompt, as GroupQueue's),
    ranks each group with `score` (the judge), turns it into pairs by `pairing` and queues them
    FIFO; `sample` pops the `batch_size` oldest pairs after dropping those older than
    `max_policy_lag` (the one staleness rule). Capacity counts pairs; `room()` counts rollouts
    (the unit of a request), `group_size` per group's `pairs_per_group` pairs."""

    def __init__(
        self,
        capacity: int,
        max_policy_lag: int,
        score: Callable[[Any], float],
        pairing: str,
        group_size: int,
        key: Callable[[Any], Any] = prompt_key,
    ) -> None:
        if capacity <= 0:
            raise ValueError(f"capacity must be > 0, got {capacity}")
        self.capacity, self.max_policy_lag, self.score, self.pairing = capacity, max_policy_lag, score, pairing
        self.group_size, self.key = group_size, key
        self.pairs_per_group = pairs_per_group(pairing, group_size)
        self._pairs: deque[PreferencePair] = deque()
        self.added = self.sampled = self.dropped_stale = self.rejected_full = 0
        self.groups_added = self.tied_groups = 0
        self.judge_gap_sum = self.gold_gap_sum = 0.0
        self.gold_pairs = self.gold_agree = 0
        self._last_lags: list[int] = []

    def __len__(self) -> int:
        return len(self._pairs)

    def free(self) -> int:
        return self.capacity - len(self._pairs)

    def room(self) -> int:
        return (self.free() // self.pairs_per_group) * self.group_size

    def add(self, items: Sequence[Any]) -> int:
        """Group the call's items by prompt, rank, queue the pairs that fit; returns pairs taken."""
        groups: dict[Any, list[Any]] = {}
        for it in items:
            groups.setdefault(self.key(it), []).append(it)
        taken = 0
        for members in groups.values():
            scores = [float(self.score(it)) for it in members]
            ranked = rank_pairs(scores, self.pairing)
            self.groups_added += 1
            if not ranked:
                self.tied_groups += 1
                continue
            if len(ranked) > self.free():
                self.rejected_full += len(ranked)
                continue
            for i, j in ranked:
                pair = preference_pair(members[i], members[j])
                self._pairs.append(pair)
                self.judge_gap_sum += scores[i] - scores[j]
                if pair.gold_chosen is not None and pair.gold_rejected is not None:
                    self.gold_pairs += 1
                    self.gold_gap_sum += pair.gold_chosen - pair.gold_rejected
                    self.gold_agree += pair.gold_chosen > pair.gold_rejected
            taken += len(ranked)
        self.added += taken
        return taken

    def sample(self, batch_size: int, learner_version: int) -> SampledBatch | None:
        """Pop the `batch_size` oldest fresh pairs, or None (nothing popped) if too few."""
        kept = deque(p for p in self._pairs if not is_stale(learner_version, p.policy_version, self.max_policy_lag))
        dropped = len(self._pairs) - len(kept)
        self._pairs, self.dropped_stale = kept, self.dropped_stale + dropped
        if len(self._pairs) < batch_size:
            return None
        items = [self._pairs.popleft() for _ in range(batch_size)]
        self.sampled += batch_size
        self._last_lags = [policy_lag(learner_version, p.policy_version) for p in items]
        return SampledBatch(items=items, weights=[1.0] * batch_size, dropped_stale=dropped)

    def snapshot(self) -> dict[str, Any]:
        """Queued pairs and counters as JSON-safe data (a replay snapshot; never pickle)."""
        return {
            "pairs": [to_record(p) for p in self._pairs],
            "counters": [
                self.added, self.sampled, self.dropped_stale, self.rejected_full, self.groups_added,
                self.tied_groups, self.gold_pairs, self.gold_agree,
            ],
            "gaps": [self.judge_gap_sum, self.gold_gap_sum],
        }  # fmt: skip

    def restore(self, snap: dict[str, Any]) -> None:
        """Replace pairs and counters with a `snapshot()`."""
        self._pairs = deque(from_record(d) for d in snap["pairs"])
        (
            self.added, self.sampled, self.dropped_stale, self.rejected_full, self.groups_added,
            self.tied_groups, self.gold_pairs, self.gold_agree,
        ) = (int(x) for x in snap["counters"])  # fmt: skip
        self.judge_gap_sum, self.gold_gap_sum = (float(x) for x in snap["gaps"])

    def last_policy_lags(self) -> list[int]:
        return list(self._last_lags)

    def stats(self) -> dict[str, float]:
        out = {
            "buffer/size": float(len(self._pairs)),
            "buffer/fill": len(self._pairs) / self.capacity,
            "buffer/added": float(self.added),
            "buffer/sampled": float(self.sampled),
            "buffer/dropped_stale": float(self.dropped_stale),
            "buffer/rejected_full": float(self.rejected_full),
            "buffer/groups": float(self.groups_added),
            "buffer/tied_groups": float(self.tied_groups),
            "buffer/judge_gap": self.judge_gap_sum / max(self.added, 1),
        }
        if self.gold_pairs:
            out["buffer/gold_gap"] = self.gold_gap_sum / self.gold_pairs
            out["buffer/judge_gold_agreement"] = self.gold_agree / self.gold_pairs
        return out
