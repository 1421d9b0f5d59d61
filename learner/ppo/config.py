"""PPO's one config model: the run config's `ppo` section, read by the PPO learner as is.

Names follow Schulman et al. 2017 and the RLHF papers (`clip_coef`, `gae_lambda`, `vf_coef`);
the KL penalty's coefficient lives in the shared `reward` section (`reward.kl_coef`).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from shoal.utils import ConfigSection


class PPOConfig(ConfigSection):
    """PPO hyper-parameters (defaults: the tiny demo on CPU)."""

    learning_rate: float = Field(2e-3, gt=0, description="Adam learning rate for policy and value head.")
    batch_size: int = Field(64, gt=0, description="Rollouts per learner step (one PPO batch).")
    minibatch_size: int = Field(32, gt=0, description="Rollouts per gradient step inside a batch.")
    ppo_epochs: int = Field(4, gt=0, description="K: passes over each batch.")
    clip_coef: float = Field(0.2, gt=0, description="epsilon of the clipped surrogate objective.")
    vf_coef: float = Field(0.5, ge=0, description="Value-loss coefficient.")
    vf_clip: float | None = Field(
        0.2, description="Clip range of the value prediction around its old value (null: unclipped)."
    )
    ent_coef: float = Field(0.0, ge=0, description="Entropy bonus coefficient.")
    gamma: float = Field(1.0, ge=0, le=1, description="Discount over response tokens.")
    gae_lambda: float = Field(0.95, ge=0, le=1, description="lambda of GAE.")
    max_grad_norm: float = Field(1.0, gt=0, description="Global gradient-norm clip.")
    whiten_advantages: bool = Field(True, description="Normalise advantages per batch.")
    ratio_reference: Literal["behavior", "learner"] = Field(
        "behavior",
        description=(
            "log pi_old of the PPO ratio: `behavior` = the rollout engine's log-probs (clips relative to the policy that sampled, "
            "safe with stale samples); `learner` = recomputed with the learner's current weights."
        ),
    )

    @field_validator("minibatch_size")
    @classmethod
    def _fits(cls, v: int, info: Any) -> int:
        b = info.data.get("batch_size", 64)
        if v > b:
            raise ValueError(f"minibatch_size {v} exceeds batch_size {b}")
        return v
