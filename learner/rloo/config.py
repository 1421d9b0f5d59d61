"""RLOO's one config model: the run config's `rloo` section, read by the learner as is.

Names follow Ahmadian et al. 2024 (k = `group_size` samples per prompt; beta = `kl_coef`).
Batches count GROUPS (prompts), not rollouts.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from shoal.utils import ConfigSection


class RLOOConfig(ConfigSection):
    """RLOO hyper-parameters (defaults: the tiny demo on CPU)."""

    group_size: int = Field(
        4, ge=2, description="k: samples per prompt; each one's baseline is the mean of the other k-1."
    )
    learning_rate: float = Field(1e-3, gt=0, description="Adam learning rate of the policy.")
    batch_size: int = Field(
        16, gt=0, description="Groups (prompts) per learner step: batch_size * group_size rollouts."
    )
    minibatch_size: int = Field(
        8, gt=0, description="Groups per gradient step inside a batch (a group is never split)."
    )
    epochs: int = Field(1, gt=0, description="Passes over each batch (1 with on-policy samples: plain REINFORCE-LOO).")
    clip_coef: float = Field(
        0.2, gt=0, description="epsilon of the clipped surrogate (ratio against the sampler's log-probs)."
    )
    kl_coef: float = Field(
        0.05,
        ge=0,
        description="beta of the KL to the reference (SFT) policy (`reward.kl_coef` is PPO's); 0: no reference.",
    )
    kl_mode: Literal["reward", "loss"] = Field(
        "reward",
        description="`reward`: the sequence reward is r - beta * sum_t k1 before the leave-one-out baseline (RLOO); `loss`: beta * k3 in the loss.",
    )
    loss_aggregation: Literal["sequence_mean", "token_mean"] = Field(
        "sequence_mean",
        description="`sequence_mean`: per sequence, then over sequences; `token_mean`: over all tokens.",
    )
    adaptive_kl: bool = Field(
        False,
        description="Adapt kl_coef toward kl_target (Ziegler et al. 2019's controller, as reward.adaptive_kl for PPO).",
    )
    kl_target: float = Field(4.0, gt=0, description="Adaptive KL: target KL(pi || pi_ref) per sequence, in nats.")
    kl_horizon: int = Field(2000, gt=0, description="Adaptive KL: horizon in samples of the proportional controller.")
    correction: Literal["none", "behavior", "decoupled", "tis_sequence", "mask_sequence"] = Field(
        "decoupled",
        description=(
            "Off-policy correction for samples up to rollout.max_policy_lag versions old, as ppo.correction: "
            "`decoupled` clips against the learner's recomputed log-probs and weights tokens by min(pi_prox / mu, is_cap); "
            "`behavior` clips against the sampler's log-probs mu; `none` ignores staleness."
        ),
    )
    is_cap: float = Field(2.0, gt=1, description="C: the truncation (or masking bound) of the importance weights.")
    max_grad_norm: float = Field(1.0, gt=0, description="Global gradient-norm clip.")

    @field_validator("minibatch_size")
    @classmethod
    def _fits(cls, v: int, info: Any) -> int:
        b = info.data.get("batch_size", 16)
        if v > b:
            raise ValueError(f"minibatch_size {v} exceeds batch_size {b}")
        return v
