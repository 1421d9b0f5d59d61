"""The acting side of recurrent per-utterance Q-learning (R2D2 for language); no Ray.

`QActor.run_episode(env, episode_id, seed)` plays one episode with the current
`RecurrentQNetwork` and returns `(Episode, states)` ready for `buffer.sequences.cut_episode`:
states[t] (numpy float32 [2, H]) is the recurrent state ENTERING turn t, produced by the same
network that chose the actions. Per turn: encode o_t, score the candidates, act
epsilon-greedily, step the env, then feed (o_t, a_t, r_t) to the core.

Candidates, in this order of preference:
- `candidate_fn(observation, k, rng) -> list[str]` (CHAI: k utterances sampled from the policy
  LM; the max over actions is taken over them);
- the env's `legal_actions()` when it lists them (a small action set);
- the fixed `action_set` given to the actor.
Exploration is per worker: `epsilon` (Ape-X / R2D2 give worker i of N epsilon^(1 + 7 i/(N-1)),
see `apex_epsilon`) and, optionally, `temperature` > 0 for Boltzmann sampling of the greedy
choice. `load_weights(state_dict, version)` takes the learner's `get_weights()` tensors;
`policy_version` is stamped on every episode (and so on every replay item cut from it).
The env is driven directly (not through `rollout.envs.base.run_episode`) because the actor
must record the state entering every turn; a raising env propagates here.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from shoal.learner.r2d2.networks import RecurrentQNetwork, TurnEncoder, state_to_numpy
from shoal.rollout.envs.base import legal_actions_of, policy_seed, task_name
from shoal.types import Episode, Turn

CandidateFn = Callable[[str, int, random.Random], list[str]]


def apex_epsilon(worker_index: int, num_workers: int, base: float = 0.4, alpha: float = 7.0) -> float:
    """Ape-X / R2D2 per-worker epsilon: base^(1 + alpha * i / (N - 1)) (base for N = 1)."""
    if num_workers <= 1:
        return base
    return base ** (1.0 + alpha * worker_index / (num_workers - 1))


class QActor:
    """Epsilon-greedy recurrent Q policy over a small action set or k sampled candidates."""

    def __init__(
        self,
        network: RecurrentQNetwork,
        encoder: TurnEncoder,
        epsilon: float = 0.1,
        action_set: Sequence[str] | None = None,
        candidate_fn: CandidateFn | None = None,
        num_candidates: int = 5,
        temperature: float = 0.0,
        worker_id: str = "q_actor",
        policy_version: int = 0,
    ) -> None:
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError(f"epsilon must be in [0, 1], got {epsilon}")
        self.network, self.encoder = network.eval(), encoder
        self.epsilon, self.temperature = epsilon, temperature
        self.action_set = list(action_set) if action_set else None
        self.candidate_fn, self.num_candidates = candidate_fn, num_candidates
        self.worker_id, self.policy_version = worker_id, policy_version
        self.rng = random.Random(0)

    def load_weights(self, tensors: dict[str, torch.Tensor], version: int) -> None:
        self.network.load_state_dict(tensors)
        self.policy_version = version

    def candidates(self, env: Any, observation: str) -> list[str]:
        if self.candidate_fn is not None:
            cands = list(self.candidate_fn(observation, self.num_candidates, self.rng))
        else:
            cands = legal_actions_of(env) or self.action_set
        if not cands:
            raise ValueError("QActor needs candidates: a candidate_fn, an env with legal_actions(), or an action_set")
        return cands

    def choose(
        self, state: torch.Tensor, observation: str, cands: list[str], greedy: bool = False
    ) -> tuple[str, np.ndarray]:
        """(action, Q-values over cands) at `state` [1, 2, H]."""
        with torch.no_grad():
            q = self.network.q_values(
                state[0], self.encoder.encode([observation])[0], self.encoder.encode(cands)
            ).numpy()
        if not greedy and self.rng.random() < self.epsilon:
            return self.rng.choice(cands), q
        if not greedy and self.temperature > 0:
            p = np.exp((q - q.max()) / self.temperature)
            return cands[int(self.rng.choices(range(len(cands)), weights=p.tolist())[0])], q
        best = np.flatnonzero(q == q.max())
        return cands[int(best[0] if len(best) == 1 else self.rng.choice(list(best)))], q

    def run_episode(
        self, env: Any, episode_id: str, seed: int | None = None, max_turns: int = 100, greedy: bool = False
    ) -> tuple[Episode, np.ndarray]:
        """Play one episode; returns (Episode, states [T, 2, H] entering each turn)."""
        self.rng = random.Random(policy_seed(seed))
        obs = env.reset(seed=seed)
        state = self.network.initial_state(1)
        turns, states = [], []
        for _ in range(max_turns):
            states.append(state_to_numpy(state[0]))
            action, _ = self.choose(state, obs, self.candidates(env, obs), greedy=greedy)
            next_obs, reward, done, info = env.step(action)
            turns.append(Turn(obs, action, float(reward), bool(done), dict(info or {})))
            with torch.no_grad():
                e = self.encoder.encode([obs, action])
                state = self.network.core_step(state, e[0:1], e[1:2], torch.tensor([float(reward)]))
            obs = next_obs
            if done:
                break
        episode = Episode(
            episode_id,
            task_name(env),
            turns,
            policy_version=self.policy_version,
            worker_id=self.worker_id,
            final_observation=obs,
        )
        return episode, np.stack(states).astype(np.float32)


__all__ = ["QActor", "apex_epsilon"]
