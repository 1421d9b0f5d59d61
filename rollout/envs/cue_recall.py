"""Cue-recall corridor: the smallest POMDP that needs memory.

POMDP. Hidden state: the cue c in {left, right} and the position p in 0..K+1.
  turn 0      observation "cue: <c>. a corridor lies ahead; say go."
  turns 1..K  distractor observations "corridor: you pass <thing>." (no cue in them)
  turn K+1    observation "junction: say left or right."
Actions (`legal_actions()`, the same every turn): go, left, right. In the corridor any of
them walks on (reward 0); at the junction "left"/"right" ends the episode with
`correct_reward` (+1) when it matches the cue, else `wrong_reward` (-1); "go" at the junction
and any other text are illegal: `illegal_penalty` (-0.1), a message, no move. After
`max_steps` actions (default 2 (K + 2)) the episode ends unsolved.

The junction observation is the same for both cues, so every memoryless policy is at chance
(expected return 0 with the defaults); remembering turn 0 for K + 1 turns gives +1. Set K
longer than a learner's replay window to test stored recurrent state (R2D2).
info: {"illegal": bool, "success": bool}.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from typing import Any

from shoal.rollout.envs.base import Policy, RandomPolicy, parse_choice

ACTIONS = ["go", "left", "right"]
CUES = ("left", "right")
THINGS = [
    "a lamp",
    "a door",
    "a painting",
    "a crack in the wall",
    "a puddle",
    "a wooden crate",
    "a cold draught",
    "a flickering light",
    "a pile of stones",
    "a spider web",
    "a broken chair",
    "a rusty key",
]


class CueRecallEnv:
    """See the module docstring."""

    def __init__(
        self,
        corridor_length: int = 10,
        correct_reward: float = 1.0,
        wrong_reward: float = -1.0,
        illegal_penalty: float = -0.1,
        max_steps: int | None = None,
        name: str = "cue_recall",
    ) -> None:
        if corridor_length < 0:
            raise ValueError(f"corridor_length must be >= 0, got {corridor_length}")
        self.corridor_length, self.name = corridor_length, name
        self.correct_reward, self.wrong_reward, self.illegal_penalty = correct_reward, wrong_reward, illegal_penalty
        self.max_steps = 2 * (corridor_length + 2) if max_steps is None else max_steps
        if self.max_steps < corridor_length + 2:
            raise ValueError(f"max_steps={self.max_steps} is shorter than the corridor ({corridor_length + 2} actions)")
        self.rng = random.Random(0)
        self.cue, self.position, self.steps, self.done = "left", 0, 0, True

    def legal_actions(self) -> list[str]:
        return list(ACTIONS)

    def reset(self, seed: int | None = None) -> str:
        self.rng = random.Random(seed)
        self.cue = self.rng.choice(CUES)
        self.position, self.steps, self.done = 0, 0, False
        return self._observation()

    def _observation(self) -> str:
        if self.position == 0:
            return f"cue: {self.cue}. a corridor lies ahead; say go."
        if self.position <= self.corridor_length:
            return f"corridor: you pass {self.rng.choice(THINGS)}."
        return "junction: say left or right."

    def step(self, action: str) -> tuple[str, float, bool, dict[str, Any]]:
        if self.done:
            raise RuntimeError("step() after the episode ended; call reset()")
        self.steps += 1
        choice = parse_choice(action, ACTIONS)
        at_junction = self.position == self.corridor_length + 1
        if choice is None or (at_junction and choice == "go"):
            return self._illegal(action, at_junction)
        if at_junction:
            self.done = True
            ok = choice == self.cue
            return (
                f"you turned {choice}: {'correct' if ok else 'wrong'}.",
                self.correct_reward if ok else self.wrong_reward,
                True,
                {"illegal": False, "success": ok},
            )
        self.position += 1
        return self._observation(), 0.0, self._out_of_steps(), {"illegal": False, "success": False}

    def _illegal(self, action: str, at_junction: bool) -> tuple[str, float, bool, dict[str, Any]]:
        hint = "left or right" if at_junction else "go, left or right"
        obs = f"invalid action {action!r:.40}: say {hint}. " + (
            "junction: say left or right." if at_junction else "you have not moved."
        )
        return obs, self.illegal_penalty, self._out_of_steps(), {"illegal": True, "success": False}

    def _out_of_steps(self) -> bool:
        self.done = self.steps >= self.max_steps
        return self.done


# ---- scripted policies ---------------------------------------------------------------------

_CUE_RE = re.compile(r"^cue: (left|right)\b")


class CueRecallPolicy:
    """Walks on with "go"; at the junction says the remembered cue. With `forget` > 0 it loses
    the cue with that probability per episode, and with `memoryless` it never stores it; then
    it guesses uniformly. forget=0: optimal (+1); forget=0.5: mediocre (+0.5);
    memoryless: chance (0)."""

    def __init__(self, name: str = "optimal", forget: float = 0.0, memoryless: bool = False) -> None:
        self.name, self.forget, self.memoryless = name, forget, memoryless
        self.rng, self.cue = random.Random(0), None

    def reset(self, seed: int | None = None) -> None:
        self.rng, self.cue = random.Random(seed), None

    def act(self, observation: str) -> str:
        m = _CUE_RE.match(observation)
        if m and not self.memoryless and self.rng.random() >= self.forget:
            self.cue = m.group(1)
        if observation.startswith("junction"):
            return self.cue or self.rng.choice(CUES)
        return "go"


POLICIES: dict[str, Callable[[CueRecallEnv], Policy]] = {
    "optimal": lambda env: CueRecallPolicy("optimal"),
    "mediocre": lambda env: CueRecallPolicy("mediocre", forget=0.5),
    "memoryless": lambda env: CueRecallPolicy("memoryless", memoryless=True),
    "random": lambda env: RandomPolicy(env.legal_actions()),
}
