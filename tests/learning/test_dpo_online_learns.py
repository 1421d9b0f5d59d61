"""Online DPO through the actor-learner data path, with the learned reward model as the judge,
raises held-out gold on every seed, at least as much as offline DPO given the same number of
labelled comparisons.

Online: the shipped deploy/configs/dpo_online.yaml (k = 8 answers per prompt from the current
policy, the reward model's best vs worst as one pair, beta 0.5, 200 steps of 64 pairs), in one
process (the same workers, scorers, PairQueue and learner the Ray program hosts as actors).
Its labels: the 10,000 gold-labelled pairs the session's demo reward model was trained on.
Offline: deploy/configs/dpo_demo.yaml on 10,000 gold-labelled pairs (the same count), 300
steps. Seeds 0, 1, 2 on the session's demo models (seed 0).
Baseline that fails: the SFT policy (gold ~0.17). Asserted: online gold rises by >= GAIN on
every seed without collapsing to one answer per topic; median online >= median offline - 0.05.
Measured: README, "Preference learning".
Run: .venv/bin/python -m pytest -m learning tests/learning/test_dpo_online_learns.py -s
"""

from __future__ import annotations

import statistics

import pytest

from tests.learning.conftest import DEMO, demo_config

pytestmark = pytest.mark.learning

SEEDS = (0, 1, 2)
GAIN = 0.15


def _run(models, tmp_path, config, seed: int, *extra: str) -> dict:
    from shoal.services.local import run_local

    cfg = demo_config(
        models, tmp_path, f"run.seed={seed}", "run.mode=local", "run.eval_prompts=256", *extra, config=config
    )
    s = run_local(cfg, progress=False)
    return {
        "gold": (round(s["before"]["gold_reward"], 3), round(s["after"]["gold_reward"], 3)),
        "kl": round(s["after"]["kl_ref"], 1),
        "answers_per_topic": round(s["after"]["distinct_per_topic"], 1),
        "judge_gold_agreement": s.get("judge_gold_agreement"),
    }


def test_online_dpo_with_the_reward_model_as_judge_matches_offline_dpo(demo_models, tmp_path):
    online = {s: _run(demo_models, tmp_path / f"on{s}", DEMO.with_name("dpo_online.yaml"), s) for s in SEEDS}
    offline = {
        s: _run(demo_models, tmp_path / f"off{s}", DEMO.with_name("dpo_demo.yaml"), s, "dpo.pairs=10000") for s in SEEDS
    }
    print(f"\nonline DPO (reward-model judge), seeds {SEEDS}: {online}\noffline DPO, 10,000 pairs: {offline}")
    for seed, r in online.items():
        before, after = r["gold"]
        assert before < 0.22 and after >= before + GAIN, (seed, r)
        assert r["answers_per_topic"] > 1.5, (seed, r)
    med = lambda rs: statistics.median(r["gold"][1] for r in rs.values())  # noqa: E731
    assert med(online) >= med(offline) - 0.05, (online, offline)
