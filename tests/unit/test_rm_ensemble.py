"""Reward-model ensembles (reward/ensemble.py): the reductions and the calibration against
vectorised torch, the manifest's checks, and `train-rm` with rm_ensemble=2 end to end into
RewardModelScorer."""

from __future__ import annotations

import json
import random

import pytest
import torch

from shoal.reward.ensemble import (
    MANIFEST,
    Member,
    calibrate,
    calibration,
    read_members,
    reduce_scores,
    reward_model_problem,
)
from shoal.reward.preferences import generate_preference_pairs, write_jsonl
from shoal.reward.scorers import RewardModelScorer, load_reward_model, rm_scores, rm_text
from shoal.reward.train_rm import train_reward_model
from shoal.services.config import ShoalConfig, load_config
from shoal.utils import ConfigError


def _scores(k: int, b: int, seed: int = 0) -> list[list[float]]:
    rng = random.Random(seed)
    return [[rng.gauss(3 * i, 1 + i) for _ in range(b)] for i in range(k)]


@pytest.mark.parametrize("how", ["mean", "wco", "uwo"])
def test_reductions_match_torch(how):
    scores = _scores(4, 9)
    t = torch.tensor(scores, dtype=torch.float64)  # [K, B]
    want = {"mean": t.mean(0), "wco": t.min(0).values, "uwo": t.mean(0) - 0.5 * t.var(0, unbiased=False)}[how]
    got = reduce_scores(scores, how, uwo_lambda=0.5)
    assert [r for r, _ in got] == pytest.approx(want.tolist(), abs=1e-12)
    assert [sd for _, sd in got] == pytest.approx(t.std(0, unbiased=False).tolist(), abs=1e-12)


def test_one_member_reduces_to_itself_and_bad_names_fail():
    row = _scores(1, 5)
    for how in ("mean", "wco", "uwo"):
        assert [r for r, _ in reduce_scores(row, how)] == pytest.approx(row[0])
    with pytest.raises(ValueError, match="rm_ensemble_reduce: 'max' is not one of mean, wco, uwo"):
        reduce_scores(row, "max")


def test_calibration_puts_members_on_a_common_offset_and_scale():
    held_out = _scores(3, 50, seed=1)
    members = [Member(None, k, *calibration(row)) for k, row in enumerate(held_out)]
    t = torch.tensor(held_out, dtype=torch.float64)
    assert [m.offset for m in members] == pytest.approx(t.mean(1).tolist())
    assert [m.scale for m in members] == pytest.approx(t.std(1, unbiased=False).tolist())
    c = torch.tensor(calibrate(held_out, members), dtype=torch.float64)
    assert c.mean(1).tolist() == pytest.approx([t.mean().item()] * 3)  # the members' mean offset
    assert c.std(1, unbiased=False).tolist() == pytest.approx([t.std(1, unbiased=False).mean().item()] * 3)
    # an affine map of a member's raw score: ranking within a member is unchanged
    assert torch.equal(c[2].argsort(), t[2].argsort())
    with pytest.raises(ValueError, match="scale is 0"):
        calibration([1.0, 1.0, 1.0])


def _manifest(tmp_path, members):
    (tmp_path / MANIFEST).write_text(json.dumps({"format": "shoal-reward-ensemble", "members": members}))
    return tmp_path


@pytest.mark.parametrize(
    ("members", "match"),
    [
        ([], r"members: expected a non-empty list"),
        ([{"path": "m0", "offset": 0, "scale": 0}], r"members\[0\]\.scale: must be > 0"),
        ([{"path": "m0", "offset": float("nan"), "scale": 1}], r"members\[0\]\.offset: expected a finite number"),
        ([{"path": "../elsewhere", "offset": 0, "scale": 1}], r"members\[0\]\.path: '../elsewhere' is not"),
        ([{"offset": 0, "scale": 1}], r"members\[0\]\.path: expected a directory name"),
    ],
)
def test_bad_manifests_name_the_field(tmp_path, members, match):
    root = _manifest(tmp_path, members)
    with pytest.raises(ValueError, match=match):
        read_members(root)
    assert "ensemble.json" in reward_model_problem(root)


def test_a_missing_member_is_a_problem_before_anything_loads(tmp_path):
    root = _manifest(tmp_path, [{"path": "member-0", "offset": 0.0, "scale": 1.0}])
    assert reward_model_problem(root).startswith("ensemble member member-0: ")


def test_train_rm_ensemble_trains_calibrates_and_scores(tiny_model_dir, tmp_path, tiny_task):
    pairs = [p for p in generate_preference_pairs(tiny_task, 60, seed=0) if p["chosen"] and p["rejected"]][:40]
    cfg = ShoalConfig.model_validate(
        {
            "model": {"path": str(tiny_model_dir)},
            "reward": {
                "reward_model_path": str(tmp_path / "rm"),
                "preference_file": str(write_jsonl(pairs, tmp_path / "prefs.jsonl")),
                "rm_epochs": 1,
                "rm_batch_size": 8,
                "rm_ensemble": 2,
                "rm_ensemble_reduce": "wco",
            },
        }
    )
    s = train_reward_model(cfg, progress=False)
    assert (s["members"], s["reduce"], s["pairs_heldout"]) == (2, "wco", 4)
    assert [m["seed"] for m in s["member_summaries"]] == [0, 1]
    assert {"heldout_accuracy", "gold_pearson"} <= set(s)
    root = tmp_path / "rm"
    assert reward_model_problem(root) is None and (root / "train_rm.json").is_file()
    members = read_members(root)
    assert [m.path.name for m in members] == ["member-0", "member-1"]
    models = [load_reward_model(m.path) for m in members]
    heads = [model.score.weight for model, _ in models]
    assert not torch.equal(heads[0], heads[1])  # seeds differ: different heads
    # the scorer: each member's raw score, calibrated by the manifest, reduced as configured
    texts = [rm_text(p["prompt"], p["chosen"]) for p in pairs[:6]] + [
        rm_text(p["prompt"], p["rejected"]) for p in pairs[:6]
    ]
    raw = [rm_scores(model, tok, texts) for model, tok in models]
    for how in ("mean", "wco", "uwo"):
        scorer = RewardModelScorer(root, ensemble_reduce=how, uwo_lambda=2.0, name="rm")
        rollouts = [_rollout(scorer.tokenizer, p, chosen) for chosen in (True, False) for p in pairs[:6]]
        terms = scorer.score(rollouts)
        want = reduce_scores(calibrate(raw, members), how, 2.0)
        assert [t.sequence["rm"] for t in terms] == pytest.approx([r for r, _ in want], abs=1e-5)
        assert [t.metrics_only["rm_ensemble_std"] for t in terms] == pytest.approx([sd for _, sd in want], abs=1e-5)


def _rollout(tok, pair, chosen: bool):
    from shoal.rollout.tasks import encode_prompt
    from shoal.types import Prompt, Rollout

    text = pair["chosen" if chosen else "rejected"]
    prompt = Prompt("p", pair["prompt"], encode_prompt(tok, pair["prompt"]), pair.get("meta") or {})
    ids = list(tok(" " + text, add_special_tokens=False)["input_ids"])
    return Rollout(prompt, ids, text, [-1.0] * len(ids), 0, "w0", "stop")


@pytest.mark.parametrize(
    "override, field",
    [
        ("reward.rm_ensemble=0", "reward.rm_ensemble"),
        ("reward.rm_ensemble_reduce=max", "reward.rm_ensemble_reduce"),
        ("reward.rm_ensemble_uwo_lambda=-1", "reward.rm_ensemble_uwo_lambda"),
    ],
)
def test_bad_ensemble_settings_name_the_field(override, field):
    with pytest.raises(ConfigError, match="^" + field.replace(".", r"\.")):
        load_config(None, [override])


def test_preflight_names_a_broken_ensemble(tmp_path, tiny_model_dir):
    from shoal.builders import make_builder

    root = _manifest(tmp_path, [{"path": "member-0", "offset": 0.0, "scale": 1.0}])
    cfg = load_config(None, [f"model.path={tiny_model_dir}", f"reward.reward_model_path={root}"])
    with pytest.raises(ConfigError, match="^reward.reward_model_path: ensemble member member-0: "):
        make_builder(cfg).preflight()
