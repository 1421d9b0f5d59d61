"""RLOO's one config model: the run config's `rloo` section, read by the learner as is.

Names follow Ahmadian et al. 2024 (k = `group_size` samples per prompt; beta = `kl_coef`).
Batches count GROUPS (prompts), not rollouts.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from shoal.learner.policy_config import CriticFreeConfig


class RLOOConfig(CriticFreeConfig):
    """RLOO hyper-parameters (defaults: the tiny demo on CPU)."""

    group_size: int = Field(
        4, ge=2, description="k: samples per prompt; each one's baseline is the mean of the other k-1."
    )
    epochs: int = Field(1, gt=0, description="Passes over each batch (1 with on-policy samples: plain REINFORCE-LOO).")
    kl_mode: Literal["reward", "loss"] = Field(
        "reward",
        description=(
            "`reward`: the sequence reward is r - beta * sum_t k1 before the leave-one-out baseline (RLOO); "
            "`loss`: beta * the `kl_estimator` term in the loss."
        ),
    )
    loss_aggregation: Literal["sequence_mean", "token_mean"] = Field(
        "sequence_mean",
        description="`sequence_mean`: per sequence, then over sequences; `token_mean`: over all tokens.",
    )
    kl_coef: float = Field(
        0.05,
        ge=0,
        description="beta of the KL to the reference (SFT) policy (`reward.kl_coef` is PPO's); 0: no reference.",
    )
