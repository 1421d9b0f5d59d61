"""GRPO's one config model: the run config's `grpo` section, read by the learner as is.

Names follow Shao et al. 2024 (G = `group_size`, epsilon = `clip_coef`, beta = `kl_coef`) and
Liu et al. 2025 (`loss_aggregation: dr_grpo`). Batches count GROUPS (prompts), not rollouts.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from shoal.learner.policy_config import CriticFreeConfig


class GRPOConfig(CriticFreeConfig):
    """GRPO hyper-parameters (defaults: the tiny demo on CPU)."""

    group_size: int = Field(4, ge=2, description="G: samples per prompt; the advantage is relative to the group.")
    epochs: int = Field(2, gt=0, description="mu: passes over each batch.")
    kl_mode: Literal["loss", "reward"] = Field(
        "loss",
        description=(
            "`loss`: beta * k3 estimator of KL(pi || pi_ref) added to the loss (GRPO); `reward`: -beta * k1 per token "
            "in the reward (its return-to-go added to each token's advantage)."
        ),
    )
    loss_aggregation: Literal["sequence_mean", "token_mean", "dr_grpo"] = Field(
        "sequence_mean",
        description=(
            "`sequence_mean`: mean over each sequence's tokens, then over sequences (GRPO); `token_mean`: over all "
            "tokens; `dr_grpo`: Dr.GRPO, token losses summed / rollout.max_new_tokens and advantages NOT divided by "
            "the group std."
        ),
    )
    advantage_eps: float = Field(1e-4, gt=0, description="eps of A = (r - mean) / (std + eps).")
