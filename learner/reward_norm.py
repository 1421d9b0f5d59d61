"""Reward normalisation for PPO-RLHF: the sequence reward scaled before the KL penalty is added.

A learned reward model's scores have an arbitrary offset and scale (a Bradley-Terry model is
identified only up to a constant, and its spread depends on how long it trained), and with a KL
penalty in nats per token that scale decides how much reward a nat of divergence buys. Three
choices (`ppo.reward_normalization`):

- `none`: the scorers' sum as is.
- `batch`: (r - mean) / std over the batch's sequence rewards (TRL's PPO `whiten_rewards` does
  this per token, KL included; here only the scores are whitened and the KL keeps its nats).
- `running`: (r - mean) / std of every sequence reward the learner has seen, this batch's
  included (running moments, Chan et al.'s parallel update; OpenRLHF's `normalize_reward`
  uses fixed moments from the reward model's training data, Engstrom et al. 2020 a running
  std of returns). The moments are part of the learner's checkpoint.

Pure torch; no Ray. Tests: `pytest tests/unit/test_reward_norm.py` (against a slow loop).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from shoal.learner.losses import WHITEN_EPS, masked_whiten


class RunningMoments:
    """Count, mean and sum of squared deviations (M2) of every value seen, merged batch by batch."""

    def __init__(self) -> None:
        self.count, self.mean, self.m2 = 0, 0.0, 0.0

    def update(self, x: torch.Tensor) -> None:
        """Merge a batch's moments into the running ones (Chan, Golub & LeVeque 1979)."""
        x = x.detach().double().flatten()
        n = int(x.numel())
        if n == 0:
            return
        batch_mean = float(x.mean())
        batch_m2 = float(((x - batch_mean) ** 2).sum())
        total = self.count + n
        delta = batch_mean - self.mean
        self.mean += delta * n / total
        self.m2 += batch_m2 + delta * delta * self.count * n / total
        self.count = total

    @property
    def std(self) -> float:
        """Population standard deviation of everything seen (0 before any value)."""
        return math.sqrt(self.m2 / self.count) if self.count else 0.0

    def state_dict(self) -> dict[str, Any]:
        return {"count": self.count, "mean": self.mean, "m2": self.m2}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.count, self.mean, self.m2 = int(state["count"]), float(state["mean"]), float(state["m2"])


def standardize(x: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """(x - mean) / sqrt(std^2 + eps), in x's dtype (`masked_whiten` with given moments)."""
    return (x - mean) / math.sqrt(std * std + WHITEN_EPS)


class RewardNormalizer:
    """Applies `ppo.reward_normalization` to each batch's sequence rewards [B]."""

    def __init__(self, mode: str) -> None:
        if mode not in ("none", "batch", "running"):
            raise ValueError(f"reward_normalization must be none, batch or running, got {mode!r}")
        self.mode = mode
        self.moments = RunningMoments()

    def __call__(self, rewards: torch.Tensor) -> torch.Tensor:
        if self.mode == "none":
            return rewards
        if self.mode == "batch":
            return masked_whiten(rewards, torch.ones_like(rewards))
        self.moments.update(rewards)
        return standardize(rewards, self.moments.mean, self.moments.std)

    def metrics(self) -> dict[str, float]:
        """The running moments (mode `running` only): learner/reward_norm_mean, _std."""
        if self.mode != "running":
            return {}
        return {"learner/reward_norm_mean": self.moments.mean, "learner/reward_norm_std": self.moments.std}
