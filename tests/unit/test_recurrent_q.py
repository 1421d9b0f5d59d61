"""Unit tests: recurrent per-utterance Q network, R2D2 learner, Q actor (fast, tiny models)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from shoal.buffer.prioritized import PrioritizedSequenceReplay
from shoal.buffer.sequences import cut_episode
from shoal.learner.r2d2.acting import QActor, apex_epsilon
from shoal.learner.r2d2.config import R2D2Config
from shoal.learner.r2d2.learning import R2D2Learner
from shoal.learner.r2d2.networks import STATE_ROWS, RecurrentQNetwork, build_tiny_encoder
from shoal.rollout.envs.base import env_corpus
from shoal.rollout.envs.cue_recall import ACTIONS, CueRecallEnv
from shoal.types import Episode, SampledBatch, Turn

K, B, T, P = 4, 2, 2, 1
H = 16


@pytest.fixture(scope="module")
def encoder():
    torch.set_num_threads(1)
    return build_tiny_encoder(
        env_corpus(CueRecallEnv(corridor_length=K), num_episodes=10), hidden_size=64, vocab_size=280
    )


def make(encoder, **cfg):
    net = RecurrentQNetwork(encoder.dim, hidden_size=H, seed=0)
    learner = R2D2Learner(
        net,
        encoder,
        R2D2Config(burn_in_length=B, trace_length=T, n_step=2, target_update_period=3, **cfg),
        action_set=ACTIONS,
    )
    actor = QActor(RecurrentQNetwork(encoder.dim, hidden_size=H, seed=1), encoder, epsilon=0.5)
    w = learner.get_weights()
    actor.load_weights(w.tensors, w.version)
    return learner, actor


def episodes(actor, n=4, seed=0):
    env = CueRecallEnv(corridor_length=K)
    return [actor.run_episode(env, f"e{i}", seed=seed + i) for i in range(n)]


def batch_of(pairs):
    items = [it for ep, st in pairs for it in cut_episode(ep, st, B, T, P)]
    return SampledBatch(items=items, keys=list(range(len(items))), weights=[1.0] * len(items))


def test_encoder_caches_and_pads_with_zeros(encoder):
    e = encoder.encode(["go", "left", "go", ""])
    assert e.shape == (4, encoder.dim)
    assert torch.equal(e[0], e[2]) and torch.count_nonzero(e[3]) == 0
    assert not torch.allclose(e[0], e[1])
    n = len(encoder)
    encoder.encode(["go", "left"])
    assert len(encoder) == n


def test_dueling_head_scores_any_candidate_set(encoder):
    net = RecurrentQNetwork(encoder.dim, hidden_size=H, seed=0)
    state = net.initial_state(1)[0]
    obs = encoder.encode(["junction: say left or right."])[0]
    q3, q_taken = net.q_values(state, obs, encoder.encode(ACTIONS), taken=encoder.encode(["left"])[0])
    assert q3.shape == (3,) and torch.allclose(q_taken, q3[1], atol=1e-6)
    q5 = net.q_values(state, obs, encoder.encode(["go", "left", "right", "turn left", "wait"]))
    assert q5.shape == (5,)


def test_forget_gate_bias_is_open(encoder):
    net = RecurrentQNetwork(encoder.dim, hidden_size=H, forget_bias=3.0, seed=0)
    f = net.core.bias_ih[H : 2 * H] + net.core.bias_hh[H : 2 * H]
    assert torch.allclose(f, torch.full((H,), 3.0))


def test_actor_records_state_entering_each_turn(encoder):
    _, actor = make(encoder)
    actor.policy_version = 7
    ep, states = actor.run_episode(CueRecallEnv(corridor_length=K), "e", seed=3)
    assert states.shape == (len(ep.turns), STATE_ROWS, H) and states.dtype == np.float32
    assert np.count_nonzero(states[0]) == 0  # the initial state
    assert ep.policy_version == 7 and ep.turns[-1].done
    # replaying the turns through the core reproduces every stored state
    net, s = actor.network, actor.network.initial_state(1)
    for t, turn in enumerate(ep.turns):
        assert np.allclose(states[t], s[0].detach().numpy(), atol=1e-6)
        e = encoder.encode([turn.observation, turn.action])
        s = net.core_step(s, e[0:1], e[1:2], torch.tensor([turn.reward]))
    items = cut_episode(ep, states, B, T, P)
    assert items and all(it.policy_version == 7 for it in items)


def test_actor_greedy_is_deterministic_and_epsilon_explores(encoder):
    _, actor = make(encoder)
    env = CueRecallEnv(corridor_length=K)
    a1 = [t.action for t in actor.run_episode(env, "a", seed=5, greedy=True)[0].turns]
    a2 = [t.action for t in actor.run_episode(env, "a", seed=5, greedy=True)[0].turns]
    assert a1 == a2
    actor.epsilon = 1.0
    acts = {t.action for i in range(5) for t in actor.run_episode(env, "b", seed=i)[0].turns}
    assert acts <= set(ACTIONS) and len(acts) >= 2


def test_actor_with_candidate_fn(encoder):
    _, actor = make(encoder)
    actor.candidate_fn = lambda obs, k, rng: ["go", "left", "right", "go."][:k]
    actor.num_candidates = 4
    ep, _ = actor.run_episode(CueRecallEnv(corridor_length=K), "c", seed=1)
    assert all(t.action in ("go", "left", "right", "go.") for t in ep.turns)


def test_apex_epsilon():
    assert apex_epsilon(0, 1) == 0.4
    assert apex_epsilon(0, 8) == pytest.approx(0.4) and apex_epsilon(7, 8) == pytest.approx(0.4**8)


def test_learner_step_metrics_priorities_and_target_period(encoder):
    learner, actor = make(encoder)
    batch = batch_of(episodes(actor))
    before = {k: v.clone() for k, v in learner.target.state_dict().items()}
    m, prio = learner.step_with_priorities(batch)
    for key in (
        "learner/q_loss",
        "learner/q_mean",
        "learner/td_abs_mean",
        "learner/priority_mean",
        "learner/grad_norm",
    ):
        assert np.isfinite(m[key]), key
    assert len(prio) == len(batch.items) and all(p >= 0 for p in prio)
    assert learner.policy_version == 1 and learner.get_weights().version == 1
    assert all(torch.equal(before[k], v) for k, v in learner.target.state_dict().items())
    learner.step(batch)
    learner.step(batch)  # step 3: target copied
    online = learner.network.state_dict()
    assert all(torch.equal(online[k], v) for k, v in learner.target.state_dict().items())


def test_burn_in_gradients_flag(encoder):
    """Without burn-in gradients the loss does not depend on the core through burn-in only;
    check via the gradient on the start of the unroll: none reaches start_state inputs."""
    learner, actor = make(encoder)
    t = learner._tensors(batch_of(episodes(actor, n=2)).items)
    start = t["start"].clone().requires_grad_(True)
    for flag, expect in ((False, False), (True, True)):
        start.grad = None
        _, q_taken, _ = learner.network.unroll(start, t["obs"], t["act"], t["rewards"], t["mask"], t["cands"], B, flag)
        q_taken[:, B:].sum().backward()
        got = start.grad is not None and bool(start.grad.abs().sum() > 0)
        assert got == expect


def test_zero_start_state_ignores_stored_state(encoder):
    learner, actor = make(encoder, start_state="zero")
    items = batch_of(episodes(actor, n=2)).items
    t = learner._tensors(items)
    q1, _ = learner._unroll(learner.network, t, False)
    t["start"] = torch.randn_like(t["start"])
    q2, _ = learner._unroll(learner.network, t, False)
    assert torch.equal(q1, q2)
    with pytest.raises(ValueError):
        R2D2Config(start_state="random")


def test_masked_positions_keep_state(encoder):
    net = RecurrentQNetwork(encoder.dim, hidden_size=H, seed=0)
    s = torch.randn(2, STATE_ROWS, H)
    e = encoder.encode(["go", "left"])
    out = net.core_step(s, e, e, torch.zeros(2), mask=torch.tensor([0.0, 1.0]))
    assert torch.equal(out[0], s[0]) and not torch.equal(out[1], s[1])


def test_learner_with_prioritized_replay_and_wrong_length(encoder):
    learner, actor = make(encoder)
    replay = PrioritizedSequenceReplay(capacity=100, seed=0)
    for ep, st in episodes(actor, n=3):
        replay.add(cut_episode(ep, st, B, T, P))
    batch = replay.sample(4, learner.policy_version)
    _, prio = learner.step_with_priorities(batch)
    assert replay.update_priorities(batch.keys, prio) == 4
    ep, st = episodes(actor, n=1)[0]
    bad = cut_episode(ep, st, B + 1, T, P)
    with pytest.raises(ValueError, match="positions"):
        learner.step(SampledBatch(items=bad, weights=[1.0] * len(bad)))


def test_dq_diagnostic_modes(encoder):
    learner, actor = make(encoder)  # the actor holds a copy of the learner's weights
    pairs = episodes(actor, n=3)
    dq = learner.dq_diagnostic(pairs, sequence_period=P)
    assert set(dq) == {"dq/zero", "dq/zero_burn_in", "dq/stored", "dq/stored_burn_in", "dq/items"}
    # same weights: the stored states are the true ones, stored dQ is float noise only
    assert dq["dq/items"] > 0 and dq["dq/stored"] < 1e-5 and dq["dq/stored_burn_in"] < 1e-5
    assert dq["dq/zero"] > 1e-3
    # the learner moves on without re-syncing the actor: the stored states go stale
    batch = batch_of(pairs)
    for _ in range(5):
        learner.step(batch)
    stale = learner.dq_diagnostic(pairs, sequence_period=P)
    assert stale["dq/stored"] > 1e-3, stale
    # states from the learner's own network are exact: stored dQ is 0
    own = QActor(learner.network, encoder, epsilon=0.5)
    dq_own = learner.dq_diagnostic(episodes(own, n=3), sequence_period=P)
    assert dq_own["dq/stored"] == pytest.approx(0.0, abs=1e-5)
    assert dq_own["dq/stored_burn_in"] == pytest.approx(0.0, abs=1e-5)
    assert dq_own["dq/zero"] > 0


def test_truncated_episode_bootstraps_last_turn_from_final_observation(encoder):
    """The last turn of an episode cut off by max_turns (done=False) gets the target
    r + gamma * Q_target(h_T, argmax_a Q_online(h_T, a)) at the final observation; a done
    episode's last turn gets r alone."""
    learner, actor = make(encoder, value_rescaling=False)
    learner.step(batch_of(episodes(actor, n=2)))  # online != target, so double Q is visible
    history = [("cue: left.", "go", 0.0), ("corridor.", "go", 0.25), ("corridor.", "go", 0.5)]
    final = "junction: say left or right."
    gamma = learner.cfg.gamma
    with torch.no_grad():
        q_online, _ = _q_after(learner.network, encoder, history, final)
        q_target, _ = _q_after(learner.target, encoder, history, final)
    bootstrap = float(q_target[q_online.argmax()])
    assert abs(bootstrap) > 1e-3  # else the check below could not tell the two cases apart
    for done, want in ((False, 0.5 + gamma * bootstrap), (True, 0.5)):
        turns = [Turn(o, a, r, done=(done and i == len(history) - 1)) for i, (o, a, r) in enumerate(history)]
        ep = Episode("e", "cue_recall", turns, policy_version=learner.policy_version, final_observation=final)
        items = cut_episode(ep, np.zeros((len(turns), STATE_ROWS, H), np.float32), B, T, P)
        assert [it.start for it in items] == [0]  # one item: the last turn (2) is its first trace position
        m = learner.step(SampledBatch(items=items, keys=[0], weights=[1.0]))
        assert m["learner/trace_turns"] == 1.0, done  # the last turn has a target (the final observation never does)
        assert m["learner/target_mean"] == pytest.approx(want, abs=1e-5), done


def test_save_restore_roundtrip(encoder, tmp_path):
    learner, actor = make(encoder)
    batch = batch_of(episodes(actor, n=2))
    learner.step(batch)
    learner.save(str(tmp_path / "ck"))
    other, _ = make(encoder)
    other.restore(str(tmp_path / "ck"))
    assert other.policy_version == 1 and other.step_count == 1
    for k, v in learner.network.state_dict().items():
        assert torch.equal(v, other.network.state_dict()[k])
    m1, m2 = learner.step(batch), other.step(batch)
    assert m1["learner/q_loss"] == pytest.approx(m2["learner/q_loss"], rel=1e-5)


def _q_after(net, encoder, history, obs):
    """Q over ACTIONS at `obs` after running the core over `history` [(observation, action, reward)]."""
    s = net.initial_state(1)
    for o, a, r in history:
        e = encoder.encode([o, a])
        s = net.core_step(s, e[0:1], e[1:2], torch.tensor([r]))
    return net.q_values(s[0], encoder.encode([obs])[0], encoder.encode(ACTIONS)), s


def test_memoryless_q_ignores_history_recurrent_does_not(encoder):
    obs = "corridor."
    h1 = [("cue: left.", "go", 0.0), ("corridor.", "go", 0.0)]
    h2 = [("cue: right.", "left", -1.0), ("corridor.", "right", 1.0), ("corridor.", "go", 0.0)]
    rec = RecurrentQNetwork(encoder.dim, hidden_size=H, seed=0)
    memless = RecurrentQNetwork(encoder.dim, hidden_size=H, seed=0, memory=False)
    # same layers and, for the same seed, the same initial weights: only the memory differs
    assert all(torch.equal(v, memless.state_dict()[k]) for k, v in rec.state_dict().items())
    with torch.no_grad():
        q_rec = [_q_after(rec, encoder, h, obs)[0] for h in (h1, h2, [])]
        (q0, s0), (q1, s1), (q2, s2) = (_q_after(memless, encoder, h, obs) for h in ([], h1, h2))
        assert not torch.allclose(q_rec[0], q_rec[1]) and not torch.allclose(q_rec[0], q_rec[2])
        assert torch.equal(q0, q1) and torch.equal(q0, q2)
        assert all(torch.count_nonzero(s) == 0 for s in (s0, s1, s2))
        # a non-zero state (e.g. a stored one) is ignored too
        q_rand = memless.q_values(torch.randn(STATE_ROWS, H), encoder.encode([obs])[0], encoder.encode(ACTIONS))
        assert torch.equal(q0, q_rand)
        # but Q still depends on the current observation
        q_other = memless.q_values(
            torch.zeros(STATE_ROWS, H), encoder.encode(["junction: say left or right."])[0], encoder.encode(ACTIONS)
        )
        assert not torch.allclose(q0, q_other)


def test_memoryless_network_runs_in_learner_and_actor(encoder):
    net = RecurrentQNetwork(encoder.dim, hidden_size=H, seed=0, memory=False)
    learner = R2D2Learner(net, encoder, R2D2Config(burn_in_length=B, trace_length=T, n_step=2), action_set=ACTIONS)
    actor = QActor(RecurrentQNetwork(encoder.dim, hidden_size=H, seed=1, memory=False), encoder, epsilon=0.5)
    w = learner.get_weights()
    actor.load_weights(w.tensors, w.version)
    pairs = episodes(actor, n=3)
    assert all(np.count_nonzero(st) == 0 for _, st in pairs)
    core_before = {k: v.clone() for k, v in net.core.state_dict().items()}
    m = learner.step(batch_of(pairs))
    assert np.isfinite(m["learner/q_loss"])
    assert all(torch.equal(v, net.core.state_dict()[k]) for k, v in core_before.items())  # the unused core never moves
    t = learner._tensors(batch_of(pairs).items)
    _, q_taken, states = net.unroll(
        torch.randn_like(t["start"]), t["obs"], t["act"], t["rewards"], t["mask"], t["cands"], B
    )
    _, q_taken0, _ = net.unroll(
        torch.zeros_like(t["start"]), t["obs"], t["act"], t["rewards"], t["mask"], t["cands"], B
    )
    assert torch.equal(q_taken, q_taken0)
    assert torch.count_nonzero(states[:, 1:]) == 0  # every state after the (ignored) start one is zero
