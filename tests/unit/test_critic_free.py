"""Critic-free estimators (GRPO, Dr.GRPO, RLOO, REINFORCE++): each advantage estimator against
a slow obvious loop and a hand-computed case, the loss aggregations, the GroupQueue (whole
groups, staleness from the oldest member, back-pressure, drop counts), the builders' requests
and config rules, and a learner step on a tiny model."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import pytest
import torch

from shoal.buffer.groups import GroupQueue
from shoal.core import Learner
from shoal.learner import critic_free
from shoal.learner.critic_free import aggregate_token_losses, clipped_token_losses, group_index, minibatch_rows
from shoal.learner.grpo.config import GRPOConfig
from shoal.learner.grpo.learning import GRPOLearner, grpo_advantages
from shoal.learner.reinforce_pp.config import ReinforcePPConfig
from shoal.learner.reinforce_pp.learning import ReinforcePPLearner, reinforce_pp_advantages
from shoal.learner.rloo.config import RLOOConfig
from shoal.learner.rloo.learning import RLOOLearner, rloo_advantages
from shoal.models import load_policy
from shoal.rollout.tasks import encode_prompt
from shoal.types import Prompt, RewardTerms, SampledBatch, ScoredRollout
from tests.unit.test_ppo_learner import ref_logprobs, sample_rollouts


# ---- random cases and the slow loops ----------------------------------------------------------
def _case(seed: int, kl: bool):
    """Rewards [B], groups [B] (sizes 2..5, shuffled order), prefix mask [B, T], penalty [B, T]."""
    rng = random.Random(seed)
    groups = [g for g in range(rng.randint(2, 5)) for _ in range(rng.randint(2, 5))]
    rng.shuffle(groups)
    b, t = len(groups), 6
    lengths = [rng.randint(1, t) for _ in range(b)]
    mask = torch.tensor([[1.0] * n + [0.0] * (t - n) for n in lengths])
    rewards = torch.tensor([rng.choice([0.0, 0.5, 1.0, rng.gauss(0, 1)]) for _ in range(b)])
    penalty = torch.tensor([[rng.gauss(0, 0.1) for _ in range(t)] for _ in range(b)]) * mask if kl else None
    return rewards, torch.tensor(groups), mask, penalty, lengths


def _members(groups, i):
    return [j for j in range(len(groups)) if groups[j] == groups[i]]


def slow_grpo(rewards, groups, lengths, penalty, scale, eps):
    r, g = rewards.tolist(), groups.tolist()
    out = torch.zeros(len(r), 6, dtype=torch.float64)
    for i in range(len(r)):
        rs = [r[j] for j in _members(g, i)]
        mean = sum(rs) / len(rs)
        std = math.sqrt(sum((x - mean) ** 2 for x in rs) / (len(rs) - 1))
        a = (r[i] - mean) / (std + eps) if scale == "group" else r[i] - mean
        if scale == "batch":
            centred = [r[j] - sum(r[k] for k in _members(g, j)) / len(_members(g, j)) for j in range(len(r))]
            mu = sum(centred) / len(centred)
            a /= math.sqrt(sum((x - mu) ** 2 for x in centred) / (len(centred) - 1)) + eps
        for t in range(lengths[i]):
            future = sum(penalty[i, s].item() for s in range(t, lengths[i])) if penalty is not None else 0.0
            out[i, t] = a + future
    return out


def slow_rloo(rewards, groups, lengths, penalty):
    g = groups.tolist()
    total = [rewards[i].item() + (sum(penalty[i].tolist()) if penalty is not None else 0.0) for i in range(len(g))]
    out = torch.zeros(len(g), 6, dtype=torch.float64)
    for i in range(len(g)):
        others = [total[j] for j in _members(g, i) if j != i]
        for t in range(lengths[i]):
            out[i, t] = total[i] - sum(others) / len(others)
    return out


def slow_reinforce_pp(rewards, lengths, penalty):
    returns = []
    for i, n in enumerate(lengths):
        token_r = [(penalty[i, t].item() if penalty is not None else 0.0) for t in range(n)]
        token_r[-1] += rewards[i].item()
        returns.append([sum(token_r[t:]) for t in range(n)])
    flat = [x for row in returns for x in row]
    mean = sum(flat) / len(flat)
    var = sum((x - mean) ** 2 for x in flat) / len(flat)
    out = torch.zeros(len(lengths), 6, dtype=torch.float64)
    for i, row in enumerate(returns):
        for t, x in enumerate(row):
            out[i, t] = (x - mean) / math.sqrt(var + 1e-8)
    return out


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("kl", [False, True])
def test_grpo_and_dr_grpo_match_slow_loop(seed, kl):
    rewards, groups, mask, penalty, lengths = _case(seed, kl)
    for scale in ("group", "batch", "none"):
        got = grpo_advantages(rewards, groups, mask, penalty, scale=scale, eps=1e-4)
        want = slow_grpo(rewards, groups, lengths, penalty, scale, 1e-4)
        torch.testing.assert_close(got.double(), want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("kl", [False, True])
def test_rloo_matches_slow_loop(seed, kl):
    rewards, groups, mask, penalty, lengths = _case(seed, kl)
    got = rloo_advantages(rewards, groups, mask, penalty)
    torch.testing.assert_close(got.double(), slow_rloo(rewards, groups, lengths, penalty), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("kl", [False, True])
def test_reinforce_pp_matches_slow_loop(seed, kl):
    rewards, _, mask, penalty, lengths = _case(seed, kl)
    got = reinforce_pp_advantages(rewards, mask, penalty)
    torch.testing.assert_close(got.double(), slow_reinforce_pp(rewards, lengths, penalty), atol=1e-5, rtol=1e-5)


def test_hand_computed_advantages():
    mask = torch.ones(6, 1)
    groups = torch.tensor([0, 0, 0, 0, 1, 1])
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 3.0, 1.0])
    # GRPO: group 0 mean 0.5, sample std sqrt(1/3); group 1 mean 2, std sqrt(2)
    a = grpo_advantages(rewards, groups, mask, eps=0.0)[:, 0]
    s3 = math.sqrt(3) / 2
    assert a.tolist() == pytest.approx([s3, -s3, -s3, s3, 1 / math.sqrt(2), -1 / math.sqrt(2)])
    # Dr.GRPO: no std division
    a = grpo_advantages(rewards, groups, mask, scale="none")[:, 0]
    assert a.tolist() == pytest.approx([0.5, -0.5, -0.5, 0.5, 1.0, -1.0])
    # batch std: centred [.5 -.5 -.5 .5 1 -1], mean 0, sample variance (4 * .25 + 2) / 5 = 0.6
    a = grpo_advantages(rewards, groups, mask, scale="batch", eps=0.0)[:, 0]
    assert a.tolist() == pytest.approx([x / math.sqrt(0.6) for x in (0.5, -0.5, -0.5, 0.5, 1.0, -1.0)])
    # RLOO on [1, 2, 3]: baselines 2.5, 2, 1.5
    a = rloo_advantages(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([0, 0, 0]), torch.ones(3, 2))
    assert a.flatten().tolist() == pytest.approx([-1.5, -1.5, 0.0, 0.0, 1.5, 1.5])
    # REINFORCE++ normalises over the batch, not per group: two flat groups still get signal
    a = reinforce_pp_advantages(torch.tensor([1.0, 1.0, 3.0, 3.0]), torch.ones(4, 1))[:, 0]
    assert a.tolist() == pytest.approx([-1.0, -1.0, 1.0, 1.0], abs=1e-6)
    assert (
        grpo_advantages(torch.tensor([1.0, 1.0, 3.0, 3.0]), torch.tensor([0, 0, 1, 1]), torch.ones(4, 1)).abs().max()
        == 0
    )
    # with a KL penalty: token rewards [-0.1, -0.2 + 1] -> returns [0.7, 0.8] for one row
    a = reinforce_pp_advantages(torch.tensor([1.0, 0.0]), torch.tensor([[1.0, 1.0], [1.0, 0.0]]),
                                torch.tensor([[-0.1, -0.2], [0.0, 0.0]]))  # fmt: skip
    rets = torch.tensor([0.7, 0.8, 0.0])
    assert a[0].tolist() + a[1, :1].tolist() == pytest.approx(
        ((rets - rets.mean()) / rets.std(unbiased=False)).tolist(), abs=1e-5
    )


def test_loss_aggregations_match_slow_loop_and_hand_case():
    losses = torch.tensor([[1.0, 2.0, 0.0], [3.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    assert aggregate_token_losses(losses, mask, "token_mean", 4).item() == pytest.approx(2.0)
    assert aggregate_token_losses(losses, mask, "sequence_mean", 4).item() == pytest.approx(2.25)
    assert aggregate_token_losses(losses, mask, "dr_grpo", 4).item() == pytest.approx(0.75)  # (3/4 + 3/4) / 2
    rng = random.Random(0)
    for _ in range(5):
        b, t = rng.randint(1, 5), rng.randint(1, 6)
        lengths = [rng.randint(1, t) for _ in range(b)]
        x = torch.randn(b, t)
        m = torch.tensor([[1.0] * n + [0.0] * (t - n) for n in lengths])
        rows = [[x[i, j].item() for j in range(lengths[i])] for i in range(b)]
        flat = [v for r in rows for v in r]
        assert aggregate_token_losses(x, m, "token_mean", 8).item() == pytest.approx(sum(flat) / len(flat), abs=1e-5)
        seq = sum(sum(r) / len(r) for r in rows) / b
        assert aggregate_token_losses(x, m, "sequence_mean", 8).item() == pytest.approx(seq, abs=1e-5)
        assert aggregate_token_losses(x, m, "dr_grpo", 8).item() == pytest.approx(sum(flat) / (8 * b), abs=1e-5)
    with pytest.raises(ValueError, match="loss_aggregation"):
        aggregate_token_losses(losses, mask, "mean", 4)


def test_clipped_token_losses_match_the_definition():
    logp, old, adv = torch.tensor([[0.0, 0.5, -0.5]]), torch.zeros(1, 3), torch.tensor([[1.0, 1.0, -1.0]])
    got = clipped_token_losses(logp, old, adv, 0.2)[0].tolist()
    r = [math.exp(v) for v in (0.0, 0.5, -0.5)]
    want = [max(-a * ri, -a * min(max(ri, 0.8), 1.2)) for a, ri in zip((1.0, 1.0, -1.0), r)]
    assert got == pytest.approx(want)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_minibatch_rows_cover_every_row_once(seed):
    """5 groups of 4 (one of 3): `groups` keeps each group whole in one minibatch of <= 2 groups;
    `samples` cuts the rows one by one into minibatches of 2 x the mean group size (8 rows),
    splitting some group."""
    groups = torch.tensor([0] * 4 + [1] * 4 + [2] * 3 + [3] * 4 + [4] * 4)
    gen = torch.Generator().manual_seed(seed)
    by_group = minibatch_rows(groups, 2, "groups", gen)
    assert sorted(torch.cat(by_group).tolist()) == list(range(19)) and len(by_group) == 3
    for idx in by_group:
        chosen = set(groups[idx].tolist())
        assert len(chosen) <= 2 and len(idx) == sum(int((groups == g).sum()) for g in chosen)
    by_row = minibatch_rows(groups, 2, "samples", gen)
    assert sorted(torch.cat(by_row).tolist()) == list(range(19))
    assert [len(idx) for idx in by_row] == [8, 8, 3]
    whole = [all(set(torch.nonzero(groups == g).flatten().tolist()) <= set(idx.tolist()) for g in groups[idx].unique())
             for idx in by_row]  # fmt: skip
    assert not all(whole)
    with pytest.raises(ValueError, match="minibatch_unit"):
        minibatch_rows(groups, 2, "tokens", gen)


@pytest.mark.parametrize("reshuffle", [True, False])
def test_minibatches_cut_every_epoch_or_once(tiny_model_dir, ref_model, monkeypatch, reshuffle):
    calls = []
    real = critic_free.minibatch_rows

    def spy(*args):
        calls.append(real(*args))
        return calls[-1]

    monkeypatch.setattr(critic_free, "minibatch_rows", spy)
    cfg = GRPOConfig(batch_size=2, minibatch_size=1, epochs=3, minibatch_unit="samples", reshuffle_each_epoch=reshuffle)
    learner = GRPOLearner(str(tiny_model_dir), cfg, max_new_tokens=5, temperature=0.9, seed=3)
    m = learner.step(_batch(learner, ref_model, seed=0))
    assert len(calls) == (3 if reshuffle else 1) and m["learner/updates"] == 6.0


# ---- the GroupQueue -------------------------------------------------------------------------
@dataclass(frozen=True)
class Item:
    prompt_id: str
    n: int
    policy_version: int


def _q(capacity=100, lag=5, min_group=2):
    return GroupQueue(capacity, lag, min_group, key=lambda it: it.prompt_id)


def _group(pid, size, version=0, versions=None):
    return [Item(pid, i, versions[i] if versions else version) for i in range(size)]


def test_group_queue_samples_whole_groups_in_order_and_never_splits():
    q = _q()
    items = _group("a", 4) + _group("b", 4) + _group("c", 3)
    random.Random(0).shuffle(items)  # members interleaved in one request's output
    assert q.add(items) == 11 and len(q) == 11 and q.num_groups() == 3
    batch = q.sample(2, learner_version=0)
    ids = [it.prompt_id for it in batch.items]
    sizes = {"a": 4, "b": 4, "c": 3}
    first_seen = list(dict.fromkeys(it.prompt_id for it in items))  # groups are queued in first-seen order
    assert list(dict.fromkeys(ids)) == first_seen[:2] and all(ids.count(p) == sizes[p] for p in set(ids))
    assert ids == sorted(ids, key=ids.index)  # each group's members together
    assert q.last_policy_lags() == [0] * len(ids) and len(batch.weights) == len(ids)
    assert q.sample(2, learner_version=0) is None and len(q) == 11 - len(ids)  # one group left: nothing popped
    assert len(q.sample(1, learner_version=0).items) == 11 - len(ids)


def test_group_queue_short_groups_kept_singletons_dropped_and_counted():
    q = _q()
    assert q.add(_group("a", 3) + _group("b", 1) + _group("c", 2)) == 5  # b lost 3 of 4 to the scorers
    assert q.num_groups() == 2 and q.stats()["buffer/dropped_small_groups"] == 1
    one = _q(min_group=1)
    assert one.add(_group("a", 1)) == 1 and len(one.sample(1, 0).items) == 1


@pytest.mark.parametrize("learner_version, max_lag", [(0, 0), (3, 1), (5, 2), (9, 0)])
def test_group_queue_staleness_from_the_oldest_member(learner_version, max_lag):
    rng = random.Random(learner_version)
    groups = [_group(f"g{i}", 3, versions=[rng.randint(0, 9) for _ in range(3)]) for i in range(12)]
    expected = [g for g in groups if all(learner_version - it.policy_version <= max_lag for it in g)]  # obvious loop
    q = _q(capacity=1000, lag=max_lag)
    for g in groups:
        q.add(g)
    n_stale = sum(len(g) for g in groups if g not in expected)
    if expected:
        batch = q.sample(len(expected), learner_version)
        assert batch.items == [it for g in expected for it in g] and batch.dropped_stale == n_stale
    else:
        assert q.sample(1, learner_version) is None
    assert q.stats()["buffer/dropped_stale"] == n_stale and len(q) == 0


def test_group_queue_drops_a_group_with_one_stale_member():
    q = _q(lag=1)
    q.add(_group("mixed", 3, versions=[3, 3, 1]))
    q.add(_group("fresh", 2, version=3))
    batch = q.sample(1, learner_version=3)
    assert [it.prompt_id for it in batch.items] == ["fresh", "fresh"] and batch.dropped_stale == 3


def test_group_queue_back_pressure_takes_whole_groups_only():
    q = _q(capacity=10)
    assert q.add(_group("a", 4) + _group("b", 4) + _group("c", 4)) == 8
    assert q.free() == 2 and q.room() == 2 and q.stats()["buffer/rejected_full"] == 4
    assert q.add(_group("d", 3)) == 0  # does not fit whole: refused, not split
    assert q.add(_group("e", 2)) == 2 and q.free() == 0
    q.sample(1, 0)
    assert q.free() == 4 and q.stats()["buffer/sampled"] == 4
    with pytest.raises(ValueError, match="capacity"):
        GroupQueue(0, 1)


# ---- the builders ---------------------------------------------------------------------------
def test_builder_requests_repeat_each_prompt_group_size_times(tiny_model_dir):
    from shoal.builders import make_builder
    from shoal.services.config import load_config

    for algo in ("grpo", "rloo", "reinforce_pp"):
        cfg = load_config(
            None,
            [f"model.path={tiny_model_dir}", f"run.algorithm={algo}", "rollout.prompts_per_request=3",
             f"{algo}.group_size=2", f"{algo}.batch_size=4", f"{algo}.minibatch_size=2", "buffer.capacity=8"],
        )  # fmt: skip
        b = make_builder(cfg)
        payload = b.new_request()
        assert len(payload) == 6 == b.request_size() == b.request_units(payload) and b.batch_size() == 4
        assert all(payload[2 * i] is payload[2 * i + 1] for i in range(3)) and len({p.prompt_id for p in payload}) == 3
        q = b.make_replay()
        assert isinstance(q, GroupQueue) and q.capacity == 8


def test_config_rules_name_the_field():
    from shoal.services.config import load_config
    from shoal.utils import ConfigError

    with pytest.raises(ConfigError, match=r"grpo\.group_size"):
        load_config(None, ["run.algorithm=grpo", "grpo.group_size=1"])
    with pytest.raises(ConfigError, match=r"rloo\.group_size"):
        load_config(None, ["run.algorithm=rloo", "rloo.group_size=1"])
    with pytest.raises(ConfigError, match=r"buffer\.capacity"):
        load_config(None, ["run.algorithm=grpo", "grpo.group_size=8", "buffer.capacity=100"])
    with pytest.raises(ConfigError, match=r"grpo\.kl_estimator"):
        load_config(None, ["run.algorithm=grpo", "grpo.kl_estimator=k4"])
    with pytest.raises(ConfigError, match=r"rollout\.top_k"):
        load_config(None, ["run.algorithm=reinforce_pp", "rollout.top_k=5"])
    assert load_config(None, ["run.algorithm=reinforce_pp", "reinforce_pp.group_size=1"]).reinforce_pp.group_size == 1


# ---- the learner on a tiny model ------------------------------------------------------------
@pytest.fixture(scope="module")
def ref_model(tiny_model_dir):
    return load_policy(tiny_model_dir)[0]


def _batch(learner, ref_model, seed: int, group_size: int = 4) -> SampledBatch:
    """Two groups sampled from the learner's weights; toy reward from the first token."""
    gen = torch.Generator().manual_seed(seed)
    sampler, tok = load_policy(str(learner.model.name_or_path))
    sampler.load_state_dict(learner.get_weights().tensors)
    items = []
    for i, text in enumerate(["write about ko :", "write about ma and more :"]):
        prompt = Prompt(f"t{i}", text, encode_prompt(tok, text), {})
        for r in sample_rollouts(
            sampler, prompt, group_size, 5, learner.temperature, gen, learner.policy_version, None
        ):
            reward = float(r.response_ids[0] % 3)
            terms = RewardTerms({"toy": reward}, ref_logprobs(ref_model, r, learner.temperature), {"gold": reward})
            items.append(ScoredRollout(r, terms, reward))
    return SampledBatch(items)


LEARNERS = [
    (GRPOLearner, GRPOConfig(batch_size=2, minibatch_size=1, epochs=2, kl_mode="loss")),
    (GRPOLearner, GRPOConfig(batch_size=2, minibatch_size=2, loss_aggregation="dr_grpo", kl_mode="reward")),
    (GRPOLearner, GRPOConfig(batch_size=2, minibatch_size=1, loss_aggregation="token_mean")),
    (GRPOLearner, GRPOConfig(batch_size=2, minibatch_size=1, minibatch_unit="samples", reshuffle_each_epoch=False)),
    (RLOOLearner, RLOOConfig(batch_size=2, minibatch_size=1)),
    (ReinforcePPLearner, ReinforcePPConfig(batch_size=2, minibatch_size=1)),
]


@pytest.mark.parametrize("cls, cfg", LEARNERS, ids=lambda x: getattr(x, "__name__", None) or str(x)[:40])
def test_learner_step_runs_reports_and_changes_weights(tiny_model_dir, ref_model, cls, cfg):
    learner = cls(str(tiny_model_dir), cfg, max_new_tokens=5, temperature=0.9, seed=3)
    assert isinstance(learner, Learner)
    batch = _batch(learner, ref_model, seed=0)
    before = learner.get_weights().tensors
    m = learner.step(batch)
    assert learner.policy_version == 1 and m["learner/policy_version"] == 1.0
    assert all(math.isfinite(v) for v in m.values()), m
    assert m["learner/groups"] == 2 and m["learner/group_size_mean"] == 4
    assert abs(m["learner/kl_ref"]) < 1e-4 and m["learner/logprob_mismatch"] < 1e-4  # still the sampler and the ref
    assert ("learner/kl_loss" in m) == (cfg.kl_mode == "loss")
    after = learner.get_weights().tensors
    if m["learner/advantage_abs_mean"] > 0:
        assert any(not torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("estimator", ["k3", "k2"])
def test_kl_loss_term_is_the_chosen_estimator(tiny_model_dir, ref_model, estimator):
    """The reported kl_loss of the first (and only) minibatch against a slow loop over tokens:
    the reference is the sampler's log-probs shifted by 0.3 (t + 1) nats at token t."""
    cfg = GRPOConfig(batch_size=2, minibatch_size=2, epochs=1, kl_mode="loss", kl_estimator=estimator)
    learner = GRPOLearner(str(tiny_model_dir), cfg, max_new_tokens=5, temperature=0.9, seed=3)
    batch = _batch(learner, ref_model, seed=0)
    items, per_seq = [], []
    for it in batch.items:
        gaps = [0.3 * (t + 1) for t in range(len(it.rollout.logprobs))]  # logp - ref_logp
        ref = [lp - g for lp, g in zip(it.rollout.logprobs, gaps)]
        items.append(ScoredRollout(it.rollout, RewardTerms(it.terms.sequence, ref, it.terms.metrics_only), it.reward))
        k = [0.5 * g * g if estimator == "k2" else math.exp(-g) - 1 + g for g in gaps]
        per_seq.append(sum(k) / len(k))
    m = learner.step(SampledBatch(items))
    assert m["learner/kl_loss"] == pytest.approx(sum(per_seq) / len(per_seq), abs=2e-3)


def test_target_kl_early_stopping(tiny_model_dir, ref_model):
    cfg = GRPOConfig(batch_size=2, minibatch_size=1, epochs=2, learning_rate=1e-2, target_kl=1e-9)
    learner = GRPOLearner(str(tiny_model_dir), cfg, max_new_tokens=5, temperature=0.9, seed=3)
    m = learner.step(_batch(learner, ref_model, seed=0))
    assert m["learner/updates"] == 1.0 and m["learner/early_stopped"] == 1.0
    free = GRPOLearner(str(tiny_model_dir), cfg.model_copy(update={"target_kl": None}), max_new_tokens=5, seed=3)
    m = free.step(_batch(free, ref_model, seed=0))
    assert m["learner/updates"] == 4.0 and m["learner/early_stopped"] == 0.0


def test_group_index_and_singleton_groups(tiny_model_dir, ref_model):
    learner = GRPOLearner(str(tiny_model_dir), GRPOConfig(batch_size=2, minibatch_size=1), max_new_tokens=5)
    batch = _batch(learner, ref_model, seed=1, group_size=3)
    assert group_index(batch.items).tolist() == [0, 0, 0, 1, 1, 1]
    with pytest.raises(ValueError, match="group of 1"):
        learner.step(SampledBatch(batch.items[:4]))
    rpp = ReinforcePPLearner(str(tiny_model_dir), ReinforcePPConfig(batch_size=2, minibatch_size=1), max_new_tokens=5)
    assert math.isfinite(rpp.step(SampledBatch(batch.items[:4]))["learner/policy_loss"])  # no group baseline


def test_checkpoint_roundtrip(tiny_model_dir, ref_model, tmp_path):
    cfg = RLOOConfig(batch_size=2, minibatch_size=1)
    a = RLOOLearner(str(tiny_model_dir), cfg, max_new_tokens=5, seed=1)
    a.step(_batch(a, ref_model, seed=2))
    a.save(str(tmp_path / "ck"))
    b = RLOOLearner(str(tiny_model_dir), cfg, max_new_tokens=5, seed=9)
    b.restore(str(tmp_path / "ck"))
    assert b.policy_version == 1 and all(
        torch.equal(v, b.get_weights().tensors[k]) for k, v in a.get_weights().tensors.items()
    )
    batch = _batch(a, ref_model, seed=3)
    assert a.step(batch)["learner/policy_loss"] == pytest.approx(b.step(batch)["learner/policy_loss"], abs=1e-6)


def test_the_lr_schedule_applies_to_the_critic_free_learners(tiny_model_dir, ref_model):
    cfg = GRPOConfig(batch_size=2, minibatch_size=1, learning_rate=1e-3, lr_schedule="cosine", lr_min_ratio=0.0)
    learner = GRPOLearner(str(tiny_model_dir), cfg, max_new_tokens=5, temperature=0.9, seed=3, total_steps=3)
    lrs = [learner.step(_batch(learner, ref_model, seed=s))["learner/lr"] for s in range(3)]
    assert lrs == pytest.approx([1e-3, 5e-4, 0.0], abs=1e-12)
