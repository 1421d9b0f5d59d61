"""Wire types: the data that moves between Shoal's roles.

Every type here is a plain dataclass of Python scalars and lists (plus torch tensors in
`VersionedWeights`, numpy states in `SequenceItem`), so it travels through Ray object refs
as-is; `to_record` / `from_record` turn replay items into JSON-safe data and back (replay
snapshots on disk: never pickle). Nothing here imports Ray.

One clock: `policy_version` is the learner's optimizer-step count at the moment the weights
that produced a sample were published. Every rollout and every buffer item carries it;
staleness is `learner_version - policy_version` (see `policy_lag`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Prompt:
    """One prompt for single-turn generation.

    prompt_id: unique within a run (task name + index).
    text: the prompt as text; token_ids: the same, tokenized by the policy's tokenizer.
    meta: task data the gold reward / rule scorers need (JSON-safe values only).
    """

    prompt_id: str
    text: str
    token_ids: list[int]
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Rollout:
    """One sampled response.

    response_ids: [T] generated token ids (EOS included when generation stopped on it).
    logprobs: [T] log pi_behaviour(a_t | s_t) of each sampled token under the sampling
        distribution actually used (after temperature), from the engine that sampled it.
    policy_version: the version of the weights that generated it.
    """

    prompt: Prompt
    response_ids: list[int]
    response_text: str
    logprobs: list[float]
    policy_version: int
    worker_id: str
    finish_reason: str = "length"

    def __post_init__(self) -> None:
        if len(self.response_ids) != len(self.logprobs):
            raise ValueError(
                f"Rollout {self.prompt.prompt_id}: {len(self.response_ids)} tokens but {len(self.logprobs)} logprobs"
            )


@dataclass(frozen=True)
class RewardTerms:
    """What one RewardScorer says about one rollout.

    sequence: named sequence-level rewards (e.g. {"reward_model": 0.7}); trained on.
    ref_logprobs: [T] log pi_ref(a_t | s_t) under the frozen reference (SFT) policy, from
        the KL scorer; the learner turns them into the per-token KL penalty with its
        (fixed or adaptive) coefficient.
    metrics_only: named numbers reported but never trained on (e.g. {"gold": 0.4}).
    """

    sequence: dict[str, float] = field(default_factory=dict)
    ref_logprobs: list[float] | None = None
    metrics_only: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class ScoredRollout:
    """A rollout with every scorer's terms merged; what the PPO buffer holds.

    reward: sum of all `terms.sequence` values - the scalar placed on the last token.
    """

    rollout: Rollout
    terms: RewardTerms
    reward: float

    @property
    def policy_version(self) -> int:
        return self.rollout.policy_version


@dataclass(frozen=True)
class PreferencePair:
    """Two answers to one prompt, one preferred: what DPO trains on (Rafailov et al. 2023).

    chosen_ids / rejected_ids: response token ids as a rollout's `response_ids` (EOS included
        when the answer ended), tokenized by the policy's tokenizer.
    policy_version: the weights that generated both answers (-1: offline data, never stale).
    gold_chosen / gold_rejected: the task's gold rewards when known (metrics only).
    """

    pair_id: str
    prompt: Prompt
    chosen_ids: list[int]
    rejected_ids: list[int]
    chosen_text: str
    rejected_text: str
    policy_version: int = -1
    gold_chosen: float | None = None
    gold_rejected: float | None = None


@dataclass(frozen=True)
class SampledBatch:
    """What a ReplayBuffer hands the learner.

    items: the sampled items (ScoredRollout for PPO; SequenceItem for recurrent replay).
    keys: buffer keys for priority updates (empty for FIFO queues).
    weights: importance-sampling weights, one per item (all 1.0 for FIFO queues).
    dropped_stale: items discarded by the staleness bound while forming this batch.
    """

    items: list[Any]
    keys: list[int] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)
    dropped_stale: int = 0


@dataclass(frozen=True)
class VersionedWeights:
    """A published policy snapshot.

    version: the learner's policy_version after the step that produced these weights.
    tensors: Hugging Face checkpoint names -> CPU tensors (the policy LM only, no value head).
    Transports move this object whole (one ray.put per sync on the object-store transport).
    """

    version: int
    tensors: dict[str, Any]

    def num_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors.values())


def policy_lag(learner_version: int, sample_version: int) -> int:
    """How many learner steps old a sample is."""
    return learner_version - sample_version


def is_stale(learner_version: int, sample_version: int, max_policy_lag: int) -> bool:
    """The one staleness rule: a sample older than `max_policy_lag` steps is not trained on."""
    return policy_lag(learner_version, sample_version) > max_policy_lag


# ---- multi-turn language RL (POMDPs, R2D2 replay, ILQL) ------------------------------------


@dataclass(frozen=True)
class Turn:
    """One step of a text episode: the agent saw `observation`, said `action`, and got
    `reward`; `done` ends the episode. The history (o_1, a_1, ..., o_t) is the POMDP state."""

    observation: str
    action: str
    reward: float
    done: bool
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Episode:
    """A whole multi-turn episode as produced by a rollout worker or `shoal collect` (JSONL).

    turns: [T] in order; the last one has done=True unless the episode was truncated.
    policy_version: the weights that acted (-1 for scripted/offline policies).
    final_observation: what the environment said after the last action (the state to
        bootstrap from when a truncated episode is cut into replay items).
    """

    episode_id: str
    task: str
    turns: list[Turn]
    policy_version: int = -1
    worker_id: str = ""
    final_observation: str = ""

    @property
    def total_return(self) -> float:
        return float(sum(t.reward for t in self.turns))


@dataclass(frozen=True)
class SequenceItem:
    """An R2D2 replay item: burn_in_length + trace_length + 1 consecutive turns of ONE episode.

    start: index in the episode of the item's first turn.
    observations, actions, rewards, dones, mask: [L] each, L = burn_in + trace + 1; turns past
        the episode end are padding (empty strings, 0 reward, done=True, mask 0).
    start_state: the recurrent state ENTERING turn `start` (numpy float32, e.g. [2, H] for an
        LSTM's (h, c)); one per item, never per turn (Kapturowski et al. 2019).
    policy_version: the weights that produced the turns (and the stored state).
    """

    episode_id: str
    start: int
    observations: list[str]
    actions: list[str]
    rewards: list[float]
    dones: list[bool]
    mask: list[float]
    start_state: Any
    policy_version: int


# ---- JSON records of replay items (snapshots; never pickle) --------------------------------

_RECORD_TYPES = ("ScoredRollout", "PreferencePair", "Episode", "SequenceItem")


def _array_record(a: Any) -> dict[str, Any]:
    import numpy as np

    a = np.asarray(a)
    return {"dtype": str(a.dtype), "shape": list(a.shape), "data": a.reshape(-1).tolist()}


def _array(d: dict[str, Any]) -> Any:
    import numpy as np

    return np.asarray(d["data"], dtype=d["dtype"]).reshape(d["shape"])


def to_record(item: Any) -> dict[str, Any]:
    """A replay item (ScoredRollout, PreferencePair, Episode, SequenceItem) as JSON-safe data
    tagged with its type; `from_record` is the inverse (arrays keep dtype and shape)."""
    from dataclasses import asdict

    kind = type(item).__name__
    if kind not in _RECORD_TYPES:
        raise TypeError(f"no JSON record for {kind} (replay items are {', '.join(_RECORD_TYPES)})")
    if isinstance(item, SequenceItem):
        d = {f: getattr(item, f) for f in item.__dataclass_fields__ if f != "start_state"}
        d["start_state"] = _array_record(item.start_state)
    else:
        d = asdict(item)
    return {"type": kind, **d}


def from_record(d: dict[str, Any]) -> Any:
    """The item a `to_record` describes (ValueError for an unknown type tag)."""
    d = dict(d)
    kind = d.pop("type", None)
    if kind == "ScoredRollout":
        r = d["rollout"]
        rollout = Rollout(**{**r, "prompt": Prompt(**r["prompt"])})
        return ScoredRollout(rollout=rollout, terms=RewardTerms(**d["terms"]), reward=float(d["reward"]))
    if kind == "PreferencePair":
        return PreferencePair(**{**d, "prompt": Prompt(**d["prompt"])})
    if kind == "Episode":
        return Episode(**{**d, "turns": [Turn(**t) for t in d["turns"]]})
    if kind == "SequenceItem":
        return SequenceItem(**{**d, "start_state": _array(d["start_state"])})
    raise ValueError(f"unknown replay record type {kind!r} (expected one of {', '.join(_RECORD_TYPES)})")
