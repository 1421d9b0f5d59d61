"""DPO's one config model: the run config's `dpo` section, read by the learner as is.

Names follow the papers: beta (Rafailov et al. 2023; for IPO, Azar et al. 2023, beta plays tau's
role and the target margin is 1 / (2 beta)), label smoothing epsilon (conservative DPO, Mitchell
2023), alpha of RPO's NLL term (Pang et al. 2024). Batches count PAIRS.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from shoal.utils import ConfigSection


class DPOConfig(ConfigSection):
    """DPO-family hyper-parameters, offline and online (defaults: the tiny demo on CPU)."""

    loss: Literal["sigmoid", "ipo"] = Field(
        "sigmoid",
        description=(
            "`sigmoid`: DPO, -log sigmoid(beta h) with h the chosen-minus-rejected log-ratio to the reference "
            "(label_smoothing > 0: conservative DPO); `ipo`: IPO, (h - 1 / (2 beta))^2."
        ),
    )
    beta: float = Field(0.1, gt=0, description="beta: how strongly the policy is held to the reference (SFT) policy.")
    label_smoothing: float = Field(
        0.0,
        ge=0,
        lt=0.5,
        description="epsilon of conservative DPO: the probability that a label is flipped (sigmoid loss only).",
    )
    rpo_alpha: float = Field(
        0.0, ge=0, description="alpha of RPO's NLL term: alpha * the mean token NLL of the chosen answer (0: off)."
    )
    learning_rate: float = Field(5e-4, gt=0, description="Adam learning rate of the policy.")
    batch_size: int = Field(32, gt=0, description="Pairs per learner step (one gradient step each).")
    max_grad_norm: float = Field(1.0, gt=0, description="Global gradient-norm clip.")
    dataset: str | None = Field(
        None,
        description=(
            "Preference JSONL ({prompt, chosen, rejected}, the format `shoal train-rm` reads). null: `pairs` pairs "
            "generated from the task's gold reward with Bradley-Terry labels (as `shoal train-rm` does)."
        ),
    )
    pairs: int = Field(4000, ge=2, description="Pairs to generate when `dataset` is null (offline).")
    online: bool = Field(
        False,
        description=(
            "Online (iterative) DPO: rollout workers sample `num_samples` answers per prompt with the current "
            "policy, `judge` ranks them, the pairs of `pairing` are trained on as they come (staleness bounded by "
            "rollout.max_policy_lag). false: offline, from `dataset` or generated pairs."
        ),
    )
    num_samples: int = Field(4, ge=2, description="k: answers sampled per prompt (online).")
    pairing: Literal["best_worst", "all_pairs"] = Field(
        "best_worst",
        description="Pairs from a prompt's k answers (online): the judge's best vs its worst, or every pair it ranks.",
    )
    judge: Literal["reward", "gold"] = Field(
        "reward",
        description=(
            "What ranks the answers (online): `reward`: the run's reward (reward.reward_model_path and rule "
            "functions, as PPO is trained on); `gold`: the task's gold reward (an oracle, for ablations)."
        ),
    )
    ref_refresh_interval: int = Field(
        0,
        ge=0,
        description="Iterative DPO: the reference becomes the current policy every this many steps (0: stays SFT).",
    )

    @model_validator(mode="after")
    def _consistent(self) -> DPOConfig:
        if self.loss == "ipo" and self.label_smoothing > 0:
            raise ValueError("label_smoothing: conservative DPO smooths the sigmoid loss; IPO has none (set 0)")
        if self.online and self.dataset:
            raise ValueError("dataset: online DPO makes its own pairs; set dataset to null or online to false")
        return self
