"""PPO's one config model: the run config's `ppo` section, read by the PPO learner as is.

Names follow Schulman et al. 2017 and the RLHF papers (`clip_coef`, `gae_lambda`, `vf_coef`);
the KL penalty's coefficient lives in the shared `reward` section (`reward.kl_coef`).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from shoal.learner.policy_config import LearningRateSchedule, OffPolicyCorrection


class PPOConfig(OffPolicyCorrection, LearningRateSchedule):
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
    reward_normalization: Literal["none", "batch", "running"] = Field(
        "none",
        description=(
            "The sequence reward (the scorers' sum) before the KL penalty is added: `none`: as is; `batch`: (r - mean) "
            "/ std over the batch; `running`: (r - mean) / std of every reward seen so far (running moments, kept in "
            "checkpoints)."
        ),
    )
    objective: Literal["clip", "kl_penalty"] = Field(
        "clip",
        description=(
            "`clip`: the clipped surrogate; `kl_penalty`: PPO's KL-penalty form, -ratio * A + beta * KL(pi_old || "
            "pi_theta), beta adapted (halved / doubled) when the measured KL leaves [target/1.5, target*1.5]."
        ),
    )
    kl_penalty_coef: float = Field(
        1.0, gt=0, description="objective kl_penalty: the initial beta (Schulman et al. 2017: 1)."
    )
    kl_penalty_target: float = Field(
        0.01,
        gt=0,
        description="objective kl_penalty: the target KL(pi_old || pi_theta) per token of one update, in nats.",
    )
    ptx_coef: float = Field(
        0.0,
        ge=0,
        description=(
            "PPO-ptx (InstructGPT): gamma times the language-modelling loss on pretraining/demonstration text, added to "
            "every PPO minibatch update (0: off; InstructGPT 27.8 at its loss scales)."
        ),
    )
    ptx_data: str | None = Field(
        None,
        description=(
            'PPO-ptx text: a .jsonl file of {"text": ...} lines or a plain-text file (one document per line); '
            "null: the task's demonstrations (prompt + response, loss on the response)."
        ),
    )
    ptx_batch_size: int = Field(16, gt=0, description="PPO-ptx: texts per minibatch update.")

    @field_validator("minibatch_size")
    @classmethod
    def _fits(cls, v: int, info: Any) -> int:
        b = info.data.get("batch_size", 64)
        if v > b:
            raise ValueError(f"minibatch_size {v} exceeds batch_size {b}")
        return v
