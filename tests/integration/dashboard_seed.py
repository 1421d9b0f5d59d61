"""Test data for the dashboard tests: a run written to a real Redis the way the actors write it.

Two rollout workers, one scorer, the buffer, the learner and the driver, each through its own
RedisMetrics sink, under the metric names the components log (see README "Metrics").
"""

from __future__ import annotations

from shoal.services.metrics import RedisMetrics, RunRegistry

CONFIG = {
    "run": {"name": "dash", "total_steps": 20, "redis_url": "redis://:hunter2@db:6379/0"},
    "rollout": {"num_workers": 2},
    "dashboard": {"host": "127.0.0.1", "token": "never-shown-token"},
}


def sinks(url: str, run_id: str) -> dict[str, RedisMetrics]:
    names = ["rollout-0", "rollout-1", "reward-0", "buffer", "learner", "driver"]
    return {n: RedisMetrics(url, run_id, n) for n in names}


def log_step(s: dict[str, RedisMetrics], step: int) -> None:
    """One learner step's worth of metrics from every source."""
    for i in (0, 1):
        s[f"rollout-{i}"].log(
            {
                "rollout/tokens_per_s": 800.0 + 40 * step + 100 * i,
                "rollout/samples_per_s": 100.0 + 5 * step + 10 * i,
                "rollout/policy_version": step,
                "weights/load_s": 0.01,
            },
            step=step,
        )
    s["reward-0"].log(
        {
            "reward/mean": 0.2 + 0.05 * step,
            "reward/std": 0.1,
            "reward/reward_model_mean": 0.2 + 0.05 * step,
            "reward/reward_model_std": 0.1,
            "reward/reward_model_ensemble_std_mean": 0.05 + 0.01 * step,
            "reward/gold_mean": 0.1 + 0.03 * step,
            "reward/gold_std": 0.05,
            "reward/rejected_nonfinite": 0,
        },
        step=step,
    )
    s["buffer"].log(
        {
            "buffer/fill": 0.25 + 0.05 * (step % 3),
            "buffer/size": 16.0,
            "buffer/sampled": 16.0 * (step + 1),
            "buffer/added": 18.0 * (step + 1),
            "buffer/policy_lag/0": 10.0 + step,
            "buffer/policy_lag/1": 4.0 + step,
            "buffer/policy_lag_mean": 0.3,
            "buffer/policy_lag_max": 1.0,
        },
        step=step,
    )
    s["learner"].log(
        {
            "learner/policy_loss": 0.05 / (step + 1),
            "learner/value_loss": 0.5 / (step + 1),
            "learner/entropy": 2.5,
            "learner/kl_ref": 0.02 * step,
            "learner/approx_kl": 0.001,
            "learner/is_weight_mean": 1.0 + 0.01 * step,
            "learner/is_weight_max": 1.5,
            "learner/is_truncated_frac": 0.02,
            "learner/steps_per_s": 2.0,
            "learner/trained_tokens": 128.0,
            "learner/step_s": 0.25,
            "learner/policy_version": float(step + 1),
        },
        step=step + 1,
    )
    s["driver"].log({"rollout/total_samples_per_s": 150.0 + step, "weights/sync_s": 0.05}, step=step + 1)


def seed_run(url: str, run_id: str, steps: int = 6) -> dict[str, RedisMetrics]:
    """Register `run_id` (running) with `steps` steps of metrics and two healthy workers."""
    RunRegistry(url).start_run(run_id, "ppo", CONFIG)
    s = sinks(url, run_id)
    for step in range(steps):
        log_step(s, step)
    for i in (0, 1):
        s[f"rollout-{i}"].worker_status(
            f"rollout-{i}",
            node=f"node-{i}abcdef0123456789",
            engine="transformers",
            policy_version=steps,
            samples=100 * steps,
            tokens_per_s=900.0 + i,
            samples_per_s=120.0 + i,
            healthy=True,
        )
    s["learner"].event("checkpoint_saved", f"step {steps}")
    return s
