"""A reward model trained on gold-labelled preference pairs ranks answers like the gold reward.

Set-up (seed 0): SFT policy 40 steps; 4000 generated pairs (Bradley-Terry labels, scale 8),
10% held out; 5 epochs, AdamW lr 1e-3, batch 32 (~25 s on one core).
Measured (seeds 0 / 1 / 2): held-out accuracy vs the noiseless gold ordering 0.87 / 0.91 /
0.88 after training, 0.51 / 0.47 / 0.54 untrained; vs the noisy labels 0.82 / 0.86 / 0.80;
Pearson(RM, gold) on fresh responses 0.53 / 0.66 / 0.77 (untrained ~ -0.05); on-topic beats
off-topic for 100% of prompts.
Margins asserted: gold-ordering accuracy >= 0.78 trained and within 0.15 of 0.5 untrained;
Pearson >= 0.35; the saved model, loaded by RewardModelScorer, prefers fully on-topic
answers to off-topic ones for >= 90% of prompts.
"""

from __future__ import annotations

import random

import pytest

from shoal.learner.sft.learning import init_model
from shoal.reward.scorers import RewardModelScorer
from shoal.reward.train_rm import train_reward_model
from shoal.rollout.tasks import encode_prompt
from shoal.services.config import ShoalConfig
from shoal.types import Prompt, Rollout


def _config(tmp_path) -> ShoalConfig:
    return ShoalConfig.model_validate(
        {
            "run": {"seed": 0},
            "model": {"path": str(tmp_path / "policy")},
            "sft": {"steps": 40},
            "reward": {
                "reward_model_path": str(tmp_path / "reward"),
                "rm_pairs": 4000,
                "rm_epochs": 5,
                "rm_learning_rate": 1e-3,
                "rm_batch_size": 32,
            },
        }
    )


def _rollout(scorer: RewardModelScorer, i: int, topic: str, text: str) -> Rollout:
    prompt_text = f"write about {topic} :"
    prompt = Prompt(f"p{i}", prompt_text, encode_prompt(scorer.tokenizer, prompt_text), {"topic": topic})
    ids = scorer.tokenizer(" " + text, add_special_tokens=False)["input_ids"]
    return Rollout(prompt, ids, " " + text, [0.0] * len(ids), 0, "test")


def _on_vs_off(scorer: RewardModelScorer, task, n: int = 100) -> float:
    """Fraction of prompts whose fully on-topic answer outscores a fully off-topic one."""
    rng, wins = random.Random(5), 0
    for i in range(n):
        topic = rng.choice(task.topics)
        off_words = [w for w in task.vocabulary if not w.startswith(topic)]
        on = " ".join(rng.choice(task.topic_words(topic)) for _ in range(task.response_words))
        off = " ".join(rng.choice(off_words) for _ in range(task.response_words))
        s_on, s_off = (
            t.sequence["reward_model"]
            for t in scorer.score([_rollout(scorer, i, topic, on), _rollout(scorer, i, topic, off)])
        )
        wins += s_on > s_off
    return wins / n


@pytest.mark.learning
def test_reward_model_learns_gold_ordering(tmp_path, tiny_task):
    cfg = _config(tmp_path)
    init_model(cfg, progress=False)
    s = train_reward_model(cfg, progress=False)
    assert s["pairs_train"] == 3600 and s["pairs_heldout"] == 400
    assert s["heldout_gold_accuracy_init"] <= 0.65  # untrained: no better than chance
    assert s["heldout_gold_accuracy"] >= 0.78
    assert s["heldout_accuracy"] > s["heldout_accuracy_init"] + 0.15
    assert s["gold_pearson"] >= 0.35
    assert s["loss_last"] < s["loss_first"] - 0.15
    assert _on_vs_off(RewardModelScorer(cfg.reward.reward_model_path), tiny_task) >= 0.9
