"""Roles: the contracts every Shoal component implements (Acme's actor/learner/adder split).

Each role is a small `typing.Protocol`. Libraries (`rollout/`, `reward/`, `buffer/`,
`learner/`) implement them without importing Ray; `services/actors.py` hosts them as Ray
actors, `services/local.py` runs them in one process. Wire types live in `shoal.types`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from shoal.types import (
    Prompt,
    RewardTerms,
    Rollout,
    SampledBatch,
    ScoredRollout,
    VersionedWeights,
)


@runtime_checkable
class RolloutEngine(Protocol):
    """Generates responses and takes new weights in place, without restarting.

    generate: prompts -> one Rollout per prompt (token ids, sampling log-probs, version).
    load_weights: replace the policy weights; afterwards `policy_version == weights.version`.
    logprobs: log pi(a_t | s_t) of given responses under the current weights (for checks).
    """

    name: str
    policy_version: int

    def generate(self, prompts: Sequence[Prompt]) -> list[Rollout]: ...

    def load_weights(self, weights: VersionedWeights) -> None: ...

    def logprobs(self, prompt_ids: Sequence[list[int]], response_ids: Sequence[list[int]]) -> list[list[float]]: ...


@runtime_checkable
class PromptSource(Protocol):
    """An endless, seeded stream of prompts for single-turn tasks."""

    def next_batch(self, n: int) -> list[Prompt]: ...


@runtime_checkable
class TextEnvironment(Protocol):
    """A multi-turn text task (a POMDP): reset -> first observation; step(action) ->
    (observation, reward, done, info). Illegal or unparsable actions get the task's penalty and
    a message in the observation, never an exception. `legal_actions()` lists the action set
    when it is small (None when free text), for max-over-actions Q-learning."""

    name: str

    def reset(self, seed: int | None = None) -> str: ...

    def step(self, action: str) -> tuple[str, float, bool, dict[str, Any]]: ...

    def legal_actions(self) -> list[str] | None: ...


@runtime_checkable
class RewardScorer(Protocol):
    """Scores rollouts in batches: one RewardTerms per rollout, same order.

    Kinds: learned reward model, rule function (`module:function`), reference-policy KL
    (fills `ref_logprobs`), task gold reward (metrics only). Non-finite values are rejected
    by `reward.scoring.merge_terms`, never trained on.
    """

    name: str

    def score(self, rollouts: Sequence[Rollout]) -> list[RewardTerms]: ...


@runtime_checkable
class ReplayBuffer(Protocol):
    """Holds experience between actors and the learner.

    add: insert items, returns how many were accepted (0 when full: back-pressure).
    sample: a batch for learner version `learner_version`, or None if not enough items.
    free: how many more items `add` would accept now.
    stats: numbers for metrics (`buffer/...`).
    The FIFO queue (PPO) and the prioritized sequence replay (R2D2) both implement it;
    prioritized buffers add `update_priorities(keys, priorities)`.
    """

    def add(self, items: Sequence[Any]) -> int: ...

    def sample(self, batch_size: int, learner_version: int) -> SampledBatch | None: ...

    def free(self) -> int: ...

    def __len__(self) -> int: ...

    def stats(self) -> dict[str, float]: ...


@runtime_checkable
class Learner(Protocol):
    """Owns the trained parameters and the optimizer; counts `policy_version`.

    step: one update on a batch; returns `learner/...` metrics; increments policy_version.
    get_weights: the current policy as VersionedWeights (HF names, CPU tensors).
    save / restore: checkpoint model, optimizer, step and policy_version.
    """

    policy_version: int

    def step(self, batch: SampledBatch) -> dict[str, float]: ...

    def get_weights(self) -> VersionedWeights: ...

    def save(self, path: str) -> None: ...

    def restore(self, path: str) -> None: ...


@runtime_checkable
class WeightTransport(Protocol):
    """Moves VersionedWeights from the learner to every rollout worker.

    publish: called once per sync on the learner side; returns a handle that is cheap to
        pass around (an ObjectRef on the object-store transport).
    fetch: called on each worker with that handle; returns the VersionedWeights.
    """

    name: str

    def publish(self, weights: VersionedWeights) -> Any: ...

    def fetch(self, handle: Any) -> VersionedWeights: ...


@runtime_checkable
class MetricsSink(Protocol):
    """Where every component reports numbers: `log({"rollout/tokens_per_s": 812.0}, step=3)`."""

    def log(self, metrics: dict[str, float], step: int | None = None) -> None: ...


class NullMetrics:
    """A MetricsSink that keeps nothing (for library code run without a store)."""

    def log(self, metrics: dict[str, float], step: int | None = None) -> None:
        return None

    def event(self, kind: str, message: str) -> None:
        return None


class ListMetrics:
    """A MetricsSink that keeps every record in memory (in-process runs and tests)."""

    def __init__(self) -> None:
        self.records: list[tuple[int | None, dict[str, float]]] = []
        self.events: list[tuple[str, str]] = []

    def log(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.records.append((step, dict(metrics)))

    def event(self, kind: str, message: str) -> None:
        self.events.append((kind, message))

    def latest(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for _, m in self.records:
            out.update(m)
        return out


__all__ = [
    "RolloutEngine",
    "PromptSource",
    "RewardScorer",
    "ReplayBuffer",
    "Learner",
    "WeightTransport",
    "MetricsSink",
    "NullMetrics",
    "ListMetrics",
    "TextEnvironment",
    "Prompt",
    "Rollout",
    "RewardTerms",
    "ScoredRollout",
    "SampledBatch",
    "VersionedWeights",
]
