"""SFT's one config model: the run config's `sft` section, read by `shoal init-model`'s
supervised warm-up (`learner/sft/learning.py`) as is. SFT is no actor-learner algorithm (it has
no workers or replay, so no builder): it makes the SFT policy that RLHF starts from and whose
distribution the KL penalty and PPO-ptx keep the policy near (Ouyang et al. 2022)."""

from __future__ import annotations

from pydantic import Field

from shoal.utils import ConfigSection


class SFTConfig(ConfigSection):
    """The warm-up on the task's demonstrations (teacher forcing, loss on the response)."""

    steps: int = Field(
        150, ge=0, description="Supervised fine-tuning steps on the task's demonstrations (0: random init)."
    )
    learning_rate: float = Field(3e-3, gt=0, description="AdamW learning rate.")
    batch_size: int = Field(32, gt=0, description="Demonstrations per step.")
