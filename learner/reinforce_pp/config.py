"""REINFORCE++'s one config model: the run config's `reinforce_pp` section, read by the learner as is.

Names follow Hu 2025 and PPO (`clip_coef`, `kl_coef`). Batches count GROUPS (prompts), not
rollouts; the advantage normalisation is over the whole batch, so `group_size` 1 is allowed.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from shoal.learner.policy_config import CriticFreeConfig


class ReinforcePPConfig(CriticFreeConfig):
    """REINFORCE++ hyper-parameters (defaults: the tiny demo on CPU)."""

    group_size: int = Field(
        4, ge=1, description="Samples per prompt (no group baseline: the advantages are normalised over the batch)."
    )
    epochs: int = Field(2, gt=0, description="Passes over each batch.")
    kl_mode: Literal["reward", "loss"] = Field(
        "reward",
        description="`reward`: -beta * k1 per token in the reward (REINFORCE++); `loss`: beta * the `kl_estimator` term in the loss.",
    )
    loss_aggregation: Literal["token_mean", "sequence_mean"] = Field(
        "token_mean",
        description="`token_mean`: over all tokens (REINFORCE++); `sequence_mean`: per sequence, then over sequences.",
    )
    kl_coef: float = Field(
        0.05,
        ge=0,
        description="beta of the KL to the reference (SFT) policy (`reward.kl_coef` is PPO's); 0: no reference.",
    )
