"""A deliberately broken environment, for testing the dropped-episode path end to end.

    make_env("shoal.rollout.envs.faults:FaultyEnv", fault="nan", inner="cue_recall", every=2)
    shoal collect shoal.rollout.envs.faults:FaultyEnv --env-arg fault=raise --policy random ...

Wraps a built-in environment; in every episode whose reset seed is divisible by `every` it
misbehaves at action `at_turn` (0 = in reset): "raise" raises RuntimeError, "nonstring"
returns the int 42 as the observation, "nan" returns a NaN reward, "badinfo" returns a
non-JSON info. Other episodes pass through unchanged.
"""

from __future__ import annotations

from typing import Any

from shoal.rollout.envs.registry import make_env

FAULTS = ("raise", "nonstring", "nan", "badinfo")


class FaultyEnv:
    """See the module docstring."""

    def __init__(
        self, fault: str = "raise", inner: str = "cue_recall", every: int = 2, at_turn: int = 1, **inner_kwargs: Any
    ) -> None:
        if fault not in FAULTS:
            raise ValueError(f"fault must be one of {', '.join(FAULTS)}, got {fault!r}")
        if at_turn == 0 and fault in ("nan", "badinfo"):
            raise ValueError(f"fault {fault!r} needs at_turn >= 1 (reset returns no reward or info)")
        self.env, self.fault, self.every, self.at_turn = make_env(inner, **inner_kwargs), fault, every, at_turn
        self.name, self.broken, self.turn = f"faulty_{inner}", False, 0

    def legal_actions(self) -> list[str] | None:
        return self.env.legal_actions()

    def reset(self, seed: int | None = None) -> Any:
        self.broken, self.turn = seed is not None and seed % self.every == 0, 0
        obs = self.env.reset(seed)
        if self.broken and self.at_turn == 0:
            return self._break(obs, 0.0, False, {})[0]
        return obs

    def step(self, action: str) -> Any:
        self.turn += 1
        out = self.env.step(action)
        return self._break(*out) if self.broken and self.turn == self.at_turn else out

    def _break(self, obs: str, reward: float, done: bool, info: dict[str, Any]) -> Any:
        if self.fault == "raise":
            raise RuntimeError(f"injected fault at turn {self.turn}")
        if self.fault == "nonstring":
            return 42, reward, done, info
        if self.fault == "nan":
            return obs, float("nan"), done, info
        return obs, reward, done, {**info, "bad": object()}
