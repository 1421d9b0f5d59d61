"""Offline DPO raises held-out gold over the SFT policy, on every seed, because of its labels.

The shipped deploy/configs/dpo_demo.yaml as it is (4,000 gold-labelled Bradley-Terry pairs of
random answers, the generator `shoal train-rm` uses; 300 steps of 64 pairs, beta 0.1, lr 3e-3),
in one process, for seeds 0-4 (the seed draws the pairs and their order) on the session's
demo SFT policy (seed 0).

Baselines that fail: the SFT policy (gold ~1/num_topics = 0.17), and the same run on the same
answers with every label replaced by a coin flip (the labels carry no preference): its gold
must stay below the labelled runs' median by a margin, so the gain is the labels', not the steps'.

Assertions: every seed ends above the SFT policy (+0.05), the median gain is >= 0.15, no seed
collapses to one answer per topic. Not asserted: a large gain on EVERY seed. In one process a
seed's trajectory is deterministic on one machine but not across machines or optimizer kernels:
the same five seeds gave 0.727 / 0.417 / 0.562 / 0.458 / 0.370 with torch's for-loop Adam and
0.417 / 0.470 / 0.273 / 0.643 / 0.576 with the fused kernel (SFT 0.17-0.18; coin-flip control
0.117 / 0.13): the weakest seed moves between +0.10 and +0.2, the median stays at +0.28-0.29.
The old per-seed +0.10 bound on seeds 0-2 failed for that reason (seed 2: +0.095).
Measured through Ray, each seed's own models: README, "Preference learning".
Run: .venv/bin/python -m pytest -m learning tests/learning/test_dpo_learns.py -s
"""

from __future__ import annotations

import random
import statistics

import pytest

from tests.learning.conftest import DEMO, demo_config

pytestmark = pytest.mark.learning

DPO_DEMO = DEMO.with_name("dpo_demo.yaml")
SEEDS = (0, 1, 2, 3, 4)
ABOVE_SFT = 0.05  # every seed
MEDIAN_GAIN = 0.15  # about half the measured median gain (+0.28)


def _run(models, tmp_path, seed: int, *extra: str) -> dict:
    from shoal.services.local import run_local

    cfg = demo_config(
        models, tmp_path, f"run.seed={seed}", "run.mode=local", "run.eval_prompts=256",
        "reward.reward_model_path=null", *extra, config=DPO_DEMO,
    )  # fmt: skip
    s = run_local(cfg, progress=False)
    return {
        "gold": (round(s["before"]["gold_reward"], 3), round(s["after"]["gold_reward"], 3)),
        "kl": round(s["after"]["kl_ref"], 1),
        "answers_per_topic": round(s["after"]["distinct_per_topic"], 1),
        "accuracy": round(s["final_preference_accuracy"], 2),
    }


def _coin_flip_labels(path, seed: int) -> str:
    from shoal.reward.preferences import generate_preference_pairs, write_jsonl
    from shoal.rollout.tasks import KeywordsTask

    rng = random.Random(seed)
    pairs = [p for p in generate_preference_pairs(KeywordsTask(), 4000, seed=seed) if p["chosen"] and p["rejected"]]
    for p in pairs:
        if rng.random() < 0.5:
            p["chosen"], p["rejected"] = p["rejected"], p["chosen"]
    return str(write_jsonl(pairs, path))


def test_offline_dpo_raises_gold_on_every_seed_and_coin_flip_labels_do_not(demo_models, tmp_path):
    results = {seed: _run(demo_models, tmp_path / f"s{seed}", seed) for seed in SEEDS}
    control = _run(demo_models, tmp_path / "coin", 0, f"dpo.dataset={_coin_flip_labels(tmp_path / 'coin.jsonl', 0)}")
    print(f"\noffline DPO, seeds {SEEDS}: {results}\ncoin-flip labels, seed 0: {control}")
    for seed, r in results.items():
        before, after = r["gold"]
        assert before < 0.22, (seed, r)  # the SFT baseline fails the task
        assert after >= before + ABOVE_SFT, (seed, r)
        assert r["answers_per_topic"] > 1.5, (seed, r)  # not collapsed to one answer per topic
    median_gain = statistics.median(r["gold"][1] - r["gold"][0] for r in results.values())
    median_gold = statistics.median(r["gold"][1] for r in results.values())
    assert median_gain >= MEDIAN_GAIN, (median_gain, results)
    assert control["gold"][1] < median_gold - 0.15, (control, results)
