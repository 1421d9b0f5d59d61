"""Config parts the policy-gradient algorithms share (PPO, GRPO, RLOO, REINFORCE++): the
off-policy correction of asynchronous training, and the base of the critic-free configs.
Each algorithm still has ONE config model (its folder's `config.py`), built on these."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from shoal.utils import ConfigSection


class TrustRegion(ConfigSection):
    """How far one batch may move the policy, beyond the clip: PPO's early stopping."""

    target_kl: float | None = Field(
        None,
        gt=0,
        description=(
            "Early stopping: the batch's remaining epochs are skipped once a minibatch's approximate "
            "KL(pi_old || pi_theta) per token exceeds 1.5 * target_kl (OpenAI baselines / Spinning Up PPO, "
            "CleanRL's --target-kl); the clip alone does not bound a step of Adam. null: off."
        ),
    )


class LearningRateSchedule(ConfigSection):
    """How the learning rate moves over the run (`learner/schedule.py`)."""

    lr_schedule: Literal["constant", "linear", "cosine"] = Field(
        "constant",
        description=(
            "`linear`: from learning_rate at the first step down to lr_min_ratio * learning_rate at the run's last "
            "(run.total_steps), as TRL's trainers do (to 0 there); `cosine`: half a cosine between the same ends (OpenRLHF's "
            "default); `constant`: learning_rate throughout. Set from the step before each update: a resumed run "
            "continues the schedule."
        ),
    )
    lr_min_ratio: float = Field(
        0.1, ge=0, le=1, description="The last step's learning rate as a fraction of learning_rate (linear, cosine)."
    )


class OffPolicyCorrection(TrustRegion):
    """How samples up to rollout.max_policy_lag versions old are trained on (learner/losses.py)."""

    correction: Literal["none", "behavior", "decoupled", "tis_sequence", "mask_sequence"] = Field(
        "decoupled",
        description=(
            "Off-policy correction for samples up to rollout.max_policy_lag versions old. `decoupled`: decoupled PPO "
            "(Hilton et al. 2021; AReaL) - the ratio against the learner's recomputed log-probs (the proximal policy), "
            "each token weighted by min(pi_prox / mu, is_cap) with mu the sampler's log-probs (= token-level truncated "
            "IS); `tis_sequence`: one weight per sequence, min(prod pi_prox / mu, is_cap); `mask_sequence`: sequences "
            "whose geometric-mean ratio leaves [1/is_cap, is_cap] are left out (TRL's default); `behavior`: the ratio "
            "against mu, no weight; `none`: the ratio against pi_prox, no weight (naive PPO on stale samples)."
        ),
    )
    is_cap: float = Field(2.0, gt=1, description="C: the truncation (or masking bound) of the importance weights.")


class CriticFreeConfig(OffPolicyCorrection, LearningRateSchedule):
    """What GRPO, RLOO and REINFORCE++ share; batches count GROUPS (prompts), not rollouts."""

    learning_rate: float = Field(1e-3, gt=0, description="Adam learning rate of the policy.")
    batch_size: int = Field(
        16, gt=0, description="Groups (prompts) per learner step: batch_size * group_size rollouts."
    )
    minibatch_size: int = Field(
        8,
        gt=0,
        description="Groups per gradient step inside a batch (`minibatch_unit: samples`: as many groups' rollouts).",
    )
    minibatch_unit: Literal["groups", "samples"] = Field(
        "groups",
        description=(
            "What a batch is cut into minibatches by: `groups` - whole groups, a group never split; `samples` - "
            "rollouts shuffled one by one, a group's samples spread over minibatches (TRL's GRPOTrainer)."
        ),
    )
    reshuffle_each_epoch: bool = Field(
        True,
        description=(
            "Cut the batch into new minibatches every epoch; false: cut once, the same minibatches passed over "
            "`epochs` times (TRL's GRPOTrainer: each generation batch is shuffled once)."
        ),
    )
    clip_coef: float = Field(0.2, gt=0, description="epsilon of the clipped surrogate.")
    kl_coef: float = Field(
        0.04,
        ge=0,
        description="beta of the KL to the reference (SFT) policy (`reward.kl_coef` is PPO's); 0: no reference.",
    )
    adaptive_kl: bool = Field(
        False,
        description="Adapt kl_coef toward kl_target (Ziegler et al. 2019's controller, as reward.adaptive_kl for PPO).",
    )
    kl_estimator: Literal["k3", "k2"] = Field(
        "k3",
        description=(
            "With kl_mode loss: the per-token KL term in the loss. `k3`: (r - 1) - log r, r = pi_ref / pi (GRPO as "
            "DeepSeekMath writes it); its gradient is that of the FORWARD KL(pi_ref || pi). `k2`: 0.5 (log pi - "
            "log pi_ref)^2, whose gradient is that of the reverse KL(pi || pi_ref) the reward penalises (Tang & Munos "
            "2025) - as is, on-policy, that of TRL's default term, k3 weighted by the importance ratio pi / pi_old."
        ),
    )
    kl_target: float = Field(4.0, gt=0, description="Adaptive KL: target KL(pi || pi_ref) per sequence, in nats.")
    kl_horizon: int = Field(2000, gt=0, description="Adaptive KL: horizon in samples of the proportional controller.")
    max_grad_norm: float = Field(1.0, gt=0, description="Global gradient-norm clip.")

    @field_validator("minibatch_size")
    @classmethod
    def _fits(cls, v: int, info: Any) -> int:
        b = info.data.get("batch_size", 16)
        if v > b:
            raise ValueError(f"minibatch_size {v} exceeds batch_size {b}")
        return v
