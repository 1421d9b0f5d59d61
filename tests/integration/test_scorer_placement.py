"""reward.placement: the scorers inside the rollout workers (a small machine) run the same
program - scored rollouts reach the buffer and learner, non-finite scores are rejected and
counted, the evaluation is scored - with no scorer actor at all."""

from __future__ import annotations

import pytest

ray = pytest.importorskip("ray")

from shoal.services.metrics import MetricsReader, resolve_redis  # noqa: E402
from tests.conftest import small_config  # noqa: E402

pytestmark = pytest.mark.integration


def test_scorers_inside_the_workers(ray_local, sft_models, tmp_path):
    from shoal.services.program import run_ray

    cfg = small_config(
        sft_models, tmp_path, "reward.placement=workers", "reward.rule_functions=[shoal.reward.faults:nan_sometimes]"
    )
    summary = run_ray(cfg, progress=False)
    assert summary["learner_steps"] == 3 and summary["samples"] >= 3 * cfg.ppo.batch_size
    assert summary["rejected_nonfinite"] > 0  # counted by the workers' scoring stages
    t = summary["startup_s"]
    assert "scorers_ready" not in t and t["workers_ready"] <= t["first_sync"], t  # no scorer actor started
    assert abs(summary["before"]["kl_ref"]) < 1e-3 and "proxy_reward" in summary["after"]  # the eval is scored
    url, embedded = resolve_redis(None, str(tmp_path / "runs"))
    try:
        latest = MetricsReader(url).latest(summary["run_id"])
        assert "reward/mean" in latest and "reward/rejected_nonfinite" in latest, sorted(latest)
    finally:
        if embedded is not None:
            embedded.close()


def test_auto_placement():
    from shoal.services.program import scorer_placement

    cfg = small_config({"policy": "p", "reward": "r"}, "/tmp")
    crowded = cfg.model_copy(update={"rollout": cfg.rollout.model_copy(update={"num_workers": 64})})
    assert scorer_placement(crowded, "local") == "workers"  # more actors than cores: one process fewer
    for started in (None, "joined"):  # a cluster, or a Ray someone else started
        assert scorer_placement(crowded, started) == "actors"
    explicit = crowded.model_copy(update={"reward": crowded.reward.model_copy(update={"placement": "actors"})})
    assert scorer_placement(explicit, "local") == "actors"
