"""Reward scorers and merge_terms on a tiny real model (random init; no mocks)."""

from __future__ import annotations

import math

import pytest
import torch

from shoal.reward.scorers import (
    GoldScorer,
    ReferenceKLScorer,
    RewardModelScorer,
    RuleScorer,
    build_scorers,
    reference_temperature,
    rm_text,
)
from shoal.reward.scoring import Rejection, merge_terms, score_rollouts
from shoal.reward.train_rm import init_reward_model, save_reward_model
from shoal.rollout.tasks import encode_prompt
from shoal.types import Prompt, RewardTerms, Rollout

HERE = "tests.unit.test_scorers"


# ---- rule functions used by RuleScorer (imported by spec) --------------------------------
def word_count(prompt: Prompt, response_text: str) -> float:
    return float(len(response_text.split()))


def always_nan(prompt: Prompt, response_text: str) -> float:
    return float("nan")


def returns_text(prompt: Prompt, response_text: str):
    return "high"


# ---- fixtures ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_model_dir))


@pytest.fixture(scope="module")
def reward_model_dir(tiny_model_dir, tmp_path_factory):
    model, tok = init_reward_model(tiny_model_dir, seed=0)
    return save_reward_model(model, tok, tmp_path_factory.mktemp("rm") / "reward", {})


def make_rollout(tok, i: int, topic: str, words: str, eos: bool = True) -> Rollout:
    text = f"write about {topic} :"
    prompt = Prompt(f"keywords-p{i}", text, encode_prompt(tok, text), {"topic": topic})
    ids = list(tok(" " + words, add_special_tokens=False)["input_ids"]) if words else []
    ids += [tok.eos_token_id] if eos else []
    return Rollout(
        prompt, ids, tok.decode(ids, skip_special_tokens=True), [-1.0] * len(ids), 0, "w0", "stop" if eos else "length"
    )


@pytest.fixture(scope="module")
def rollouts(tokenizer):
    specs = [
        ("ko", "kofa kobi mara", True),
        ("ma", "mafa", True),
        ("ti", "", True),
        ("ko", "tilo tilo tilo tilo tilo tilo", False),
        ("ru", "rufa rubi xyz!", True),
    ]
    return [make_rollout(tokenizer, i, *s) for i, s in enumerate(specs)]


# ---- rule and gold scorers ---------------------------------------------------------------
def test_rule_scorer(rollouts):
    scorer = RuleScorer(f"{HERE}:word_count")
    assert scorer.name == f"{HERE}:word_count"
    terms = scorer.score(rollouts)
    assert [t.sequence for t in terms] == [{scorer.name: float(len(r.response_text.split()))} for r in rollouts]
    assert all(t.ref_logprobs is None and t.metrics_only == {} for t in terms)


def test_rule_scorer_errors_name_the_spec(rollouts):
    with pytest.raises(TypeError, match=r"returns_text.*'high'.*keywords-p0"):
        RuleScorer(f"{HERE}:returns_text").score(rollouts)
    with pytest.raises(ValueError, match="no attribute 'missing'"):
        RuleScorer(f"{HERE}:missing")


def test_gold_scorer(rollouts, tiny_task):
    terms = GoldScorer(tiny_task).score(rollouts)
    assert [t.metrics_only["gold"] for t in terms] == [
        tiny_task.gold_reward(r.prompt.meta, r.response_text) for r in rollouts
    ]
    assert terms[0].metrics_only["gold"] == pytest.approx(2 / 6)
    assert all(t.sequence == {} for t in terms)


# ---- reference log-probs -----------------------------------------------------------------
def _manual_ref_logprobs(model, rollout: Rollout, temperature: float) -> list[float]:
    """One sequence, no padding; log-softmax by hand with math for every response token."""
    ids = rollout.prompt.token_ids + rollout.response_ids
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0].double().tolist()
    out = []
    for t, token in enumerate(rollout.response_ids):
        row = [x / temperature for x in logits[len(rollout.prompt.token_ids) - 1 + t]]
        top = max(row)
        out.append(row[token] - top - math.log(sum(math.exp(x - top) for x in row)))
    return out


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_reference_logprobs_match_manual_teacher_forcing(tiny_model_dir, rollouts, temperature):
    scorer = ReferenceKLScorer(tiny_model_dir, temperature=temperature, batch_size=2)
    terms = scorer.score(rollouts)
    for r, t in zip(rollouts, terms):
        assert len(t.ref_logprobs) == len(r.response_ids)
        assert t.ref_logprobs == pytest.approx(_manual_ref_logprobs(scorer.model, r, temperature), abs=1e-4)
        assert t.sequence == {} and t.metrics_only == {}


def test_reference_temperature_follows_greedy_convention():
    assert reference_temperature(0.7) == 0.7
    assert reference_temperature(1e-6) == 1.0


# ---- reward model scorer -----------------------------------------------------------------
def test_reward_model_batch_equals_one_by_one(reward_model_dir, rollouts):
    batched = RewardModelScorer(reward_model_dir, batch_size=64).score(rollouts)
    single = RewardModelScorer(reward_model_dir, batch_size=1).score(rollouts)
    b, s = [t.sequence["reward_model"] for t in batched], [t.sequence["reward_model"] for t in single]
    assert b == pytest.approx(s, abs=1e-5)
    assert len(set(round(x, 6) for x in b)) == len(b)  # the texts really score differently


def test_reward_model_scores_last_token(reward_model_dir, rollouts):
    """Score = head(trunk hidden state at the last real token of BOS + rm_text)."""
    scorer = RewardModelScorer(reward_model_dir, name="rm")
    got = [t.sequence["rm"] for t in scorer.score(rollouts)]
    for r, g in zip(rollouts, got):
        ids = [scorer.tokenizer.bos_token_id] + scorer.tokenizer(
            rm_text(r.prompt.text, r.response_text), add_special_tokens=False
        )["input_ids"]
        with torch.no_grad():
            h = scorer.model.base_model(input_ids=torch.tensor([ids])).last_hidden_state[0, -1]
        assert g == pytest.approx((scorer.model.score.weight[0] @ h).item(), abs=1e-5)


def test_rm_text_joins_with_one_space():
    assert rm_text("write about ko :", " kofa mabi") == "write about ko : kofa mabi"
    assert rm_text("write about ko :", "") == "write about ko :"


def test_init_reward_model_copies_the_policy_trunk(tiny_model_dir):
    from shoal.models import load_policy

    policy, _ = load_policy(tiny_model_dir)
    rm, _ = init_reward_model(tiny_model_dir, seed=0)
    for name, tensor in policy.base_model.state_dict().items():
        assert torch.equal(rm.base_model.state_dict()[name], tensor), name
    assert rm.config.num_labels == 1 and rm.config.pad_token_id is not None


# ---- merge_terms / score_rollouts --------------------------------------------------------
def test_merge_sums_sequence_terms_and_keeps_metrics_out(rollouts):
    a = [RewardTerms(sequence={"rm": 1.0 + i}) for i in range(len(rollouts))]
    b = [RewardTerms(sequence={"rule": 0.5}, metrics_only={"gold": 9.0}) for _ in rollouts]
    c = [RewardTerms(ref_logprobs=[-0.5] * len(r.response_ids)) for r in rollouts]
    scored, rejections = merge_terms(rollouts, [a, b, c], ["rm", "rule", "kl"])
    assert rejections == [] and [s.rollout for s in scored] == rollouts
    assert [s.reward for s in scored] == [1.5 + i for i in range(len(rollouts))]
    assert scored[0].terms == RewardTerms(
        {"rm": 1.0, "rule": 0.5}, [-0.5] * len(rollouts[0].response_ids), {"gold": 9.0}
    )


@pytest.mark.parametrize(
    "bad_terms, field, value",
    [
        (RewardTerms(sequence={"rm": float("nan")}), "sequence.rm", "nan"),
        (RewardTerms(sequence={"rm": float("inf")}), "sequence.rm", "inf"),
        (RewardTerms(metrics_only={"gold": float("-inf")}), "metrics_only.gold", "-inf"),
        (RewardTerms(ref_logprobs=[-0.1, float("nan"), -0.2, -0.3]), "ref_logprobs[1]", "nan"),
        (RewardTerms(ref_logprobs=[-0.1]), "ref_logprobs.length", "1"),
    ],
)
def test_non_finite_values_reject_the_rollout(rollouts, bad_terms, field, value):
    good = [RewardTerms(sequence={"rule": 1.0}) for _ in rollouts]
    odd = [RewardTerms() for _ in rollouts]
    odd[0] = bad_terms  # rollout 0 has 4 response tokens
    scored, rejections = merge_terms(rollouts, [good, odd], ["rule", "odd"])
    assert [s.rollout for s in scored] == rollouts[1:]
    assert len(rejections) == 1
    rej = rejections[0]
    assert (rej.prompt_id, rej.scorer, rej.field, str(rej.value)) == ("keywords-p0", "odd", field, value)


def test_merge_rejects_contract_bugs(rollouts):
    ok = [RewardTerms(sequence={"x": 1.0}) for _ in rollouts]
    with pytest.raises(ValueError, match="scorer 'short' returned 1 RewardTerms for 5 rollouts"):
        merge_terms(rollouts, [ok, ok[:1]], ["a", "short"])
    with pytest.raises(ValueError, match="scorers 'a' and 'b' both report 'x'"):
        merge_terms(rollouts, [ok, ok], ["a", "b"])


def test_score_rollouts_with_real_scorers_counts_nan(rollouts, tiny_task):
    scorers = [RuleScorer(f"{HERE}:word_count"), GoldScorer(tiny_task)]
    scored, rejections = score_rollouts(scorers, rollouts)
    assert len(scored) == len(rollouts) and rejections == []
    assert [s.reward for s in scored] == [float(len(r.response_text.split())) for r in rollouts]
    scored, rejections = score_rollouts(scorers + [RuleScorer(f"{HERE}:always_nan")], rollouts)
    assert scored == [] and len(rejections) == len(rollouts)
    assert all(isinstance(r, Rejection) and r.scorer == f"{HERE}:always_nan" for r in rejections)


def test_build_scorers(tiny_model_dir, reward_model_dir, tiny_task):
    from shoal.services.config import ShoalConfig

    base = {"model": {"path": str(tiny_model_dir)}}
    bare = ShoalConfig.model_validate(base | {"reward": {"reward_model_path": None, "kl_coef": 0.0}})
    assert [type(s).__name__ for s in build_scorers(bare, tiny_task)] == ["GoldScorer"]
    full = ShoalConfig.model_validate(
        base
        | {
            "reward": {
                "reward_model_path": str(reward_model_dir),
                "rule_functions": [f"{HERE}:word_count"],
                "kl_coef": 0.0,
                "adaptive_kl": True,
            }
        }
    )
    names = [s.name for s in build_scorers(full, tiny_task)]
    assert names == ["reward_model", f"{HERE}:word_count", "kl_reference", "gold"]
