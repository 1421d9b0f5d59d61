"""train_reward_model plumbing on a tiny preference file (one short epoch; learning is in
tests/learning/test_reward_model.py)."""

from __future__ import annotations

import json

import pytest

from shoal.reward.preferences import PreferenceFileError, generate_preference_pairs, write_jsonl
from shoal.reward.scorers import load_reward_model
from shoal.reward.train_rm import split_pairs, train_reward_model
from shoal.services.config import ShoalConfig


def test_split_pairs_is_seeded_and_disjoint():
    pairs = [{"i": i} for i in range(50)]
    train, held = split_pairs(pairs, seed=0)
    assert (len(train), len(held)) == (45, 5)
    assert sorted(p["i"] for p in train + held) == list(range(50))
    assert split_pairs(pairs, seed=0) == (train, held) and split_pairs(pairs, seed=1) != (train, held)
    with pytest.raises(ValueError, match="got 1"):
        split_pairs(pairs[:1], seed=0)


def _cfg(tiny_model_dir, tmp_path, prefs):
    return ShoalConfig.model_validate(
        {
            "model": {"path": str(tiny_model_dir)},
            "reward": {
                "reward_model_path": str(tmp_path / "rm"),
                "preference_file": str(prefs),
                "rm_epochs": 1,
                "rm_batch_size": 8,
            },
        }
    )


def test_train_from_preference_file_saves_a_scorable_model(tiny_model_dir, tmp_path, tiny_task):
    pairs = [p for p in generate_preference_pairs(tiny_task, 40, seed=0) if p["chosen"] and p["rejected"]][:30]
    for p in pairs[:10]:  # file pairs without gold fields: gold is recomputed from meta
        del p["gold_chosen"], p["gold_rejected"]
    s = train_reward_model(_cfg(tiny_model_dir, tmp_path, write_jsonl(pairs, tmp_path / "prefs.jsonl")), progress=False)
    assert (s["pairs_train"], s["pairs_heldout"]) == (27, 3)
    assert {"heldout_accuracy", "heldout_gold_accuracy", "gold_pearson", "loss_first", "train_seconds"} <= set(s)
    model, _ = load_reward_model(tmp_path / "rm")
    assert model.config.num_labels == 1
    assert json.loads((tmp_path / "rm" / "train_rm.json").read_text())["pairs_train"] == 27


def test_bad_preference_file_fails_before_training(tiny_model_dir, tmp_path):
    prefs = tmp_path / "prefs.jsonl"
    prefs.write_text('{"prompt": "a", "chosen": "b", "rejected": "c"}\n{"prompt": "a", "chosen": "b"}\n')
    with pytest.raises(PreferenceFileError, match=r"prefs.jsonl:2: missing field 'rejected'"):
        train_reward_model(_cfg(tiny_model_dir, tmp_path, prefs), progress=False)
    assert not (tmp_path / "rm").exists()
