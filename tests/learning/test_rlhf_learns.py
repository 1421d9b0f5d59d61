"""RLHF learns on every seed, asynchronously, through the Ray program.

SFT policy -> Bradley-Terry reward model -> PPO against the *learned* reward, judged by the
task's closed-form gold reward, which the policy never sees. The shipped demo config as it is
(deploy/configs/demo.yaml: a rollout worker overlapped with the learner, samples up to
rollout.max_policy_lag = 2 versions old trained on with the decoupled-PPO correction, PPO's
early stopping, adaptive KL to the SFT policy, 100 steps, the reward the mean of an ensemble of
three reward models), for PPO seeds 0-4 on the session's demo models (seed 0); and the GRPO demo (deploy/configs/grpo_demo.yaml: the same
actors and correction, groups of 8, the k2 KL term at a fixed beta 0.1, 300 steps) for GRPO
seeds 0-4 on the same models.

Baseline that fails: the SFT policy writes uniformly random vocabulary words, so its gold
reward is ~1/num_topics (0.17). Asserted on EVERY seed: held-out gold (256 prompts) ends above
the SFT policy's and the policy does not collapse to one answer per topic; on the median of
the five seeds: the gain >= GAIN and final gold >= the median bound. Why the median of five:
asynchronous runs are not bit-reproducible and differ between CPUs, and PPO has a lower tail -
on one fresh clone (2026-12-04) seeds 0-2 gave 0.437 / 0.805 / 0.316 (gains +0.26 / +0.64 /
+0.16) where earlier machines gave 0.648 / 0.779 / 0.760, so a 3-seed median bound of 0.45 and
a per-seed gain of 0.15 failed there. Measured with benchmarks/rlhf_seeds.py on each seed's own
models, 2-core machine: PPO over seeds 0-9 final gold 0.423-0.917 (median 0.674, every gain
>= 0.25; with two rollout workers: 0.447-0.874 and 0.322-0.913 in two runs, smallest gains
0.27 and 0.18; three more runs with one worker on 2026-12-06: medians 0.524 / 0.623 / 0.647,
smallest gains +0.16 / +0.28 / +0.32, the first and last on a build with torch's fused Adam -
every seed above the SFT policy in all). Without the correction
(`ppo.correction=none`) 2 of 3 seeds failed. GRPO over seeds 0-9: 0.454-0.793 (median 0.634,
every gain >= 0.31; with the demo's one rollout worker, 2026-12-06: 0.440-0.848, median 0.725,
every gain >= 0.27; on a build with torch's fused Adam 0.408-0.872, median 0.584, gains >=
0.26); with GRPO's usual k3 KL term seeds ended at or below the SFT policy (README, "RLHF over
seeds").
With the ensemble of three reward models that the demos ship since (README, "Reward-model
ensembles"), PPO over seeds 0-9 in two runs: medians 0.796 / 0.798, every gain >= +0.54 / +0.42.
The bounds below were set with one reward model and are kept: they are what must hold on any
machine, not what this machine reached.
Margins: GAIN is under the smallest 3-seed median gain seen (+0.26); the median bound 0.35 is
about half-way between the SFT policy (0.17) and the lowest 3-seed median seen (0.437), and a
median over five seeds tolerates two seeds in the lower tail; the PPO run on the same machine
half an hour after that clone: 0.648 / 0.977 / 0.755 / 0.424 / 0.723 (median 0.723); with the
demo's one rollout worker (2026-12-06): 0.778 / 0.518 / 0.706 / 0.820 / 0.752 (median 0.752).
Run: .venv/bin/python -m pytest -m learning tests/learning/test_rlhf_learns.py -s
"""

from __future__ import annotations

import statistics

import pytest

from tests.learning.conftest import DEMO, GRPO_DEMO, demo_config

pytestmark = pytest.mark.learning

SEEDS = (0, 1, 2, 3, 4)
GAIN = 0.15


@pytest.mark.parametrize("config, median", [(DEMO, 0.35), (GRPO_DEMO, 0.35)], ids=["ppo", "grpo"])
def test_rl_through_ray_raises_gold_on_every_seed(demo_models, tmp_path, config, median):
    from shoal.services.program import run_ray

    assert demo_models["rm"]["heldout_gold_accuracy"] >= 0.85, demo_models["rm"]  # a useful proxy, not a perfect one
    results = {}
    for seed in SEEDS:
        cfg = demo_config(demo_models, tmp_path / f"s{seed}", f"run.seed={seed}", "run.eval_prompts=256", config=config)
        algo = getattr(cfg, cfg.run.algorithm)
        assert cfg.run.mode == "ray" and cfg.rollout.max_policy_lag >= 1 and algo.correction != "none"
        s = run_ray(cfg, progress=False)
        before, after = s["before"], s["after"]
        results[seed] = {
            "gold": (round(before["gold_reward"], 3), round(after["gold_reward"], 3)),
            "kl": round(after.get("kl_ref", float("nan")), 1),
            "answers_per_topic": round(after["distinct_per_topic"], 1),
            "dropped": s["dropped_stale"] / max(s["samples"], 1),
            "steps": (s["learner_steps"], cfg.run.total_steps),
        }
    print(f"\n{cfg.run.algorithm} through Ray, {config.name}, seeds {SEEDS}: {results}")
    for seed, r in results.items():
        (b, a) = r["gold"]
        assert b < 0.22, (seed, r)  # the SFT baseline fails the task
        assert a > b, (seed, r)  # no seed ends below the SFT policy
        assert r["answers_per_topic"] >= 2.0, (seed, r)  # no collapse to one answer per topic
        assert r["dropped"] <= 0.05 and r["steps"][0] == r["steps"][1], (seed, r)
    assert statistics.median(r["gold"][1] - r["gold"][0] for r in results.values()) >= GAIN, results
    assert statistics.median(r["gold"][1] for r in results.values()) >= median, results
