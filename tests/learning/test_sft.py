"""SFT warm-up learns the demonstrations' format but not the topic (gold ~ 1/num_topics).

Margins (seed 0, 150 steps, batch 32, ~5 s on one core): before SFT no sampled answer is
well-formed; after, >= 90% are (measured 99%); mean gold within 0.05 of 1/6 (measured
0.15; one-sigma of the 256-answer mean is ~0.01); final loss within 0.2 nats of the
uniform-vocabulary floor 6 ln(36) / 7 = 3.07 (measured 3.09).
"""

from __future__ import annotations

import math

import pytest

from shoal.learner.sft.learning import answer_quality, init_model, sample_answers
from shoal.models import build_model_dir, load_policy
from shoal.services.config import ShoalConfig


@pytest.mark.learning
def test_sft_makes_answers_well_formed_but_not_on_topic(tmp_path, tiny_task):
    cfg = ShoalConfig.model_validate({"model": {"path": str(tmp_path / "policy")}, "sft": {"steps": 150}})
    before_model, tok = load_policy(build_model_dir(tiny_task, cfg.model, tmp_path / "random", seed=0))
    before = answer_quality(tiny_task, sample_answers(before_model, tok, tiny_task, 256, 1, cfg.rollout.max_new_tokens))
    assert before["well_formed"] == 0.0 and before["gold_mean"] < 0.05

    summary = init_model(cfg, progress=False)
    floor = tiny_task.response_words * math.log(len(tiny_task.vocabulary)) / (tiny_task.response_words + 1)
    assert summary["sft_loss_first"] > floor + 2.0
    assert summary["sft_loss_last"] < floor + 0.2
    assert summary["sft_well_formed"] >= 0.9
    assert summary["sft_gold_mean"] == pytest.approx(1 / tiny_task.num_topics, abs=0.05)

    model, tok = load_policy(cfg.model.path)  # the saved directory is the SFT policy
    after = answer_quality(tiny_task, sample_answers(model, tok, tiny_task, 256, 1, cfg.rollout.max_new_tokens))
    assert after["well_formed"] >= 0.9
