"""Stages: a library component plus its metrics, as both runners host it.

`services/local.py` calls these objects directly; `services/actors.py` wraps each in a Ray
actor. Keeping the metric reporting here means a local run and a Ray run report the same
numbers under the same names (`reward/...`, `buffer/...`, `learner/...`).
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

from shoal.core import MetricsSink, NullMetrics
from shoal.types import Rollout, SampledBatch, ScoredRollout


def _mean_std(xs: Sequence[float]) -> tuple[float, float]:
    if not xs:
        return math.nan, math.nan
    m = sum(xs) / len(xs)
    return m, math.sqrt(sum((x - m) ** 2 for x in xs) / len(xs))


class ScoringStage:
    """Runs every RewardScorer on a batch of rollouts; rejects non-finite scores."""

    def __init__(self, scorers: list[Any], metrics: MetricsSink | None = None, events: Any = None) -> None:
        self.scorers, self.metrics, self.events = scorers, metrics or NullMetrics(), events
        self.rejected = 0

    def __call__(self, rollouts: Sequence[Rollout]) -> list[ScoredRollout]:
        from shoal.reward.scoring import score_rollouts

        scored, rejections = score_rollouts(self.scorers, list(rollouts))
        self.rejected += len(rejections)
        for rej in rejections[:5]:
            self._event(
                "reward_rejected", f"{rej.scorer} gave {rej.field}={rej.value} for {rej.prompt_id}: rollout dropped"
            )
        self.metrics.log(self.reward_metrics(scored), step=_version(rollouts))
        return scored

    def reward_metrics(self, scored: Sequence[ScoredRollout]) -> dict[str, float]:
        out: dict[str, float] = {"reward/rejected_nonfinite": float(self.rejected)}
        out["reward/mean"], out["reward/std"] = _mean_std([s.reward for s in scored])
        names = sorted({k for s in scored for k in (*s.terms.sequence, *s.terms.metrics_only)})
        for name in names:
            vals = [s.terms.sequence.get(name, s.terms.metrics_only.get(name)) for s in scored]
            out[f"reward/{name}_mean"], out[f"reward/{name}_std"] = _mean_std([v for v in vals if v is not None])
        return {k: v for k, v in out.items() if not math.isnan(v)}

    def _event(self, kind: str, message: str) -> None:
        if self.events is not None:
            self.events.event(kind, message)


LAG_BUCKETS = (0, 1, 2, 3, 4, 8, 16, 32, 64)  # `buffer/policy_lag/<k>`: lags in [k, the next bucket)


def lag_bucket(lag: int) -> int:
    """The fixed histogram bucket of a policy lag (its lower bound): a run logs at most
    len(LAG_BUCKETS) lag fields, however stale its samples get (one field per distinct lag
    made a 1,000-step R2D2 run 7.8 MiB in Redis, 338 fields per entry)."""
    return max(b for b in LAG_BUCKETS if b <= max(lag, 0))


def _version(items: Sequence[Any]) -> int | None:
    return max((it.policy_version for it in items), default=None)


class BufferStage:
    """The replay buffer plus its fill, drop and policy-lag metrics."""

    def __init__(self, buffer: Any, metrics: MetricsSink | None = None) -> None:
        self.buffer, self.metrics = buffer, metrics or NullMetrics()
        self.lag_counts: Counter[int] = Counter()

    def add(self, items: Sequence[Any]) -> int:
        """Insert; returns the room left, in units of a request (`room()`)."""
        self.buffer.add(list(items))
        return self.room()

    def room(self) -> int:
        """Room in units of a request: rollouts (= prompts) for a FIFO queue, whole episodes
        for the episode replay. Workers get new requests only while there is room."""
        return self.buffer.room()

    def sample(self, batch_size: int, learner_version: int) -> SampledBatch | None:
        batch = self.buffer.sample(batch_size, learner_version)
        if batch is None:
            return None
        lags = self.buffer.last_policy_lags()
        self.lag_counts.update(lag_bucket(lag) for lag in lags)
        out = dict(self.buffer.stats())
        out["buffer/policy_lag_mean"] = sum(lags) / len(lags)
        out["buffer/policy_lag_max"] = float(max(lags))
        out.update({f"buffer/policy_lag/{k}": float(v) for k, v in sorted(self.lag_counts.items())})
        self.metrics.log(out, step=learner_version)
        return batch

    def stats(self) -> dict[str, float]:
        return self.buffer.stats()

    def snapshot(self) -> dict[str, Any] | None:
        """The replay's contents as JSON-safe data, when it can take a snapshot (None: it
        cannot; a resumed run then starts with an empty replay and says so)."""
        snap = getattr(self.buffer, "snapshot", None)
        return snap() if snap is not None else None

    def restore(self, snap: dict[str, Any]) -> None:
        self.buffer.restore(snap)


class LearnerStage:
    """The learner plus timing, checkpoint cadence and metric reporting."""

    def __init__(
        self,
        learner: Any,
        metrics: MetricsSink | None = None,
        checkpoint_interval: int = 0,
        run_dir: str | None = None,
        keep_checkpoints: int = 0,
    ) -> None:
        self.learner, self.metrics = learner, metrics or NullMetrics()
        self.checkpoint_interval, self.run_dir, self.keep_checkpoints = checkpoint_interval, run_dir, keep_checkpoints
        self.started = time.perf_counter()
        self.steps = 0

    @property
    def policy_version(self) -> int:
        return self.learner.policy_version

    def checkpoint_due(self) -> bool:
        """Whether the next step ends with a periodic checkpoint (the driver then sends its state)."""
        return bool(self.checkpoint_interval) and (self.learner.policy_version + 1) % self.checkpoint_interval == 0

    def step(self, batch: SampledBatch, driver_state: dict[str, Any] | None = None) -> dict[str, float]:
        lags = [self.learner.policy_version - it.policy_version for it in batch.items]
        m = dict(self.learner.step(batch))
        m["learner/policy_lag_mean"] = sum(lags) / len(lags)
        m["learner/policy_lag_max"] = float(max(lags))
        self.steps += 1
        m["learner/steps_per_s"] = self.steps / (time.perf_counter() - self.started)
        m["learner/policy_version"] = float(self.learner.policy_version)
        self.metrics.log(m, step=self.learner.policy_version)
        self.maybe_checkpoint(driver_state=driver_state)
        return m

    def replay_feedback(self, batch: SampledBatch) -> tuple[list[int], list[float]] | None:
        """(keys, new priorities) of the last batch when the learner computes priorities (R2D2)."""
        priorities = getattr(self.learner, "last_priorities", None)
        if not priorities or not batch.keys:
            return None
        return list(batch.keys), list(priorities)

    def diagnostic_episodes(self) -> int:
        """Recent episodes the learner wants for a diagnostic after this step (R2D2's dQ every
        r2d2.dq_interval steps); 0 for learners without one."""
        due = getattr(self.learner, "diagnostic_due", None)
        return int(due()) if due is not None else 0

    def diagnose(self, episodes: Sequence[Any]) -> dict[str, float]:
        """The learner's diagnostic on recent (episode, states) pairs, logged under its names."""
        if not episodes:
            return {}
        m = self.learner.diagnose(episodes)
        self.metrics.log(m, step=self.learner.policy_version)
        return m

    def maybe_checkpoint(self, force: bool = False, driver_state: dict[str, Any] | None = None) -> str | None:
        """Save when due (every checkpoint_interval steps) or forced: the learner's state, the
        driver's (data position, replay snapshot: `learner.checkpoint.write_driver_state`),
        then prune to the newest keep_checkpoints."""
        v = self.learner.policy_version
        due = self.checkpoint_interval and v % self.checkpoint_interval == 0
        if self.run_dir is None or not (force or due):
            return None
        from shoal.learner.checkpoint import checkpoint_dir, prune_checkpoints, write_driver_state

        path = str(checkpoint_dir(self.run_dir, v))
        self.learner.save(path)
        if driver_state is not None:
            write_driver_state(path, driver_state)
        prune_checkpoints(self.run_dir, self.keep_checkpoints)
        event = getattr(self.metrics, "event", None)
        if event is not None:
            event("checkpoint_saved", f"step {v}: {path}")
        return path
