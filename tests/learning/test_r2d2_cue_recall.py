"""Proof (a): on cue recall, stored state + burn-in reads the cue at the junction above chance;
zero state stays at chance. Three seeds; the R2D2 dQ ordering holds on each.

Setup (fixed seeds 0, 1, 2, one CPU thread; a seed sets the encoder's tokenizer corpus and
weights, the Q network's init, the replay's sampling and every training / evaluation reset):
- CueRecallEnv(corridor_length=K=6): cue at turn 0, junction at turn 7 (episodes of 8 turns
  when every action is legal; the actor scores env.legal_actions() = go/left/right).
- Items: burn_in 3, trace 3, period 2 (cut_episode, pad_start=False), L = 7 = K + 1, so the
  item that starts at turn 0 (the only one holding the cue) ends at turn 6 and never reaches
  the junction, and the items whose trace holds the junction start at turns 2 and 4, after the
  cue. With truncated BPTT the gradient never crosses an item boundary, so a zero start state
  gives the learner NO information about the cue at the junction and the greedy agent is at
  chance (50%). With the stored state (written by the actor's network, which saw the cue) +
  burn-in, the cue is in the state entering the trace.
- Nothing ever gets a gradient for WRITING the cue at turn 0 (turn 0 is only in the first
  item's burn-in, far from any junction loss): the write comes from the LSTM's random input
  weights, kept over the corridor by the forget-gate bias (3.0). The core trains at
  core_lr_scale = 0.1 of the head's lr. (Measured earlier on another machine, seed 0 only:
  core at full lr -> 0.55-0.7 success; core frozen -> 1.0 with dQ stored = 0; 0.1 and 0.03 ->
  0.97-0.98. Here a frozen core gives 0.44 / 0.56 on seeds 1 / 5, see below.)
- Encoder: a tiny random-init Llama (1 layer, hidden 64) with a BPE tokenizer trained on the
  env's own texts, frozen, mean-pooled and cached (learner/r2d2/networks.py).
- Network: LSTM 64, dueling head over the candidates, read-out from (h, c) and the observation.
- Actor and learner in one loop: 400 episodes (epsilon 0.3), 4 learner steps of batch 16 per
  episode from PrioritizedSequenceReplay (capacity 300 items); the actor syncs weights every
  20 learner steps (so stored states are a little stale, as in R2D2). ~1550 updates.
- Evaluation, 200 greedy episodes on reset seeds 10_000_000 * (7 + seed) + i:
  success = the episode ends correct (a greedy agent may also say the illegal "go" at the
  junction and loop, which pulls success BELOW 0.5 for a zero-state learner);
  recall = at the first junction turn the learner's Q(left) vs Q(right) picks the cued side
  (the memory read-out itself; 0.5 for anything that does not read the cue).
- Measured on this machine (2 cores, shared; the test's code as written, seeds 0-5; the test
  runs seeds 0-2; dQ of the STORED-state learner, recent = its last 40 episodes, lag <= ~80
  updates; old = episodes 200-160 back, ~800 updates old):

    seed | success zero stored | recall zero stored | dQ recent: zero  zero+bi stored stored+bi | old: stored stored+bi
      0  |   0.510  0.820      |   0.525  0.805     |          1.451  0.809    0.192   0.096     |      3.191   1.067
      1  |   0.535  0.530      |   0.470  0.530     |          2.492  1.175    0.879   0.249     |      2.607   0.824
      2  |   0.500  0.645      |   0.500  0.660     |          2.150  1.234    0.553   0.175     |      1.210   0.545
      3  |   0.395  0.780      |   0.400  0.680     |          1.399  0.513    0.086   0.037     |      1.047   0.414
      4  |   0.195  0.990      |   0.495  0.995     |          1.192  0.633    0.066   0.024     |      1.118   0.288
      5  |   0.490  0.555      |   0.475  0.655     |          2.584  1.416    0.757   0.290     |      2.402   1.111

  So the stored-state learner's recall is SEED-DEPENDENT: 0.53-0.995 (seed 1 stays at chance,
  seed 5 barely above), while zero state is at chance on every seed (recall 0.40-0.525). The
  old single-seed claim (0.97 vs 0.45, seed 0, another machine; 0.84 vs 0.39 on another clone;
  0.82 vs 0.51 here) was one draw from that spread. Seed 5's failure mode: "left" on every
  left cue, "go" (illegal) then "left" on right cues - Q(right) never wins; the cue is in the
  state (a ridge probe on the untrained network's junction state decodes it 100% on all six
  seeds), the head does not learn to read it on every seed. Variants tried on the weak seeds
  (stored success after 400 episodes unless said; none fixes the seed dependence): 800 episodes
  (seed 1: 0.58-0.81, seed 5: 0.58-0.80 between checkpoints); core frozen (0.44, 0.56);
  core_lr_scale 0.3 (0.48, 0.74); LSTM 128 (0.46, 0.94); epsilon 0.1 (0.91, 0.44); epsilon 0.5
  (seeds 1, 5, 2: 0.81, 0.58, 0.52); epsilon 0.7 (0.57, 0.66 on seeds 1, 5); forget bias 5
  (0.77, 0.82); lr 3e-3 (seeds 1, 5, 2: 0.58, 0.47, 0.59); 8 updates per episode (0.65, 0.78,
  0.58); encoder hidden 128 with 1 or 2 layers (0.70-0.73, 0.56-0.58).
- Assertions (margins about half the measured gap, the pooled ones checked on every 3 of the
  6 measured seeds):
  per seed: zero recall <= 0.65 (chance; measured <= 0.525);
            dQ of the stored-state learner, recent: zero >= 1.3 x zero+burn-in (measured min
            1.74), zero+burn-in >= 1.1 x stored (min 1.34, seed 1), stored >= 1.4 x stored+burn-in
            (min 2.0), zero >= 5 x stored+burn-in (min 8.9, seed 5; the old 10x failed there);
            dQ rises with lag: old >= 1.5 x recent for stored (min 2.2) and stored+burn-in (min 3.1);
  pooled over the 3 seeds: mean stored recall >= mean zero recall + 0.08 (seeds 0-2: 0.665 vs
            0.498, gap 0.167; smallest over any 3 of the 6 seeds 0.133); mean stored success
            > mean zero success (0.665 vs 0.515; smallest over any 3 of 6: +0.068).
  NOT asserted (fragile, measured above): any absolute stored success or recall bound (seed
  1 is at chance), a per-seed stored > zero gap (seed 1: success -0.005, recall +0.06).
  Run time here: 181 s for the 3 seeds (~30 s per seed and mode) with another job on the other
  core; single runs took up to 2-3x that while the machine was heavily loaded (load 7-8).
Run: .venv/bin/python -m pytest -m learning tests/learning/test_r2d2_cue_recall.py -s -p no:cacheprovider
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from shoal.buffer.prioritized import PrioritizedSequenceReplay
from shoal.buffer.sequences import cut_episode
from shoal.learner.r2d2.acting import QActor
from shoal.learner.r2d2.config import R2D2Config
from shoal.learner.r2d2.learning import R2D2Learner
from shoal.learner.r2d2.networks import RecurrentQNetwork, build_tiny_encoder
from shoal.rollout.envs.base import env_corpus, episode_success
from shoal.rollout.envs.cue_recall import ACTIONS, CueRecallEnv
from tests.learning.r2d2_loop import learn_after_episode, sync_actor

K = 6
BURN_IN, TRACE, PERIOD = 3, 3, 2
SEEDS = (0, 1, 2)
EVAL_EPISODES = 200


def make_encoder(seed: int = 0):
    return build_tiny_encoder(env_corpus(CueRecallEnv(corridor_length=K), num_episodes=60, seed=seed), seed=seed)


def train(
    start_state: str,
    encoder,
    seed: int = 0,
    episodes: int = 400,
    updates_per_episode: int = 4,
    sync_period: int = 20,
    batch_size: int = 16,
    hidden: int = 64,
):
    torch.manual_seed(seed)
    env = CueRecallEnv(corridor_length=K)
    net = RecurrentQNetwork(encoder.dim, hidden_size=hidden, forget_bias=3.0, seed=seed)
    cfg = R2D2Config(
        burn_in_length=BURN_IN,
        trace_length=TRACE,
        n_step=3,
        gamma=0.95,
        learning_rate=1e-3,
        target_update_period=50,
        start_state=start_state,
        core_lr_scale=0.1,
    )
    learner = R2D2Learner(net, encoder, cfg, action_set=ACTIONS)
    actor = QActor(
        RecurrentQNetwork(encoder.dim, hidden_size=hidden, seed=seed), encoder, epsilon=0.3, worker_id="actor-0"
    )
    sync_actor(learner, actor)
    replay = PrioritizedSequenceReplay(capacity=300, min_size_to_sample=64, seed=seed)
    history = []
    for i in range(episodes):
        ep, states = actor.run_episode(env, f"train-{i}", seed=seed * 100_000 + i)
        history.append((ep, states))
        replay.add(cut_episode(ep, states, BURN_IN, TRACE, PERIOD))
        learn_after_episode(learner, actor, replay, updates_per_episode, batch_size, sync_period)
    return learner, actor, history


def evaluate(learner, encoder, n: int = EVAL_EPISODES, seed: int = 7) -> dict[str, float]:
    """Greedy success, and recall: whether Q(left) vs Q(right) at the first junction turn
    picks the cue (the memory read-out, free of the illegal-"go" loops that success counts)."""
    env = CueRecallEnv(corridor_length=K)
    net = learner.network
    actor = QActor(net, encoder, epsilon=0.0)
    cands = encoder.encode(ACTIONS)
    left, right = ACTIONS.index("left"), ACTIONS.index("right")
    wins, recall = [], []
    for i in range(n):
        ep, states = actor.run_episode(env, f"eval-{i}", seed=10_000_000 * seed + i, greedy=True)
        wins.append(episode_success(ep))
        cue = "left" if ep.turns[0].observation.startswith("cue: left") else "right"
        junction = ep.turns[K + 1].observation  # every action walks on in the corridor
        with torch.no_grad():
            q = net.q_values(
                torch.from_numpy(np.asarray(states[K + 1], dtype=np.float32)), encoder.encode([junction])[0], cands
            )
        recall.append(("left" if q[left] > q[right] else "right") == cue)
    net.train()
    return {"success": float(np.mean(wins)), "recall": float(np.mean(recall))}


def run_seed(seed: int) -> dict[str, dict]:
    encoder = make_encoder(seed)
    out = {}
    for mode in ("zero", "stored"):
        learner, _, history = train(mode, encoder, seed=seed)
        out[mode] = {
            **evaluate(learner, encoder, seed=7 + seed),
            "dq_recent": learner.dq_diagnostic(history[-40:], sequence_period=PERIOD),
            "dq_old": learner.dq_diagnostic(history[-200:-160], sequence_period=PERIOD),
        }
    return out


@pytest.mark.learning
def test_stored_state_burn_in_recalls_zero_state_does_not():
    torch.set_num_threads(1)
    t0 = time.time()
    results = {}
    for seed in SEEDS:
        results[seed] = run_seed(seed)
        r = results[seed]
        d, o = r["stored"]["dq_recent"], r["stored"]["dq_old"]
        print(
            f"\nseed {seed}: success zero {r['zero']['success']:.3f} stored {r['stored']['success']:.3f} | "
            f"recall zero {r['zero']['recall']:.3f} stored {r['stored']['recall']:.3f} | dQ recent "
            f"{d['dq/zero']:.3f} {d['dq/zero_burn_in']:.3f} {d['dq/stored']:.3f} {d['dq/stored_burn_in']:.3f} | "
            f"old stored {o['dq/stored']:.3f} stored+bi {o['dq/stored_burn_in']:.3f} ({time.time() - t0:.0f}s)"
        )

    def mean(mode: str, key: str) -> float:
        return float(np.mean([results[s][mode][key] for s in SEEDS]))

    summary = {f"{m}_{k}": round(mean(m, k), 3) for m in ("zero", "stored") for k in ("success", "recall")}
    print(f"R2D2 cue recall K={K} burn_in={BURN_IN} trace={TRACE} seeds {SEEDS}: {summary} ({time.time() - t0:.0f}s)")

    for seed in SEEDS:
        r = results[seed]
        # Zero start state: at chance on every seed (the cue never reaches its trace).
        assert r["zero"]["recall"] <= 0.65, (seed, r["zero"])
        # dQ of the stored-state learner on its recent replay orders as in R2D2 (zero > burn-in
        # only > stored > stored + burn-in) and rises with parameter lag; factors from the table.
        dq, dq_old = r["stored"]["dq_recent"], r["stored"]["dq_old"]
        assert dq["dq/zero"] >= 1.3 * dq["dq/zero_burn_in"], (seed, dq)
        assert dq["dq/zero_burn_in"] >= 1.1 * dq["dq/stored"], (seed, dq)
        assert dq["dq/stored"] >= 1.4 * dq["dq/stored_burn_in"], (seed, dq)
        assert dq["dq/zero"] >= 5 * dq["dq/stored_burn_in"], (seed, dq)
        assert dq_old["dq/stored"] >= 1.5 * dq["dq/stored"], (seed, dq, dq_old)
        assert dq_old["dq/stored_burn_in"] >= 1.5 * dq["dq/stored_burn_in"], (seed, dq, dq_old)
    # Stored state + burn-in reads the cue above chance, pooled over the seeds (per seed it is
    # not robust: seed 1 stays at chance, see the module docstring).
    assert mean("stored", "recall") >= mean("zero", "recall") + 0.08, summary
    assert mean("stored", "success") > mean("zero", "success"), summary
