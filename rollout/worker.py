"""A rollout worker: one engine, its metrics, and the version it serves.

The same class runs in-process (services/local.py) and inside a Ray actor
(services/actors.py). It never picks prompts itself: the driver sends them, so a request
that dies with its worker is simply sent again (work re-queued, nothing lost).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from shoal.core import MetricsSink, NullMetrics, RolloutEngine
from shoal.rollout.stats import generation_stats
from shoal.types import Prompt, Rollout, VersionedWeights


class RolloutWorker:
    def __init__(self, engine: RolloutEngine, worker_id: str, metrics: MetricsSink | None = None) -> None:
        self.engine, self.worker_id = engine, worker_id
        self.metrics = metrics or NullMetrics()
        self.samples = self.tokens = 0
        self.last_rates = {"tokens_per_s": 0.0, "samples_per_s": 0.0}

    @property
    def policy_version(self) -> int:
        return self.engine.policy_version

    def generate(self, prompts: Sequence[Prompt]) -> list[Rollout]:
        t0 = time.perf_counter()
        rollouts = self.engine.generate(prompts)
        stats = generation_stats(rollouts, time.perf_counter() - t0)
        self.samples += len(rollouts)
        self.tokens += sum(len(r.response_ids) for r in rollouts)
        self.last_rates = {
            "tokens_per_s": stats["rollout/tokens_per_s"],
            "samples_per_s": stats["rollout/samples_per_s"],
        }
        stats |= {"rollout/policy_version": float(self.policy_version), "rollout/samples_total": float(self.samples)}
        self.metrics.log(stats, step=self.policy_version)
        return rollouts

    def act(self, prompts: Sequence[Prompt]) -> list[Rollout]:
        """One request of the generic runners (`shoal.builders`): generate for the prompts."""
        return self.generate(prompts)

    def evaluate(self, prompts: Sequence[Prompt]) -> list[Rollout]:
        """Held-out prompts, sampled as in training (the runners score them)."""
        return self.generate(prompts)

    def load_weights(self, weights: VersionedWeights) -> dict[str, float]:
        t0 = time.perf_counter()
        self.engine.load_weights(weights)
        dt = time.perf_counter() - t0
        out = {"weights/load_s": dt, "rollout/policy_version": float(self.policy_version)}
        self.metrics.log(out, step=self.policy_version)
        return out

    def rng_state(self) -> list[int] | None:
        """The engine's sampling RNG (JSON), when it has one (transformers; vLLM: None)."""
        get = getattr(self.engine, "rng_state", None)
        return get() if get is not None else None

    def set_rng_state(self, state: list[int] | None) -> None:
        set_ = getattr(self.engine, "set_rng_state", None)
        if state is not None and set_ is not None:
            set_(state)

    def logprobs(self, prompt_ids: list[list[int]], response_ids: list[list[int]]) -> list[list[float]]:
        """Log-probs under the sampling distribution (the engine's temperature), like the learner's."""
        return self.engine.logprobs(prompt_ids, response_ids, temperature=getattr(self.engine, "temperature", 1.0))

    def status(self) -> dict[str, object]:
        return {
            "worker_id": self.worker_id,
            "engine": getattr(self.engine, "name", type(self.engine).__name__),
            "policy_version": self.policy_version,
            "samples": self.samples,
            "tokens": self.tokens,
            **self.last_rates,
        }
