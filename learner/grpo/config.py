"""GRPO's one config model: the run config's `grpo` section, read by the learner as is.

Names follow Shao et al. 2024 (G = `group_size`, epsilon = `clip_coef`, beta = `kl_coef`) and
Liu et al. 2025 (`loss_aggregation: dr_grpo`). Batches count GROUPS (prompts), not rollouts.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from shoal.learner.policy_config import CriticFreeConfig


class GRPOConfig(CriticFreeConfig):
    """GRPO hyper-parameters (defaults: the tiny demo on CPU)."""

    group_size: int = Field(4, ge=2, description="G: samples per prompt; the advantage is relative to the group.")
    epochs: int = Field(2, gt=0, description="mu: passes over each batch.")
    kl_mode: Literal["loss", "reward"] = Field(
        "loss",
        description=(
            "`loss`: beta * the `kl_estimator` term (k3: GRPO's) added to the loss; `reward`: -beta * k1 per token "
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
    scale_rewards: Literal["group", "batch", "none"] | None = Field(
        None,
        description=(
            "What divides r - mean(group): `group`: the group's std (GRPO); `batch`: one std over the batch's "
            "group-centred rewards (REINFORCE++-baseline; Liu et al. 2025's group mean, batch std); `none` "
            "(Dr.GRPO). Unset: `none` with `loss_aggregation: dr_grpo`, else `group`."
        ),
    )
    advantage_eps: float = Field(1e-4, gt=0, description="eps of A = (r - mean) / (std + eps).")

    @model_validator(mode="after")
    def _dr_grpo_scale(self) -> GRPOConfig:
        if self.loss_aggregation == "dr_grpo" and self.scale_rewards not in (None, "none"):
            raise ValueError(
                "scale_rewards: Dr.GRPO (loss_aggregation: dr_grpo) divides by no std; leave it unset or none"
            )
        return self

    @property
    def reward_scaling(self) -> Literal["group", "batch", "none"]:
        """scale_rewards with its default filled in."""
        if self.scale_rewards is not None:
            return self.scale_rewards
        return "none" if self.loss_aggregation == "dr_grpo" else "group"
