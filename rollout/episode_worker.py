"""Multi-turn rollout worker: an environment plus an agent, playing whole episodes; no Ray.

The multi-turn counterpart of `rollout.worker.RolloutWorker` (which generates for prompts).
`EpisodeWorker.run(n)` plays n episodes with the agent's current weights and returns an
`EpisodeBatch`: the episodes (each stamped with the agent's `policy_version` and the worker
id), the recurrent states entering every turn when the agent has them (R2D2 stores one of
them per replay item), and the episodes the environment broke.

Agents (the `EpisodeAgent` protocol: play / load_weights / policy_version / engine):
- `QAgent`: `learner.r2d2.acting.QActor` (recurrent per-utterance Q, epsilon-greedy over the
  env's legal actions); returns states.
- `ILQLAgent`: `learner.ilql.acting.ILQLPolicy` (token-level ILQL decoding
  log pi_beta + beta (Q - V) on the transformers engine; vLLM cannot, see that module);
  no states.

Bad environments never stop a worker: `GuardedEnv` validates every reset/step result with
the same rules as `rollout.envs.base.run_episode` (a raise, a non-string observation, a
non-finite reward, a malformed step tuple) and turns a violation into `EnvFailure`; the
worker then records a `DroppedEpisode` naming the task, the episode id and the turn, logs
an `episode_dropped` event, counts it (`rollout/dropped_episodes`) and plays on. Agent
errors propagate (they are bugs, not data).

Seeds: training episode j of worker i resets the env with `train_seed(seed, i, j)`;
evaluation uses `eval_seed(seed, k)`, a disjoint stream, so "before" and "after" see the same
held-out episodes.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from shoal.core import MetricsSink, NullMetrics
from shoal.rollout.envs.base import (
    DroppedEpisode,
    _check_observation,
    _check_step,
    _reason,
    episode_success,
    legal_actions_of,
    run_episode,
    task_name,
)
from shoal.types import Episode, VersionedWeights

EVAL_SEED_BASE = 9_000_000_000


def train_seed(seed: int, worker_index: int, episode_index: int) -> int:
    """Reset seed of training episode `episode_index` of worker `worker_index`."""
    return seed * 1_000_003 + worker_index * 100_000_007 + episode_index


def eval_seed(seed: int, index: int) -> int:
    """Reset seed of held-out evaluation episode `index` (disjoint from training seeds)."""
    return EVAL_SEED_BASE + seed * 100_003 + index


class EnvFailure(Exception):
    """The environment broke its contract at `turn`; `reason` says how."""

    def __init__(self, turn: int, reason: str) -> None:
        super().__init__(reason)
        self.turn, self.reason = turn, reason


class GuardedEnv:
    """Wraps a TextEnvironment; any contract violation becomes EnvFailure (module doc)."""

    def __init__(self, env: Any) -> None:
        self.env, self.turn = env, 0
        self.name = task_name(env)

    def legal_actions(self) -> list[str] | None:
        try:
            return legal_actions_of(self.env)
        except Exception as e:  # the user's env: a raise here is a broken episode too
            raise EnvFailure(self.turn, f"legal_actions() raised {type(e).__name__}: {e}") from None

    def reset(self, seed: int | None = None) -> str:
        self.turn = 0
        try:
            return _check_observation(self.env.reset(seed=seed), "reset()")
        except Exception as e:
            raise EnvFailure(0, _reason(e, "reset()")) from None

    def step(self, action: str) -> tuple[str, float, bool, dict[str, Any]]:
        try:
            out = _check_step(self.env.step(action))
        except Exception as e:
            raise EnvFailure(self.turn, _reason(e, "step()")) from None
        self.turn += 1
        return out


class EpisodeAgent(Protocol):
    policy_version: int
    engine: str

    def play(
        self, env: Any, episode_id: str, seed: int, max_turns: int, greedy: bool
    ) -> tuple[Episode, np.ndarray | None]: ...

    def load_weights(self, weights: VersionedWeights) -> None: ...


class QAgent:
    """A QActor as an EpisodeAgent (recurrent Q over the env's legal actions)."""

    engine = "recurrent_q"

    def __init__(self, actor: Any) -> None:
        self.actor = actor

    @property
    def policy_version(self) -> int:
        return self.actor.policy_version

    def play(
        self, env: Any, episode_id: str, seed: int, max_turns: int, greedy: bool
    ) -> tuple[Episode, np.ndarray | None]:
        return self.actor.run_episode(env, episode_id, seed=seed, max_turns=max_turns, greedy=greedy)

    def load_weights(self, weights: VersionedWeights) -> None:
        self.actor.load_weights(weights.tensors, weights.version)


class ILQLAgent:
    """An ILQLPolicy as an EpisodeAgent: samples at `temperature` for training, greedy for eval."""

    engine = "ilql_transformers"

    def __init__(self, policy: Any, temperature: float) -> None:
        self.policy, self.temperature, self.policy_version = policy, temperature, 0

    def play(
        self, env: Any, episode_id: str, seed: int, max_turns: int, greedy: bool
    ) -> tuple[Episode, np.ndarray | None]:
        self.policy.temperature = 0.0 if greedy else self.temperature
        result = run_episode(env, self.policy, episode_id, max_turns, seed=seed)
        if isinstance(result, DroppedEpisode):  # GuardedEnv raised inside: surface it the same way
            raise EnvFailure(result.turn, result.reason)
        return dataclasses.replace(result, policy_version=self.policy_version), None

    def load_weights(self, weights: VersionedWeights) -> None:
        self.policy.load_weights(weights)
        self.policy_version = weights.version


@dataclass
class EpisodeBatch:
    """What one `EpisodeWorker.run` call produced."""

    worker_id: str
    policy_version: int
    episodes: list[Episode] = field(default_factory=list)
    states: list[Any] = field(default_factory=list)  # per episode: [T, ...] states entering each turn, or None
    dropped: list[DroppedEpisode] = field(default_factory=list)
    seconds: float = 0.0

    def pairs(self) -> list[tuple[Episode, Any]]:
        return list(zip(self.episodes, self.states))

    @property
    def turns(self) -> int:
        return sum(len(e.turns) for e in self.episodes)


def _mean(xs: Sequence[float]) -> float:
    return float(np.mean(xs)) if len(xs) else float("nan")


def summarize_eval(parts: Sequence[dict[str, list[float]]]) -> dict[str, float]:
    """Merge `EpisodeWorker.evaluate` results: episodes, return_mean, success_rate, length_mean, dropped."""
    rets = [x for p in parts for x in p["returns"]]
    out = {"episodes": float(len(rets)), "dropped": float(sum(x for p in parts for x in p["dropped"]))}
    if rets:
        out["return_mean"] = _mean(rets)
        out["success_rate"] = _mean([x for p in parts for x in p["successes"]])
        out["length_mean"] = _mean([x for p in parts for x in p["lengths"]])
    return out


class EpisodeWorker:
    """Plays episodes of one environment with one agent (module docstring)."""

    def __init__(
        self,
        env: Any,
        agent: Any,
        worker_id: str,
        worker_index: int,
        max_turns: int,
        seed: int,
        metrics: MetricsSink | None = None,
    ) -> None:
        self.env, self.agent = GuardedEnv(env), agent
        self.worker_id, self.worker_index, self.max_turns, self.seed = worker_id, worker_index, max_turns, seed
        self.metrics = metrics or NullMetrics()
        self.attempts = self.episodes_played = self.turns_played = self.dropped = 0
        self.busy_s = 0.0

    @property
    def policy_version(self) -> int:
        return self.agent.policy_version

    def load_weights(self, weights: VersionedWeights) -> dict[str, float]:
        t0 = time.perf_counter()
        self.agent.load_weights(weights)
        return {"weights/load_s": time.perf_counter() - t0}

    def _play(self, episode_id: str, seed: int, greedy: bool, batch: EpisodeBatch) -> None:
        try:
            episode, states = self.agent.play(self.env, episode_id, seed, self.max_turns, greedy)
        except EnvFailure as e:
            dropped = DroppedEpisode(self.env.name, episode_id, e.turn, e.reason)
            batch.dropped.append(dropped)
            event = getattr(self.metrics, "event", None)  # Redis/Tee sinks record events; a plain MetricsSink may not
            if event is not None:
                event("episode_dropped", str(dropped))
            return
        batch.episodes.append(dataclasses.replace(episode, worker_id=self.worker_id))
        batch.states.append(states)

    def run(self, num_episodes: int) -> EpisodeBatch:
        """Play `num_episodes` training episodes (the agent explores)."""
        t0 = time.perf_counter()
        batch = EpisodeBatch(self.worker_id, self.policy_version)
        for _ in range(num_episodes):
            j = self.attempts
            self.attempts += 1
            self._play(f"{self.worker_id}-{j:07d}", train_seed(self.seed, self.worker_index, j), False, batch)
        batch.seconds = time.perf_counter() - t0
        self._account(batch)
        return batch

    def act(self, num_episodes: int) -> list[tuple[Episode, Any]]:
        """One request of the generic runners (`shoal.builders`): (episode, recurrent states)
        pairs for the replay; dropped episodes are counted in `dropped` and reported."""
        return self.run(num_episodes).pairs()

    def _account(self, batch: EpisodeBatch) -> None:
        self.episodes_played += len(batch.episodes)
        self.dropped += len(batch.dropped)
        self.turns_played += batch.turns
        self.busy_s += batch.seconds
        m = {
            "rollout/episodes": float(self.episodes_played),
            "rollout/dropped_episodes": float(self.dropped),
            "rollout/turns_per_s": batch.turns / max(batch.seconds, 1e-9),
            "rollout/episodes_per_s": len(batch.episodes) / max(batch.seconds, 1e-9),
        }
        if batch.episodes:
            m["rollout/episode_return_mean"] = _mean([e.total_return for e in batch.episodes])
            m["rollout/episode_length_mean"] = _mean([len(e.turns) for e in batch.episodes])
            m["rollout/success_rate"] = _mean([float(episode_success(e)) for e in batch.episodes])
            m["reward/mean"] = m["rollout/episode_return_mean"]
        self.metrics.log(m, step=batch.policy_version)

    def evaluate(self, indices: Sequence[int]) -> dict[str, list[float]]:
        """Greedy episodes on held-out seeds `eval_seed(seed, k)` for k in indices; per-episode
        returns / successes / lengths (merge the parts of several workers with `summarize_eval`)."""
        batch = EpisodeBatch(self.worker_id, self.policy_version)
        for k in indices:
            self._play(f"eval-{k:05d}", eval_seed(self.seed, k), True, batch)
        eps = batch.episodes
        return {
            "returns": [e.total_return for e in eps],
            "successes": [float(episode_success(e)) for e in eps],
            "lengths": [float(len(e.turns)) for e in eps],
            "dropped": [float(len(batch.dropped))],
        }

    def status(self) -> dict[str, Any]:
        return {
            "engine": self.agent.engine,
            "policy_version": self.policy_version,
            "samples": self.episodes_played,
            "dropped_episodes": self.dropped,
            "samples_per_s": self.episodes_played / max(self.busy_s, 1e-9),
            "tokens_per_s": self.turns_played / max(self.busy_s, 1e-9),
        }


__all__ = [
    "EnvFailure",
    "EpisodeAgent",
    "EpisodeBatch",
    "EpisodeWorker",
    "GuardedEnv",
    "ILQLAgent",
    "QAgent",
    "eval_seed",
    "summarize_eval",
    "train_seed",
]
