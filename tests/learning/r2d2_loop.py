"""The in-process actor-learner step shared by the R2D2 learning tests: after each episode,
up to `updates` learner steps from the prioritized replay, priorities written back, and the
actor re-synced every `sync_period` learner steps (stale stored states, as in R2D2)."""

from __future__ import annotations

from typing import Any


def sync_actor(learner: Any, actor: Any) -> None:
    w = learner.get_weights()
    actor.load_weights(w.tensors, w.version)


def learn_after_episode(learner: Any, actor: Any, replay: Any, updates: int, batch_size: int, sync_period: int) -> None:
    for _ in range(updates):
        batch = replay.sample(batch_size, learner.policy_version)
        if batch is None:
            break
        _, prio = learner.step_with_priorities(batch)
        replay.update_priorities(batch.keys, prio)
        if learner.policy_version % sync_period == 0:
            sync_actor(learner, actor)
