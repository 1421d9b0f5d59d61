"""EpisodeReplay: feeds whole episodes from rollout workers into an item replay; no Ray.

Workers produce whole episodes (with the recurrent states entering every turn, for R2D2);
learners sample items. This adapter sits in front of `PrioritizedSequenceReplay`:
- `add(pairs)` takes (Episode, states or None) pairs and turns each into items with `cut`
  (R2D2: `buffer.sequences.cut_episode` -> SequenceItems of burn_in + trace + 1 turns, one
  stored state each) or keeps the Episode itself as the item (ILQL: `cut=None`);
- items the replay's rate limiter refuses now wait in a pending queue, in order, and go in
  as soon as the learner has sampled enough (`flush`, called on every add and sample), so an
  insert limit slows producers down (`free()` counts the queue, `episode_room()` converts it
  to whole episodes at the mean items per episode seen so far) but never loses data;
- the last `recent` whole episodes with their states are kept for R2D2's dQ diagnostic
  (`recent_episodes`).
Everything else (`sample`, `update_priorities`, `last_policy_lags`, staleness, eviction) is
the wrapped replay's; `stats()` adds buffer/pending and buffer/episodes_added.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from shoal.types import Episode, SampledBatch, from_record, to_record

CutFn = Callable[[Episode, Any], list[Any]]


class EpisodeReplay:
    """See the module docstring."""

    def __init__(self, replay: Any, cut: CutFn | None = None, recent: int = 0) -> None:
        self.replay, self.cut = replay, cut
        self.pending: deque[Any] = deque()
        self.recent: deque[tuple[Episode, Any]] = deque(maxlen=max(recent, 0)) if recent else deque(maxlen=0)
        self.episodes_added = self.items_queued = 0
        self.refused = 0  # leading pending items already refused by the replay (not counted again)

    def __len__(self) -> int:
        return len(self.replay)

    def free(self) -> int:
        """How many more items the replay would take now, net of those still pending."""
        return max(0, self.replay.free() - len(self.pending))

    def items_per_episode(self) -> float:
        """Mean items an episode has produced so far (1 before the first)."""
        return self.items_queued / self.episodes_added if self.episodes_added else 1.0

    def room(self) -> int:
        """Room in units of a request (whole episodes): the runners' back-pressure."""
        return self.episode_room()

    def episode_room(self) -> int:
        """Room in episodes: ceil(free() / items_per_episode), so it is > 0 exactly when free() is
        (a caller that waits for room > 0 can never deadlock with a rate-limited learner). Asking
        producers for about this many episodes keeps the pending queue short and sampled items fresh."""
        return int(math.ceil(self.free() / max(self.items_per_episode(), 1e-9)))

    def flush(self) -> int:
        """Move pending items into the replay as far as its rate limiter allows."""
        if not self.pending:
            return 0
        took = self.replay.add(list(self.pending), already_refused=self.refused)
        for _ in range(took):
            self.pending.popleft()
        self.refused = len(self.pending)  # all still pending were refused once (counted once by the replay)
        return took

    def items_of(self, episode: Episode, states: Any) -> list[Any]:
        return [episode] if self.cut is None else self.cut(episode, states)

    def add(self, pairs: Sequence[tuple[Episode, Any]]) -> int:
        """Queue the items of every episode, insert what the limiter allows; returns items queued."""
        n = 0
        for episode, states in pairs:
            items = self.items_of(episode, states)
            self.pending.extend(items)
            n += len(items)
            self.episodes_added += 1
            self.items_queued += len(items)
            if states is not None and self.recent.maxlen:
                self.recent.append((episode, states))
        self.flush()
        return n

    def sample(self, batch_size: int, learner_version: int) -> SampledBatch | None:
        batch = self.replay.sample(batch_size, learner_version)
        self.flush()
        return batch

    def update_priorities(self, keys: Sequence[int], priorities: Sequence[float]) -> int:
        return self.replay.update_priorities(keys, priorities)

    def last_policy_lags(self) -> list[int]:
        return self.replay.last_policy_lags()

    def recent_episodes(self, n: int) -> list[tuple[Episode, Any]]:
        """The last n (episode, states) pairs added (oldest first)."""
        return list(self.recent)[-n:] if n > 0 else []

    def snapshot(self) -> dict[str, Any]:
        """The replay's snapshot plus the pending queue and counters (JSON-safe). The recent
        episodes kept for R2D2's dQ diagnostic are not in it: the diagnostic waits for new ones."""
        return {
            "replay": self.replay.snapshot(),
            "pending": [to_record(it) for it in self.pending],
            "counters": [self.episodes_added, self.items_queued, self.refused],
        }

    def restore(self, snap: dict[str, Any]) -> None:
        self.replay.restore(snap["replay"])
        self.pending = deque(from_record(d) for d in snap["pending"])
        self.episodes_added, self.items_queued, self.refused = (int(x) for x in snap["counters"])
        self.recent.clear()

    def stats(self) -> dict[str, float]:
        return {
            **self.replay.stats(),
            "buffer/pending": float(len(self.pending)),
            "buffer/episodes_added": float(self.episodes_added),
        }


__all__ = ["EpisodeReplay"]
