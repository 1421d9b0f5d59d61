"""Generation throughput numbers, computed one way for every engine and the worker."""

from __future__ import annotations

from collections.abc import Sequence

from shoal.types import Rollout


def generation_stats(rollouts: Sequence[Rollout], seconds: float) -> dict[str, float]:
    """`rollout/generate_s`, `rollout/tokens_per_s`, `rollout/samples_per_s` of one generate call."""
    tokens = sum(len(r.response_ids) for r in rollouts)
    dt = max(seconds, 1e-9)
    return {
        "rollout/generate_s": seconds,
        "rollout/tokens_per_s": tokens / dt,
        "rollout/samples_per_s": len(rollouts) / dt,
    }
