"""learner/schedule.py: the learning-rate schedules against torch's own schedulers, stepped one
update at a time, and the learners setting them before each update."""

from __future__ import annotations

import pytest
import torch

from shoal.learner.schedule import lr_factor, set_lr


def torch_lrs(scheduler: str, total: int, min_ratio: float, lr: float = 1e-3) -> list[float]:
    """The learning rate of each of `total` updates under torch's scheduler, stepped as a
    training loop steps it: read, update, scheduler.step()."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    if scheduler == "linear":
        sched = torch.optim.lr_scheduler.LinearLR(opt, 1.0, min_ratio, total_iters=total - 1)
    else:
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total - 1, eta_min=lr * min_ratio)
    out = []
    for _ in range(total):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
@pytest.mark.parametrize("total,min_ratio", [(100, 0.1), (7, 0.0), (2, 0.5)])
def test_each_step_matches_torchs_scheduler(schedule: str, total: int, min_ratio: float) -> None:
    ours = [1e-3 * lr_factor(s, total, schedule, min_ratio) for s in range(total)]
    assert ours == pytest.approx(torch_lrs(schedule, total, min_ratio), rel=1e-6, abs=1e-12)


def test_the_ends_and_past_the_end() -> None:
    for schedule in ("linear", "cosine"):
        assert lr_factor(0, 100, schedule, 0.1) == 1.0
        assert lr_factor(99, 100, schedule, 0.1) == pytest.approx(0.1)
        assert lr_factor(150, 100, schedule, 0.1) == pytest.approx(0.1)  # a resumed run past its planned end
    assert lr_factor(50, 100, "constant", 0.1) == 1.0
    assert lr_factor(0, 1, "linear", 0.1) == 1.0  # one step: the peak


def test_an_unknown_schedule_is_refused() -> None:
    with pytest.raises(ValueError, match="lr_schedule"):
        lr_factor(0, 10, "step", 0.1)


def test_set_lr_sets_every_group() -> None:
    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([{"params": [a]}, {"params": [b], "lr": 5.0}], lr=1.0)
    set_lr(opt, 0.25)
    assert [g["lr"] for g in opt.param_groups] == [0.25, 0.25]


@pytest.mark.parametrize("algorithm", ["ppo", "grpo", "rloo", "reinforce_pp"])
def test_the_builders_give_the_learner_the_runs_length(tiny_model_dir, algorithm):
    """The schedule runs over run.total_steps: every policy-gradient builder passes it on."""
    from shoal.builders import make_builder
    from shoal.services.config import load_config

    cfg = load_config(
        None,
        [
            f"run.algorithm={algorithm}",
            "run.total_steps=37",
            f"model.path={tiny_model_dir}",
            "reward.reward_model_path=null",
            f"{algorithm}.lr_schedule=linear",
        ],
    )
    learner = make_builder(cfg).make_learner({"policy": str(tiny_model_dir)})
    assert learner.total_steps == 37
    assert learner.scheduled_lr(getattr(cfg, algorithm)) == getattr(cfg, algorithm).learning_rate
