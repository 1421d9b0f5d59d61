"""The critic-free algorithms (GRPO, RLOO, REINFORCE++) through the generic runners, unchanged:
the in-process loop for each, and the Ray program for GRPO; each run finishes and reports
learner metrics (to the run's metrics store, as every algorithm does)."""

from __future__ import annotations

import pytest

from shoal.services.metrics import MetricsReader, resolve_redis
from tests.conftest import small_config

pytestmark = pytest.mark.integration

LEARNER_METRICS = ["learner/policy_loss", "learner/clip_fraction", "learner/kl_ref", "learner/groups", "buffer/groups"]


def _config(models, tmp_path, algo: str, *extra: str):
    return small_config(
        models,
        tmp_path,
        f"run.algorithm={algo}",
        "run.total_steps=2",
        "run.eval_prompts=8",
        "rollout.prompts_per_request=4",
        f"{algo}.group_size=4",
        f"{algo}.batch_size=4",
        f"{algo}.minibatch_size=2",
        f"{algo}.epochs=1",
        *extra,
    )


def _latest(tmp_path, run_id: str) -> dict[str, float]:
    url, embedded = resolve_redis(None, str(tmp_path / "runs"))
    try:
        reader = MetricsReader(url)
        assert reader.run_info(run_id)["status"] == "finished"
        return reader.latest(run_id)
    finally:
        if embedded is not None:
            embedded.close()


def _check(summary, cfg, tmp_path) -> None:
    algo = cfg.run.algorithm
    a = getattr(cfg, algo)
    assert summary["learner_steps"] == 2
    assert summary["samples"] >= 2 * a.batch_size * a.group_size
    assert summary["after"]["gold_reward"] == summary["after"]["gold_reward"]  # evaluated (not NaN)
    latest = _latest(tmp_path, summary["run_id"])
    for name in LEARNER_METRICS:
        assert name in latest, name
    assert latest["learner/groups"]["v"] == a.batch_size and latest["learner/policy_version"]["v"] == 2


@pytest.mark.parametrize("algo", ["grpo", "rloo", "reinforce_pp"])
def test_local_run_finishes_and_reports(sft_models, tmp_path, algo):
    from shoal.services.local import run_local

    cfg = _config(sft_models, tmp_path, algo, "run.mode=local")
    _check(run_local(cfg, progress=False), cfg, tmp_path)


def test_grpo_through_the_ray_program(ray_local, sft_models, tmp_path):
    from shoal.services.program import run_ray

    cfg = _config(sft_models, tmp_path, "grpo", "grpo.loss_aggregation=dr_grpo")
    _check(run_ray(cfg, progress=False), cfg, tmp_path)
