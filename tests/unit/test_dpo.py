"""DPO family: losses against slow loops and a hand case, the pair data set, the learner on a
tiny model, the builder's data path, and config errors."""

from __future__ import annotations

import json
import math
import random

import pytest
import torch

from shoal.buffer.pairs import PairDataset
from shoal.learner.dpo.config import DPOConfig
from shoal.learner.dpo.learning import DPOLearner, preference_losses, sequence_logps, token_kl
from shoal.types import PreferencePair, Prompt, SampledBatch


# ---- the losses against slow loops ----------------------------------------------------------
def _log_sigmoid(x: float) -> float:
    return -math.log(1.0 + math.exp(-x))


def _slow_loss(pc, pr, rc, rr, beta, loss, eps):
    out = []
    for a, b, c, d in zip(pc, pr, rc, rr):
        h = (a - c) - (b - d)
        if loss == "ipo":
            out.append((h - 1.0 / (2.0 * beta)) ** 2)
        else:
            out.append(-(1 - eps) * _log_sigmoid(beta * h) - eps * _log_sigmoid(-beta * h))
    return out


@pytest.mark.parametrize("loss, eps", [("sigmoid", 0.0), ("sigmoid", 0.2), ("ipo", 0.0)])
@pytest.mark.parametrize("beta", [0.05, 0.5, 2.0])
def test_losses_match_the_slow_loop(loss, eps, beta):
    g = torch.Generator().manual_seed(0)
    pc, pr, rc, rr = (torch.randn(16, generator=g, dtype=torch.float64) * 5 for _ in range(4))
    losses, r_c, r_r = preference_losses(pc, pr, rc, rr, beta=beta, loss=loss, label_smoothing=eps)
    want = _slow_loss(pc.tolist(), pr.tolist(), rc.tolist(), rr.tolist(), beta, loss, eps)
    assert torch.allclose(losses, torch.tensor(want, dtype=torch.float64), atol=1e-10)
    assert torch.allclose(r_c, beta * (pc - rc)) and torch.allclose(r_r, beta * (pr - rr))


def test_dpo_loss_hand_case():
    # log-ratios: chosen -1 - (-1.5) = 0.5, rejected -2 - (-1.5) = -0.5; h = 1; beta 0.5:
    # -log sigmoid(0.5) = log(1 + e^-0.5) = 0.474077...; IPO: (1 - 1)^2 = 0.
    t = lambda x: torch.tensor([x], dtype=torch.float64)  # noqa: E731
    dpo, r_c, r_r = preference_losses(t(-1.0), t(-2.0), t(-1.5), t(-1.5), beta=0.5)
    assert dpo.item() == pytest.approx(0.4740769841801067, abs=1e-12)
    assert (r_c.item(), r_r.item()) == pytest.approx((0.25, -0.25))
    ipo, _, _ = preference_losses(t(-1.0), t(-2.0), t(-1.5), t(-1.5), beta=0.5, loss="ipo")
    assert ipo.item() == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="not one of"):
        preference_losses(t(0), t(0), t(0), t(0), beta=1.0, loss="hinge")


def test_dpo_gradient_raises_chosen_and_lowers_rejected():
    pc, pr = torch.zeros(1, requires_grad=True), torch.zeros(1, requires_grad=True)
    losses, _, _ = preference_losses(pc, pr, torch.zeros(1), torch.zeros(1), beta=0.1)
    losses.sum().backward()
    assert pc.grad.item() == pytest.approx(-0.05) and pr.grad.item() == pytest.approx(0.05)  # -beta * sigmoid(0)


def test_sequence_logps_and_token_kl_match_loops():
    g = torch.Generator().manual_seed(1)
    logps, mask = torch.randn(3, 5, generator=g), torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0.0]])
    want = [sum(logps[b, t].item() for t in range(5) if mask[b, t]) for b in range(3)]
    assert sequence_logps(logps, mask).tolist() == pytest.approx(want)
    a, b = (
        torch.randn(2, 3, 7, generator=g, dtype=torch.float64),
        torch.randn(2, 3, 7, generator=g, dtype=torch.float64),
    )
    kl = token_kl(a, b)
    for i in range(2):
        for t in range(3):
            p = [math.exp(x) / sum(math.exp(y) for y in a[i, t].tolist()) for x in a[i, t].tolist()]
            q = [math.exp(x) / sum(math.exp(y) for y in b[i, t].tolist()) for x in b[i, t].tolist()]
            assert kl[i, t].item() == pytest.approx(sum(pi * math.log(pi / qi) for pi, qi in zip(p, q)), abs=1e-10)


# ---- the pair data set ----------------------------------------------------------------------
class _Item:
    def __init__(self, i: int) -> None:
        self.i, self.policy_version = i, -1


def test_pair_dataset_serves_every_pair_once_per_epoch_and_no_pair_twice_in_a_batch():
    d = PairDataset(100, seed=3)
    assert d.add([_Item(i) for i in range(10)]) == 10
    assert d.sample(11, 0) is None  # fewer pairs than a batch
    seen = []
    for _ in range(10):
        batch = d.sample(3, 0)
        ids = [it.i for it in batch.items]
        assert len(set(ids)) == 3
        seen += ids
    assert sorted(seen[:9]) == sorted(set(seen[:9]))  # the first pass: 9 distinct of the 10
    assert sorted(seen[:30]) == sorted(list(range(10)) * 3)  # 30 samples = 3 passes, each pair 3 times
    assert d.stats()["buffer/epochs"] == 3 and d.last_policy_lags() == [0, 0, 0]
    other = PairDataset(100, seed=3)
    other.add([_Item(i) for i in range(10)])
    assert [it.i for it in other.sample(3, 0).items] == seen[:3]  # seeded


def test_pair_dataset_capacity():
    d = PairDataset(4)
    assert d.add([_Item(i) for i in range(6)]) == 4 and d.stats()["buffer/rejected_full"] == 2 and d.free() == 0


# ---- the learner on a tiny model ------------------------------------------------------------
def _pairs(tokenizer, n: int, seed: int) -> list[PreferencePair]:
    from shoal.rollout.tasks import encode_prompt

    rng = random.Random(seed)
    words = ["kofa", "kobi", "mafa", "mabi", "tuko", "tuma"]
    out = []
    for i in range(n):
        text = "write about ko :"
        ids = lambda s: tokenizer(" " + s, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]  # noqa: E731
        chosen, rejected = " ".join(rng.choices(words[:2], k=3)), " ".join(rng.choices(words[2:], k=3))
        prompt = Prompt(f"p{i}", text, encode_prompt(tokenizer, text), {"topic": "ko"})
        out.append(PreferencePair(f"p{i}", prompt, ids(chosen), ids(rejected), chosen, rejected))
    return out


@pytest.mark.parametrize("cfg", [DPOConfig(), DPOConfig(loss="ipo"), DPOConfig(label_smoothing=0.1, rpo_alpha=0.5)])
def test_learner_first_step_starts_at_the_reference_and_learns_the_preference(tiny_model_dir, cfg):
    learner = DPOLearner(str(tiny_model_dir), cfg.model_copy(update={"learning_rate": 3e-3}), seed=0)
    pairs = _pairs(learner.tokenizer, 16, seed=0)
    m = learner.step(SampledBatch(items=pairs))
    assert m["learner/rewards_chosen"] == pytest.approx(0, abs=1e-6) and m["learner/kl_ref"] == pytest.approx(
        0, abs=1e-6
    )
    want = math.log(2) if cfg.loss == "sigmoid" else (1 / (2 * cfg.beta)) ** 2
    assert m["learner/dpo_loss"] == pytest.approx(want, rel=1e-5)
    assert m["learner/loss"] == pytest.approx(m["learner/dpo_loss"] + cfg.rpo_alpha * m["learner/nll_chosen"], rel=1e-6)
    for _ in range(15):
        m = learner.step(SampledBatch(items=pairs))
    assert m["learner/reward_margin"] > 0.05 and m["learner/preference_accuracy"] == 1.0, m
    assert m["learner/kl_ref"] > 0 and learner.policy_version == 16


def test_learner_checkpoint_roundtrip(tiny_model_dir, tmp_path):
    a = DPOLearner(str(tiny_model_dir), DPOConfig(learning_rate=3e-3), seed=0)
    pairs = _pairs(a.tokenizer, 8, seed=1)
    for _ in range(3):
        a.step(SampledBatch(items=pairs))
    a.save(str(tmp_path / "ckpt"))
    b = DPOLearner(str(tiny_model_dir), DPOConfig(learning_rate=3e-3), seed=0)
    b.restore(str(tmp_path / "ckpt"))
    assert b.policy_version == 3
    ma, mb = a.step(SampledBatch(items=pairs)), b.step(SampledBatch(items=pairs))
    assert ma["learner/dpo_loss"] == pytest.approx(mb["learner/dpo_loss"], rel=1e-6)


def test_learner_refuses_other_items(tiny_model_dir):
    learner = DPOLearner(str(tiny_model_dir), DPOConfig(), seed=0)
    with pytest.raises(ValueError, match="needs PreferencePair"):
        learner.step(SampledBatch(items=[object()]))


# ---- the builder and the config -------------------------------------------------------------
def test_builder_tokenizes_the_preference_file(tiny_model_dir, tmp_path):
    from shoal.builders import make_builder
    from shoal.services.config import load_config

    path = tmp_path / "prefs.jsonl"
    rows = [
        {
            "prompt": "write about ko :",
            "chosen": "kofa kobi",
            "rejected": "mafa",
            "gold_chosen": 0.3,
            "gold_rejected": 0.0,
        }
    ] * 4
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = load_config(
        None,
        [
            f"model.path={tiny_model_dir}",
            "reward.reward_model_path=null",
            "run.algorithm=dpo",
            f"dpo.dataset={path}",
            "dpo.batch_size=4",
        ],
    )
    b = make_builder(cfg)
    b.preflight()
    items = b.initial_items()
    assert len(items) == 4 and not b.collecting() and b.batch_size() == 4
    tok = b.make_learner({}).tokenizer
    assert items[0].chosen_ids == tok(" kofa kobi", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert (
        items[0].policy_version == -1
        and items[0].gold_chosen == 0.3
        and items[0].prompt.token_ids[0] == tok.bos_token_id
    )
    replay = b.make_replay()
    replay.add(items)
    assert len(replay.sample(4, 0).items) == 4


def test_config_and_data_errors_name_the_field(tiny_model_dir, tmp_path):
    from shoal.builders import make_builder
    from shoal.services.config import load_config
    from shoal.utils import ConfigError

    with pytest.raises(ConfigError, match=r"dpo\.beta"):
        load_config(None, ["run.algorithm=dpo", "dpo.beta=0"])
    with pytest.raises(ConfigError, match=r"label_smoothing"):
        load_config(None, ["run.algorithm=dpo", "dpo.loss=ipo", "dpo.label_smoothing=0.1"])
    with pytest.raises(ConfigError, match=r"dpo\.loss"):
        load_config(None, ["run.algorithm=dpo", "dpo.loss=hinge"])
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "p", "chosen": "a", "rejected": "a"}) + "\n")
    cfg = load_config(
        None,
        [f"model.path={tiny_model_dir}", "reward.reward_model_path=null", "run.algorithm=dpo", f"dpo.dataset={bad}"],
    )
    with pytest.raises(ConfigError, match=rf"dpo\.dataset: {bad}:1: .*same answer"):
        make_builder(cfg).preflight()
    small = tmp_path / "small.jsonl"
    small.write_text(json.dumps({"prompt": "p", "chosen": "a", "rejected": "b"}) + "\n")
    cfg = load_config(
        None,
        [f"model.path={tiny_model_dir}", "reward.reward_model_path=null", "run.algorithm=dpo", f"dpo.dataset={small}"],
    )
    with pytest.raises(ConfigError, match=r"dpo\.batch_size: 32 pairs per step but the data set holds 1"):
        make_builder(cfg).preflight()


# ---- online: pairs from ranked groups -------------------------------------------------------
def _slow_all_pairs(scores):
    out = set()
    for i, a in enumerate(scores):
        for j, b in enumerate(scores):
            if a > b:
                out.add((i, j))
    return out


@pytest.mark.parametrize("scores", [[0.1, 0.5, 0.3, 0.5], [1.0, 1.0, 1.0], [0.0, 2.0], [3.0, -1.0, 2.0, 0.0, -1.0]])
def test_rank_pairs_against_the_slow_loop(scores):
    from shoal.buffer.pairs import rank_pairs

    assert set(rank_pairs(scores, "all_pairs")) == _slow_all_pairs(scores)
    best_worst = rank_pairs(scores, "best_worst")
    if max(scores) == min(scores):
        assert best_worst == []
    else:
        (c, r) = best_worst[0]
        assert scores[c] == max(scores) and scores[r] == min(scores) and len(best_worst) == 1
        assert c == scores.index(max(scores)) and r == scores.index(min(scores))  # first seen wins a tie
    with pytest.raises(ValueError, match="not one of"):
        rank_pairs(scores, "random")


def _scored(prompt_id: str, version: int, rewards: list[float], gold: list[float]):
    from shoal.types import RewardTerms, Rollout, ScoredRollout

    prompt = Prompt(prompt_id, "write about ko :", [1, 5, 6], {"topic": "ko"})
    return [
        ScoredRollout(
            Rollout(prompt, [10 + i, 2], f"a{i}", [-1.0, -0.5], version, "rollout-0"),
            RewardTerms(sequence={"reward_model": r}, metrics_only={"gold": g}),
            r,
        )
        for i, (r, g) in enumerate(zip(rewards, gold))
    ]


def test_pair_queue_ranks_groups_counts_ties_and_drops_stale_pairs():
    from shoal.buffer.pairs import PairQueue
    from shoal.learner.dpo.builder import judge_gold, judge_reward

    q = PairQueue(capacity=8, max_policy_lag=1, score=judge_reward, pairing="best_worst", group_size=4)
    assert q.room() == 32  # rollouts: 8 pairs, one per group of 4
    items = _scored("p0", 0, [0.2, 0.9, 0.1, 0.5], [0.5, 0.1, 0.0, 0.3]) + _scored("p1", 0, [1.0] * 4, [0.0] * 4)
    assert q.add(items) == 1
    pair = q._pairs[0]
    assert (pair.chosen_text, pair.rejected_text, pair.chosen_ids, pair.policy_version) == ("a1", "a2", [11, 2], 0)
    assert (pair.gold_chosen, pair.gold_rejected) == (0.1, 0.0)
    s = q.stats()
    assert s["buffer/tied_groups"] == 1 and s["buffer/groups"] == 2 and s["buffer/judge_gap"] == pytest.approx(0.8)
    assert s["buffer/judge_gold_agreement"] == 1.0
    q.add(_scored("p2", 3, [0.0, 1.0, 0.5, 0.2], [0.0, 1 / 6, 0.5, 0.0]))
    batch = q.sample(1, learner_version=3)  # the version-0 pair is 3 steps old: dropped
    assert (
        batch.items[0].pair_id.startswith("p2") and batch.dropped_stale == 1 and q.stats()["buffer/dropped_stale"] == 1
    )
    assert q.sample(1, 3) is None and q.last_policy_lags() == [0]
    oracle = PairQueue(capacity=8, max_policy_lag=1, score=judge_gold, pairing="all_pairs", group_size=4)
    assert oracle.room() == 4 and oracle.pairs_per_group == 6
    assert oracle.add(_scored("p0", 0, [0.2, 0.9, 0.1, 0.5], [0.5, 0.1, 0.0, 0.3])) == 6  # distinct golds: all 6 pairs
    assert oracle.add(_scored("p1", 0, [0.2, 0.9, 0.1, 0.5], [0.5, 0.1, 0.0, 0.3])) == 0  # 6 more do not fit in 8
    assert oracle.stats()["buffer/rejected_full"] == 6


def test_reference_refresh_makes_the_reference_the_policy(tiny_model_dir, tmp_path):
    learner = DPOLearner(str(tiny_model_dir), DPOConfig(learning_rate=3e-3, ref_refresh_interval=2), seed=0)
    pairs = _pairs(learner.tokenizer, 8, seed=2)
    m1 = learner.step(SampledBatch(items=pairs))
    assert learner.reference_version == 0 and "learner/reference_refreshed" not in m1
    m2 = learner.step(SampledBatch(items=pairs))
    assert m2["learner/reference_refreshed"] == 1.0 and learner.reference_version == 2
    m3 = learner.step(SampledBatch(items=pairs))  # policy == reference again at the start of step 3
    assert m3["learner/rewards_chosen"] == pytest.approx(0, abs=1e-5) and m3["learner/dpo_loss"] == pytest.approx(
        math.log(2), rel=1e-4
    )
    learner.save(str(tmp_path / "ckpt"))
    other = DPOLearner(str(tiny_model_dir), DPOConfig(learning_rate=3e-3, ref_refresh_interval=2), seed=0)
    other.restore(str(tmp_path / "ckpt"))
    assert other.reference_version == 2
    a, b = learner.reference.state_dict(), other.reference.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_online_builder_requests_and_config_errors(tiny_model_dir):
    from shoal.buffer.pairs import PairQueue
    from shoal.builders import make_builder
    from shoal.services.config import load_config
    from shoal.utils import ConfigError

    base = [f"model.path={tiny_model_dir}", "run.algorithm=dpo", "dpo.online=true"]
    cfg = load_config(None, [*base, "dpo.num_samples=3", "rollout.prompts_per_request=2", "dpo.batch_size=4"])
    b = make_builder(cfg)
    payload = b.new_request()
    assert len(payload) == 6 == b.request_size() and payload[0] is payload[2] and b.collecting() and b.unit == "samples"
    assert isinstance(b.make_replay(), PairQueue) and b.initial_items() == []
    with pytest.raises(ConfigError, match=r"dpo\.num_samples"):
        load_config(None, [*base, "dpo.num_samples=1"])
    with pytest.raises(ConfigError, match=r"buffer\.capacity: 8 pairs cannot hold"):
        load_config(
            None,
            [
                *base,
                "dpo.pairing=all_pairs",
                "dpo.num_samples=4",
                "rollout.prompts_per_request=4",
                "buffer.capacity=8",
                "dpo.batch_size=8",
            ],
        )
    with pytest.raises(ConfigError, match=r"dpo: dataset: online DPO makes its own pairs"):
        load_config(None, [*base, "dpo.dataset=x.jsonl"])
    no_judge = load_config(None, [*base, "reward.reward_model_path=null"])
    with pytest.raises(ConfigError, match=r"dpo\.judge: `reward` ranks answers by the run's reward, and it has none"):
        make_builder(no_judge).preflight()
