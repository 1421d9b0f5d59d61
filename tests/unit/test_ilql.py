"""Token-level ILQL: episode encoding, the losses against a per-token loop, Polyak targets,
BC-only mode, weights/checkpoints, ILQL decoding (logits processor, policy) and the
random-walks environment."""

from __future__ import annotations

import types

import pytest
import torch

from shoal.learner.ilql.acting import ILQLLogitsProcessor, ILQLPolicy, ilql_logits
from shoal.learner.ilql.learning import (
    ILQLConfig,
    ILQLLearner,
    collate_episodes,
    encode_episode,
    prompt_ids,
    split_weights,
)
from shoal.models import build_model_dir
from shoal.rollout.envs import Policy, collect, run_episode
from shoal.rollout.envs.random_walks import (
    POLICIES,
    RandomWalkPolicy,
    RandomWalksEnv,
    shortest_lengths,
)
from shoal.types import Episode, SampledBatch, Turn


class _Letters:
    def corpus(self) -> list[str]:
        return ["abcdefghijklmnopqrstuvwxyz ."]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    cfg = types.SimpleNamespace(vocab_size=259, hidden_size=64, num_layers=2, num_heads=2)
    return build_model_dir(_Letters(), cfg, tmp_path_factory.mktemp("ilql") / "policy", seed=0)


@pytest.fixture(scope="module")
def env():
    return RandomWalksEnv()


def _episode(turns, done=True, final="") -> Episode:
    ts = [Turn(o, a, r, done and i == len(turns) - 1) for i, (o, a, r) in enumerate(turns)]
    return Episode("e0", "t", ts, policy_version=-1, worker_id="w", final_observation=final)


def _data(env, n=16, seed=0):
    return [ep for _, ep in collect(env, [("random_walk", RandomWalkPolicy(env))], n, seed, 1).episodes]


# ---- encoding ------------------------------------------------------------------------------


def test_encode_episode_layout(model_dir):
    learner = ILQLLearner(str(model_dir))
    tok = learner.tokenizer
    enc = lambda s: tok.encode(s, add_special_tokens=False)
    e = encode_episode(tok, _episode([("ab", "c", 0.5), ("d", "ef", 2.0)]))
    bos, eos = tok.bos_token_id, tok.eos_token_id
    assert e.ids == [bos] + enc("ab") + enc("c") + [eos] + enc("d") + enc("ef") + [eos]
    # agent tokens: c </s> e f </s> at ids positions 3, 4, 6, 7, 8; state = previous position
    assert e.pos == [2, 3, 5, 6, 7]
    assert [e.ids[p + 1] for p in e.pos] == enc("c") + [eos] + enc("ef") + [eos]
    assert e.next_pos == [3, 5, 6, 7, 8]  # the </s> of turn 1 bootstraps from the state after "d"
    assert e.reward == [0.0, 0.5, 0.0, 0.0, 2.0]
    assert e.done == [0.0, 0.0, 0.0, 0.0, 1.0]
    assert prompt_ids(tok, [("ab", "c")], "d") == e.ids[:6]


def test_encode_truncated_episode_bootstraps_from_final_observation(model_dir):
    tok = ILQLLearner(str(model_dir)).tokenizer
    e = encode_episode(tok, _episode([("a", "b", 1.0)], done=False, final="cd"))
    assert e.done == [0.0, 0.0]
    assert e.ids[-2:] == tok.encode("cd", add_special_tokens=False)
    assert e.next_pos[-1] == len(e.ids) - 1
    with pytest.raises(ValueError, match="non-finite"):
        encode_episode(tok, _episode([("a", "b", float("nan"))]))


def test_collate_pads_with_mask_and_done(model_dir):
    tok = ILQLLearner(str(model_dir)).tokenizer
    a = encode_episode(tok, _episode([("a", "bcd", 1.0)]))
    b = encode_episode(tok, _episode([("a", "", 0.0)]))
    batch = collate_episodes([a, b], tok.pad_token_id)
    assert batch.mask.tolist() == [[1, 1, 1, 1], [1, 0, 0, 0]]
    assert batch.dones[1].tolist() == [1, 1, 1, 1] and batch.rewards[1].tolist() == [0, 0, 0, 0]
    assert batch.attention_mask.sum(1).tolist() == [len(a.ids), len(b.ids)]


# ---- losses --------------------------------------------------------------------------------


def test_losses_match_per_token_reference(model_dir, env):
    torch.manual_seed(0)
    cfg = ILQLConfig(gamma=0.9, tau=0.7, cql_weight=0.3, bc_weight=0.5)
    learner = ILQLLearner(str(model_dir), cfg)
    with torch.no_grad():  # make the targets differ from the online heads
        for p in learner.heads.target_q1.parameters():
            p.add_(0.1 * torch.randn_like(p))
    eps = _data(env, 4)
    loss, stats = learner.losses(learner.batch_from_episodes(eps))
    h = learner.heads
    tot = {"bc": 0.0, "q": 0.0, "v": 0.0, "cql": 0.0}
    n = 0
    with torch.no_grad():
        for ep in eps:
            e = encode_episode(learner.tokenizer, ep)
            out = learner.model(input_ids=torch.tensor([e.ids]), output_hidden_states=True)
            logits, hs = out.logits[0], out.hidden_states[-1][0]
            for p, q_next, r, d in zip(e.pos, e.next_pos, e.reward, e.done):
                a = e.ids[p + 1]
                x = hs[p]
                target = r + cfg.gamma * (1 - d) * float(h.value(hs[q_next]))
                q1, q2 = h.q1(x), h.q2(x)
                tot["bc"] += float(-torch.log_softmax(logits[p], -1)[a])
                tot["q"] += (float(q1[a]) - target) ** 2 + (float(q2[a]) - target) ** 2
                u = min(float(h.target_q1(x)[a]), float(h.target_q2(x)[a])) - float(h.value(x))
                tot["v"] += abs(cfg.tau - (u < 0)) * u * u
                tot["cql"] += float(torch.logsumexp(q1, -1) - q1[a] + torch.logsumexp(q2, -1) - q2[a])
                n += 1
    ref = {k: v / n for k, v in tot.items()}
    assert stats["tokens"] == n
    for k, name in [("bc", "bc_loss"), ("q", "q_loss"), ("v", "v_loss"), ("cql", "cql_loss")]:
        assert stats[name] == pytest.approx(ref[k], rel=1e-4, abs=1e-6), k
    expected = cfg.bc_weight * ref["bc"] + ref["q"] + ref["v"] + cfg.cql_weight * ref["cql"]
    assert loss.item() == pytest.approx(expected, rel=1e-4)


def test_step_updates_polyak_targets_and_reports_metrics(model_dir, env):
    learner = ILQLLearner(str(model_dir), ILQLConfig(target_alpha=0.25))
    old_target = [p.clone() for p in learner.heads.target_q1.parameters()]
    m = learner.step(SampledBatch(items=_data(env, 8)))
    for t, old, online in zip(learner.heads.target_q1.parameters(), old_target, learner.heads.q1.parameters()):
        torch.testing.assert_close(t, 0.75 * old + 0.25 * online)
    assert learner.policy_version == 1 and m["learner/policy_version"] == 1
    for k in ("loss", "bc_loss", "q_loss", "v_loss", "cql_loss", "q_mean", "v_mean", "grad_norm", "tokens"):
        assert torch.isfinite(torch.tensor(m[f"learner/ilql_{k}"])), k
    with pytest.raises(ValueError, match="needs Episode"):
        learner.step(["not an episode"])
    with pytest.raises(ValueError, match="empty"):
        learner.step([])


def test_bc_only_trains_the_lm_alone(model_dir, env):
    learner = ILQLLearner(str(model_dir), ILQLConfig(bc_only=True, target_alpha=0.5))
    heads_before = {k: v.clone() for k, v in learner.heads.state_dict().items()}
    lm_before = learner.model.lm_head.weight.clone()
    m = learner.step(_data(env, 8))
    assert "learner/ilql_q_loss" not in m and m["learner/ilql_loss"] == m["learner/ilql_bc_loss"]
    for k, v in learner.heads.state_dict().items():
        torch.testing.assert_close(v, heads_before[k])
    assert not torch.equal(learner.model.lm_head.weight, lm_before)


def test_weights_and_checkpoint_round_trip(model_dir, env, tmp_path):
    learner = ILQLLearner(str(model_dir), ILQLConfig(target_alpha=0.1))
    learner.step(_data(env, 8))
    w = learner.get_weights()
    lm, heads = split_weights(w.tensors)
    assert set(lm) == set(learner.model.state_dict()) and set(heads) == set(learner.heads.state_dict())
    learner.save(str(tmp_path / "ck"))
    other = ILQLLearner(str(model_dir), seed=1)
    other.restore(str(tmp_path / "ck"))
    assert other.policy_version == 1
    w2 = other.get_weights()
    for k, v in w.tensors.items():
        torch.testing.assert_close(w2.tensors[k], v)
    m1, m2 = learner.step(_data(env, 8, seed=3)), other.step(_data(env, 8, seed=3))
    assert m1["learner/ilql_loss"] == pytest.approx(m2["learner/ilql_loss"], rel=1e-5)


# ---- decoding ------------------------------------------------------------------------------


def test_ilql_logits_formula():
    bc, q, v = torch.randn(3, 7), torch.randn(3, 7), torch.randn(3)
    torch.testing.assert_close(ilql_logits(bc, q, v, 0.0), torch.log_softmax(bc, -1))
    torch.testing.assert_close(ilql_logits(bc, q, v, 2.0), torch.log_softmax(bc, -1) + 2.0 * (q - v[:, None]))
    assert bool((ilql_logits(bc, q, v, 1e4).argmax(-1) == q.argmax(-1)).all())


def test_processor_call_matches_hidden_state_path(model_dir):
    learner = ILQLLearner(str(model_dir))
    proc = ILQLLogitsProcessor(learner.model, learner.heads, beta=3.0)
    ids = torch.tensor([prompt_ids(learner.tokenizer, [], "bcd")])
    with torch.no_grad():
        out = learner.model(input_ids=ids, output_hidden_states=True)
    scores = out.logits[:, -1, :]
    expected = ilql_logits(
        scores,
        learner.heads.target_q(out.hidden_states[-1][:, -1]),
        learner.heads.value(out.hidden_states[-1][:, -1]),
        3.0,
    )
    torch.testing.assert_close(proc(ids, scores), expected)


def test_policy_greedy_decode_matches_generate_with_processor(model_dir):
    torch.manual_seed(0)
    learner = ILQLLearner(str(model_dir))
    pol = ILQLPolicy.from_learner(learner, beta=5.0, temperature=0.0, max_new_tokens=6)
    ids = prompt_ids(learner.tokenizer, [], "b")
    ours = pol.decode(ids)
    gen = learner.model.generate(
        torch.tensor([ids]),
        attention_mask=torch.ones(1, len(ids), dtype=torch.long),
        do_sample=False,
        max_new_tokens=6,
        logits_processor=[pol.processor],
        eos_token_id=learner.tokenizer.eos_token_id,
        pad_token_id=learner.tokenizer.pad_token_id,
    )[0, len(ids) :].tolist()
    eos = learner.tokenizer.eos_token_id
    assert ours == (gen[: gen.index(eos)] if eos in gen else gen)
    # greedy decoding is deterministic
    assert pol.decode(ids) == ours


def test_policy_protocol_and_episode(model_dir, env):
    learner = ILQLLearner(str(model_dir))
    pol = ILQLPolicy.from_learner(learner, beta=1.0, temperature=1.0, max_new_tokens=env.max_length, seed=0)
    assert isinstance(pol, Policy)
    ep = run_episode(env, pol, "x", 1, seed=5)
    assert isinstance(ep, Episode) and len(pol.history) == 1 and pol.history[0][1] == ep.turns[0].action
    pol.reset(5)
    again = run_episode(env, pol, "x", 1, seed=5)
    assert again.turns[0].action == ep.turns[0].action  # seeded
    # weights round-trip through get_weights
    other = ILQLPolicy(
        ILQLLearner(str(model_dir), seed=3).model,
        learner.tokenizer,
        ILQLLearner(str(model_dir), seed=4).heads,
        beta=1.0,
    )
    other.load_weights(learner.get_weights())
    torch.testing.assert_close(other.heads.v[0].weight, learner.heads.v[0].weight)


# ---- the random-walks environment ----------------------------------------------------------


def test_random_walks_rewards_and_policies(env):
    assert env.shortest == shortest_lengths(env.adj) and all(s >= 2 for s in env.shortest[1:])
    obs = env.reset(seed=3)
    start = ord(obs) - ord("a")
    path = "".join(chr(ord("a") + j) for j in env.shortest_path(start))
    _, r, done, info = env.step(path)
    assert (r, done, info["success"], info["length"]) == (1.0, True, True, env.shortest[start])
    env.reset(seed=3)
    assert env.step("zz")[1] == 0.0  # no such node
    env.reset(seed=3)
    assert env.step(path + "bcd")[1] == 1.0  # letters after the goal are ignored
    for name in ("optimal", "mediocre", "random", "random_walk"):
        assert isinstance(POLICIES[name](env), Policy)
    res = collect(env, [("optimal", POLICIES["optimal"](env))], 20, 0, 1)
    assert all(ep.turns[0].reward == 1.0 for _, ep in res.episodes)
    rw = [ep.turns[0].reward for _, ep in collect(env, [("random_walk", RandomWalkPolicy(env))], 200, 0, 1).episodes]
    assert 0.0 == min(rw) and max(rw) == 1.0 and 0.05 < sum(rw) / len(rw) < 0.3
