"""Offline DPO through the generic runners, unchanged: the in-process loop and the Ray program
(workers only evaluate; nothing collects). Each run finishes, trains on every pair once per
pass, evaluates gold and KL, and reports the preference metrics to the run's store."""

from __future__ import annotations

import pytest

from tests.conftest import small_config
from tests.integration.test_critic_free_runs import _latest

pytestmark = pytest.mark.integration

DPO_METRICS = ["learner/dpo_loss", "learner/rewards_chosen", "learner/reward_margin", "learner/preference_accuracy",
               "learner/kl_ref", "buffer/epochs"]  # fmt: skip


def _config(models, tmp_path, *extra: str):
    return small_config(
        models, tmp_path, "run.algorithm=dpo", "run.total_steps=3", "run.eval_prompts=8",
        "dpo.pairs=20", "dpo.batch_size=8", "dpo.learning_rate=3e-3", *extra,
    )  # fmt: skip


def _check(summary, tmp_path) -> None:
    assert summary["learner_steps"] == 3 and summary["pairs_sampled"] == 24 and summary["epochs"] == 2
    assert summary["pairs_collected"] == 0  # offline: the workers only evaluate
    assert summary["before"]["kl_ref"] < 1e-3 < summary["after"]["kl_ref"]  # the policy left the reference
    assert summary["after"]["gold_reward"] == summary["after"]["gold_reward"]
    latest = _latest(tmp_path, summary["run_id"])
    for name in DPO_METRICS:
        assert name in latest, name
    assert latest["learner/policy_version"]["v"] == 3


def test_offline_dpo_in_one_process(sft_models, tmp_path):
    from shoal.services.local import run_local

    _check(run_local(_config(sft_models, tmp_path, "run.mode=local"), progress=False), tmp_path)


def test_offline_dpo_through_the_ray_program(ray_local, sft_models, tmp_path):
    from shoal.services.program import run_ray

    _check(run_ray(_config(sft_models, tmp_path), progress=False), tmp_path)


def _online(models, tmp_path, *extra: str):
    return _config(
        models, tmp_path, "dpo.online=true", "dpo.num_samples=4", "dpo.batch_size=4", "rollout.prompts_per_request=4",
        "rollout.max_policy_lag=1", "buffer.capacity=16", *extra,
    )  # fmt: skip


def _check_online(summary, tmp_path) -> None:
    assert summary["learner_steps"] == 3 and summary["pairs_sampled"] == 12
    assert summary["samples"] >= 4 * 4 * 3 and summary["pairs_added"] >= 12  # k = 4 answers per pair
    assert summary["pairs_added"] + summary["tied_groups"] == summary["samples"] / 4  # every group: a pair or a tie
    assert 0 <= summary["judge_gold_agreement"] <= 1 and summary["after"]["kl_ref"] > 1e-3
    latest = _latest(tmp_path, summary["run_id"])
    for name in [*DPO_METRICS[:-1], "buffer/tied_groups", "buffer/judge_gap", "buffer/policy_lag_mean"]:
        assert name in latest, name


def test_online_dpo_in_one_process(sft_models, tmp_path):
    from shoal.services.local import run_local

    _check_online(run_local(_online(sft_models, tmp_path, "run.mode=local"), progress=False), tmp_path)


def test_online_dpo_through_the_ray_program_with_the_oracle_judge(ray_local, sft_models, tmp_path):
    from shoal.services.program import run_ray

    summary = run_ray(_online(sft_models, tmp_path, "dpo.judge=gold", "dpo.ref_refresh_interval=2"), progress=False)
    _check_online(summary, tmp_path)
    assert summary["judge_gold_agreement"] == 1.0  # the oracle judge agrees with gold on every pair
