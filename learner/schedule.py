"""Learning-rate schedules of the policy-gradient learners (PPO, GRPO, RLOO, REINFORCE++).

`lr_schedule: linear` decays the learning rate linearly from `learning_rate` at the first step
to `lr_min_ratio * learning_rate` at the run's last (`run.total_steps`), as TRL's and
OpenRLHF's trainers do by default (TRL linearly to 0, OpenRLHF cosine to 0.1x); `cosine`
follows half a cosine between the same two ends; `constant` keeps `learning_rate`.

The factor is a pure function of the step, set on the optimizer before each update, so a
resumed run continues the same schedule from its checkpoint's step with nothing more saved.
Checked against torch's `LinearLR` / `CosineAnnealingLR` stepped one step at a time
(`tests/unit/test_lr_schedule.py`).
"""

from __future__ import annotations

import math
from typing import Any

LR_SCHEDULES = ("constant", "linear", "cosine")


def lr_factor(step: int, total_steps: int, schedule: str, min_ratio: float) -> float:
    """The learning rate of update `step` (0-based) of `total_steps`, as a fraction of the peak:
    1 at step 0, `min_ratio` at step total_steps - 1 and after."""
    if schedule not in LR_SCHEDULES:
        raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {schedule!r}")
    if schedule == "constant" or total_steps <= 1:
        return 1.0
    progress = min(max(step, 0) / (total_steps - 1), 1.0)
    if schedule == "linear":
        return 1.0 - (1.0 - min_ratio) * progress
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def set_lr(optimizer: Any, lr: float) -> None:
    """Every parameter group of `optimizer` at `lr`."""
    for group in optimizer.param_groups:
        group["lr"] = lr
