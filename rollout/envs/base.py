"""Driving text environments: the policy contract, the safe episode runner and the collector.

A `TextEnvironment` (shoal/core.py) is a POMDP spoken in text: `reset(seed)` gives the
first observation, `step(action)` gives (observation, reward, done, info). An `Episode`
(shoal/types.py) is the history (o_1, a_1, r_1, ..., o_T, a_T, r_T), the POMDP's Markov
state (seed 000 section 2.3). A `Policy` maps the observations it has seen to the next action
text; it keeps its own memory between `reset` calls, so a scripted policy, a recurrent policy
and a language model that re-reads the whole history all fit the same two methods. A model
policy's `reset` clears its transcript; its `act(o)` appends o, renders the transcript as the
prompt, asks a RolloutEngine for one response and returns it (token ids and log-probs stay
with the policy: a `Turn` holds text only).

`run_episode` never lets a broken environment end a run: an exception, a non-string
observation, a non-finite reward or a malformed step result becomes a `DroppedEpisode`
naming the task, the episode id, the turn and the reason. `iter_collect` / `collect` run many
episodes with a round-robin mix of policies and count the dropped ones.
"""

from __future__ import annotations

import json
import math
import numbers
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from shoal.core import TextEnvironment
from shoal.types import Episode, Turn


@runtime_checkable
class Policy(Protocol):
    """Chooses action text from observations. `reset(seed)` starts a new episode (clear
    memory, reseed randomness); `act(observation)` is called once per turn, in order."""

    name: str

    def reset(self, seed: int | None = None) -> None: ...

    def act(self, observation: str) -> str: ...


def parse_choice(action: Any, choices: Sequence[str]) -> str | None:
    """The choice `action` names (case, surrounding blanks and a final '.' or '!' ignored),
    or None when it names none of them (or is not a string)."""
    if not isinstance(action, str):
        return None
    text = action.strip().lower().rstrip(".!").strip()
    return text if text in choices else None


def task_name(env: Any) -> str:
    """The environment's `name`, or its class name when it has none."""
    name = getattr(env, "name", None)
    return name if isinstance(name, str) and name else type(env).__name__


def legal_actions_of(env: Any) -> list[str] | None:
    """env.legal_actions() when the environment has it, else None (free text)."""
    fn = getattr(env, "legal_actions", None)
    return fn() if callable(fn) else None


class RandomPolicy:
    """Uniform over a fixed action list (by default the environment's legal actions)."""

    def __init__(self, actions: Sequence[str], name: str = "random") -> None:
        if not actions:
            raise ValueError("RandomPolicy needs a non-empty action list")
        self.actions, self.name = list(actions), name
        self.rng = random.Random(0)

    def reset(self, seed: int | None = None) -> None:
        self.rng = random.Random(seed)

    def act(self, observation: str) -> str:
        return self.rng.choice(self.actions)


# ---- the safe runner -----------------------------------------------------------------------


@dataclass(frozen=True)
class DroppedEpisode:
    """An episode thrown away because the environment misbehaved (see `run_episode`)."""

    task: str
    episode_id: str
    turn: int
    reason: str

    def __str__(self) -> str:
        return f"task {self.task!r} episode {self.episode_id!r} dropped at turn {self.turn}: {self.reason}"


class _BadEnvironment(Exception):
    """Internal: the environment broke its contract; the message is the reason."""


def _check_observation(obs: Any, where: str) -> str:
    if not isinstance(obs, str):
        raise _BadEnvironment(f"{where} returned a non-string observation ({type(obs).__name__} {obs!r:.60})")
    return obs


def _check_step(result: Any) -> tuple[str, float, bool, dict[str, Any]]:
    """Validate one step() result; raise _BadEnvironment naming the problem."""
    if not isinstance(result, tuple) or len(result) != 4:
        raise _BadEnvironment(f"step() must return (observation, reward, done, info), got {result!r:.80}")
    obs, reward, done, info = result
    _check_observation(obs, "step()")
    if isinstance(reward, bool) or not isinstance(reward, numbers.Real):
        raise _BadEnvironment(f"step() returned a non-numeric reward ({type(reward).__name__} {reward!r:.60})")
    reward = float(reward)
    if not math.isfinite(reward):
        raise _BadEnvironment(f"step() returned a non-finite reward ({reward})")
    if done not in (True, False):
        raise _BadEnvironment(f"step() returned done={done!r:.60}, expected a bool")
    info = {} if info is None else info
    if not isinstance(info, dict):
        raise _BadEnvironment(f"step() returned info of type {type(info).__name__}, expected a dict")
    try:
        json.dumps(info, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise _BadEnvironment(f"step() returned info that is not JSON-safe ({e})") from None
    return obs, reward, bool(done), dict(info)


def run_episode(
    env: TextEnvironment, policy: Policy, episode_id: str, max_turns: int, seed: int | None = None, worker_id: str = ""
) -> Episode | DroppedEpisode:
    """Play one episode of at most `max_turns` actions; the env is reset with `seed`, the
    policy with `policy_seed(seed)`.

    Returns the Episode (the last turn has done=False only when `max_turns` cut it short), or
    a DroppedEpisode when the environment raised or returned a non-string observation, a
    non-finite or non-numeric reward, or a malformed step result. Policy errors propagate:
    they are bugs in the caller's code, not bad environment data.
    """
    if max_turns < 1:
        raise ValueError(f"max_turns must be >= 1, got {max_turns}")
    task, turns = task_name(env), []
    try:
        obs = _check_observation(env.reset(seed=seed), "reset()")
    except Exception as e:  # a user environment may raise anything; report it, keep the run
        return DroppedEpisode(task, episode_id, 0, _reason(e, "reset()"))
    policy.reset(policy_seed(seed))
    for t in range(max_turns):
        action = policy.act(obs)
        if not isinstance(action, str):
            raise TypeError(
                f"policy {getattr(policy, 'name', policy)!r} returned {type(action).__name__} {action!r:.60}, expected action text"
            )
        try:
            next_obs, reward, done, info = _check_step(env.step(action))
        except Exception as e:  # same: the environment is the user's, the run is ours
            return DroppedEpisode(task, episode_id, t, _reason(e, "step()"))
        turns.append(Turn(obs, action, reward, done, info))
        obs = next_obs
        if done:
            break
    return Episode(episode_id, task, turns, policy_version=-1, worker_id=worker_id, final_observation=obs)


def policy_seed(seed: int | None) -> int | None:
    """The policy's seed for an episode whose environment is reset with `seed`: derived from
    it, yet a different random stream (a policy must not share the env's draws)."""
    return None if seed is None else random.Random(f"policy/{seed}").getrandbits(63)


def _reason(e: Exception, where: str) -> str:
    return str(e) if isinstance(e, _BadEnvironment) else f"{where} raised {type(e).__name__}: {e}"


# ---- the collector -------------------------------------------------------------------------


def episode_seed(seed: int, index: int) -> int:
    """The reset seed of episode `index` of a collection run seeded `seed`."""
    return seed * 1_000_003 + index


def iter_collect(
    env: TextEnvironment, policies: Sequence[tuple[str, Policy]], num_episodes: int, seed: int, max_turns: int
) -> Iterator[tuple[str, Episode | DroppedEpisode]]:
    """Yield (policy name, Episode or DroppedEpisode) for `num_episodes` episodes; episode i
    is played by policy i mod len(policies) with reset seed `episode_seed(seed, i)`."""
    if not policies:
        raise ValueError("collect needs at least one policy")
    task = task_name(env)
    for i in range(num_episodes):
        name, policy = policies[i % len(policies)]
        eid = f"{task}-{name}-s{seed}-{i:06d}"
        yield name, run_episode(env, policy, eid, max_turns, episode_seed(seed, i), worker_id=f"scripted:{name}")


@dataclass
class CollectResult:
    """What a collection run produced: episodes with the policy that played each, and the
    dropped episodes."""

    episodes: list[tuple[str, Episode]] = field(default_factory=list)
    dropped: list[DroppedEpisode] = field(default_factory=list)

    def add(self, policy_name: str, result: Episode | DroppedEpisode) -> None:
        if isinstance(result, DroppedEpisode):
            self.dropped.append(result)
        else:
            self.episodes.append((policy_name, result))


def collect(
    env: TextEnvironment,
    policies: Sequence[tuple[str, Policy]],
    num_episodes: int,
    seed: int,
    max_turns: int,
    on_drop: Callable[[DroppedEpisode], None] | None = None,
) -> CollectResult:
    """Run `iter_collect` to the end; `on_drop` is told about each dropped episode."""
    out = CollectResult()
    for name, result in iter_collect(env, policies, num_episodes, seed, max_turns):
        out.add(name, result)
        if isinstance(result, DroppedEpisode) and on_drop is not None:
            on_drop(result)
    return out


def episode_success(episode: Episode) -> bool:
    """Whether the episode's last turn reports info['success'] (False when absent)."""
    return bool(episode.turns and episode.turns[-1].info.get("success", False))


__all__ = [
    "CollectResult",
    "DroppedEpisode",
    "Policy",
    "RandomPolicy",
    "collect",
    "env_corpus",
    "episode_seed",
    "episode_success",
    "iter_collect",
    "legal_actions_of",
    "parse_choice",
    "run_episode",
    "task_name",
]


def env_corpus(env: Any, num_episodes: int = 50, seed: int = 0, max_turns: int = 100) -> list[str]:
    """Texts a random policy meets in `env` (observations and legal actions): a tokenizer corpus."""
    rng, texts = random.Random(seed), set()
    for i in range(num_episodes):
        obs = env.reset(seed=seed * 1000 + i)
        for _ in range(max_turns):
            texts.add(obs)
            acts = legal_actions_of(env) or ["go"]
            texts.update(acts)
            obs, _, done, _ = env.step(rng.choice(acts))
            if done:
                texts.add(obs)
                break
    return sorted(texts)
