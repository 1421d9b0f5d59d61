"""train_reward_model plumbing on a tiny preference file (one short epoch; learning is in
tests/learning/test_reward_model.py)."""

from __future__ import annotations

import json
import math

import pytest
import torch

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


def test_ranked_lists_train_on_all_their_pairs_and_are_held_out_whole(tiny_model_dir, tmp_path, tiny_task):
    from shoal.reward.preferences import generate_ranked_lists

    lists = [rec for rec in generate_ranked_lists(tiny_task, 40, 4, seed=0) if all(rec["responses"])][:20]
    s = train_reward_model(_cfg(tiny_model_dir, tmp_path, write_jsonl(lists, tmp_path / "lists.jsonl")), progress=False)
    assert (s["pairs_train"], s["pairs_heldout"]) == (18, 2)  # records: whole lists
    assert (tmp_path / "rm" / "config.json").is_file()


def test_ranked_list_loss_is_instructgpts_mean_over_the_pairs(tiny_model_dir):
    """A batch of one list of 3 and two pairs: per record the mean over its pairs, then the mean
    over records; checked against the scores' slow loop."""
    from shoal.reward.scorers import rm_forward, rm_text
    from shoal.reward.train_rm import init_reward_model, pair_loss

    model, tok = init_reward_model(tiny_model_dir, seed=0)
    batch = [
        {"prompt": "write about ko :", "responses": ["kofa kobi", "mabi", "tuko tuma"], "ranking": [2, 0, 1]},
        {"prompt": "write about ma :", "chosen": "mafa", "rejected": "kofa"},
        {"prompt": "write about tu :", "chosen": "tuko", "rejected": "mabi mafa"},
    ]
    with torch.no_grad():
        got = pair_loss(model, tok, batch).item()
        score = lambda p, a: rm_forward(model, tok, [rm_text(p, a)])[0].item()  # noqa: E731
        lst = [score(batch[0]["prompt"], batch[0]["responses"][i]) for i in (2, 0, 1)]
        nll = lambda d: math.log(1 + math.exp(-d))  # noqa: E731
        list_loss = (nll(lst[0] - lst[1]) + nll(lst[0] - lst[2]) + nll(lst[1] - lst[2])) / 3
        pairs = [nll(score(b["prompt"], b["chosen"]) - score(b["prompt"], b["rejected"])) for b in batch[1:]]
    assert got == pytest.approx((list_loss + sum(pairs)) / 3, rel=1e-4)


def test_chance_level_models_are_degenerate():
    from shoal.reward.train_rm import check_not_degenerate
    from shoal.utils import RunError

    with pytest.raises(
        RunError, match="ranks 40 held-out records no better than chance .* not saved, rm left as it was"
    ):
        check_not_degenerate({"pairs_heldout": 40, "heldout_accuracy": 0.5, "heldout_gold_accuracy": 0.52}, "rm")
    check_not_degenerate(
        {"pairs_heldout": 40, "heldout_accuracy": 0.5, "heldout_gold_accuracy": 0.8}, "rm"
    )  # gold says it learned
    check_not_degenerate({"pairs_heldout": 40, "heldout_accuracy": 0.7}, "rm")
    check_not_degenerate({"pairs_heldout": 3, "heldout_accuracy": 0.33}, "rm")  # too few to tell


def test_a_failed_training_leaves_the_old_model_as_it_was(tiny_model_dir, tmp_path, tiny_task, monkeypatch):
    import shoal.reward.train_rm as train_rm
    from shoal.utils import RunError

    (tmp_path / "rm").mkdir()
    (tmp_path / "rm" / "config.json").write_text('{"old": true}')

    def degenerate(summary, path):
        raise RunError("degenerate")

    monkeypatch.setattr(train_rm, "check_not_degenerate", degenerate)
    pairs = [p for p in generate_preference_pairs(tiny_task, 40, seed=0) if p["chosen"] and p["rejected"]]
    with pytest.raises(RunError, match="degenerate"):
        train_reward_model(_cfg(tiny_model_dir, tmp_path, write_jsonl(pairs, tmp_path / "p.jsonl")), progress=False)
    assert (tmp_path / "rm" / "config.json").read_text() == '{"old": true}'
    monkeypatch.undo()
    train_reward_model(
        _cfg(tiny_model_dir, tmp_path, tmp_path / "p.jsonl"), progress=False
    )  # success replaces it whole
    assert "old" not in (tmp_path / "rm" / "config.json").read_text() and (tmp_path / "rm" / "train_rm.json").is_file()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_one_record_is_one_clear_error(tiny_model_dir, tmp_path):
    prefs = tmp_path / "one.jsonl"
    prefs.write_text('{"prompt": "a", "chosen": "b", "rejected": "c"}\n')
    with pytest.raises(PreferenceFileError, match=r"one.jsonl: 1 record: need at least 2"):
        train_reward_model(_cfg(tiny_model_dir, tmp_path, prefs), progress=False)
