"""The metrics schema's names, shared by the store (`metrics.py`) and the tables
(`metrics_table.py`): metric namespaces, worker record fields, event kinds, run statuses."""

from __future__ import annotations

from typing import Any

NAMESPACES = ("rollout", "reward", "buffer", "learner", "weights")
WORKER_FIELDS = ("node", "engine", "policy_version", "tokens_per_s", "samples_per_s", "healthy", "left", "last_seen")
EVENT_KINDS = (
    "run_started",
    "run_finished",
    "run_failed",
    "worker_joined",
    "worker_restarted",
    "nan_rewards_rejected",
    "stale_dropped",
    "checkpoint_saved",
    "weights_synced",
    "events_suppressed",
    "run_resumed",
    "run_interrupted",
    "actor_died",
    "actor_restored",
    "actor_replaced",
    "actor_retired",
    "actor_timeout",
    "worker_starting",
    "worker_left",
)
RUN_STATUSES = ("running", "finished", "failed", "interrupted")


def _num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)
