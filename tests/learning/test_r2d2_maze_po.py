"""Proof (b): on the partially observed maze, the recurrent R2D2 learner beats a memoryless one.

Setup (all fixed seeds, one CPU thread):
- MazeEnv PO ("maze_po"), LMRL-Gym's double-T layout (25 start cells, goal at the bottom of
  the stem), max_steps 30 (the farthest start is 12 moves from the goal). The observation is
  only the local walls, e.g. "walls: up, down." for all 8 cells inside the two horizontal
  corridors, where half of them must go left and half right; 7 observation kinds in all.
- Memoryless = `RecurrentQNetwork(memory=False)`: same layers, same seed, same initial weights,
  same learner, actor, replay, budget and hyper-parameters; only the state is zeroed, so Q
  depends on the current observation alone (no history, no previous action or reward). A
  greedy memoryless agent is a fixed map observation -> move, and enumerating all 4^7 such maps
  (`best_memoryless_success`) shows NONE solves more than 0.51 of the 100 evaluation starts:
  every one of them walks into a wall forever or shuttles between two corridor cells from some
  starts. The recurrent agent can be perfect (MazeBeliefPolicy, which knows the layout and
  tracks the cells consistent with its history: success 1.0, mean return -7.58; the oracle
  that reads the true position: -7.2; uniform random: 0.08, -28.5).
- Encoder: a tiny random-init Llama (1 layer, hidden 64) + BPE trained on the env's own
  texts, frozen, mean-pooled and cached. Network: LSTM 64, dueling head over up/down/left/right.
- R2D2: burn-in 4, trace 6, period 3 (stored start states), n_step 5, gamma 0.95, lr 1e-3,
  target copy every 50 steps, core_lr_scale 0.1, PrioritizedSequenceReplay capacity 500.
  Actor and learner in one loop: 1000 episodes, epsilon 0.2 -> 0.05 (linear), 4 learner steps
  of batch 16 after each (~4000 updates); the actor syncs weights every 20 learner steps.
- Evaluation: greedy success and mean return on 100 held-out reset seeds 70_000_000 + i.
- Measured (this machine, training seed 0, the test as written): recurrent success 1.0, mean
  return -8.83; memoryless 0.13, -26.23 (it settles on a map that loops from most starts).
  Run time 69 s on an idle 2-core machine (recurrent 41 s, memoryless 26 s, encoder and the
  enumeration ~2 s); ~80 s with a second job on the other core; when the machine was heavily
  loaded (load average 6-10 on 2 cores) one 1000-episode run took up to ~230 s.
  Sizing, the same script with training seeds 0-8: recurrent 1.0 1.0 1.0 0.77 1.0 0.93 1.0 1.0
  1.0 (returns -7.9 .. -11.9); memoryless 0.13 x 7 and 0.40 x 2 (returns -26.2 / -20.3); the
  smallest per-seed gap 0.60 in success and 11.6 in mean return. The recurrent greedy policy still
  flips a few start cells between checkpoints (seed 3: 1.0 at 500-700 episodes, 0.77 at 1000).
  Variants tried (recurrent greedy success): constant epsilon 0.2: 0.77-1.0 (seeds 0-5);
  gamma 0.9 / n_step 3: down to 0.52 late in training; core at full lr (with gamma 0.9,
  epsilon 0.3, seed 0): 0.74-0.88 after 400 episodes; target copy every 100, or batch 32 with
  half the steps: 0.77-1.0 (seeds 0, 2, 3, 5). None was steadier than this one.
  Margins: recurrent success >= 0.7; memoryless <= the enumerated bound 0.51 (so it cannot
  pass by luck); recurrent - memoryless >= 0.4 in success and >= 8 in mean return.
Run: .venv/bin/python -m pytest -m learning tests/learning/test_r2d2_maze_po.py -s
"""

from __future__ import annotations

import itertools
import random
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
from shoal.rollout.envs.maze import ACTIONS, MazeEnv
from shoal.rollout.envs.registry import make_env
from tests.learning.r2d2_loop import learn_after_episode, sync_actor

MAX_STEPS = 30
BURN_IN, TRACE, PERIOD = 4, 6, 3
EPISODES, UPDATES_PER_EPISODE = 1000, 4
EPSILON_START, EPSILON_END = 0.2, 0.05  # linear over the episodes
EVAL_SEEDS = [70_000_000 + i for i in range(100)]


def maze() -> MazeEnv:
    return make_env("maze_po", layout="double_t", max_steps=MAX_STEPS)


def make_encoder(seed: int = 0):
    return build_tiny_encoder(env_corpus(maze(), num_episodes=60, seed=seed), seed=seed)


def train(
    memory: bool,
    encoder,
    seed: int = 0,
    episodes: int = EPISODES,
    updates_per_episode: int = UPDATES_PER_EPISODE,
    sync_period: int = 20,
    batch_size: int = 16,
    hidden: int = 64,
):
    torch.manual_seed(seed)
    env = maze()
    net = RecurrentQNetwork(encoder.dim, hidden_size=hidden, forget_bias=3.0, seed=seed, memory=memory)
    cfg = R2D2Config(
        burn_in_length=BURN_IN,
        trace_length=TRACE,
        n_step=5,
        gamma=0.95,
        learning_rate=1e-3,
        target_update_period=50,
        start_state="stored",
        core_lr_scale=0.1,
    )
    learner = R2D2Learner(net, encoder, cfg, action_set=ACTIONS)
    actor = QActor(
        RecurrentQNetwork(encoder.dim, hidden_size=hidden, seed=seed, memory=memory),
        encoder,
        epsilon=EPSILON_START,
        worker_id="actor-0",
    )
    sync_actor(learner, actor)
    replay = PrioritizedSequenceReplay(capacity=500, min_size_to_sample=64, seed=seed)
    for i in range(episodes):
        actor.epsilon = EPSILON_START + (EPSILON_END - EPSILON_START) * i / max(1, episodes - 1)
        ep, states = actor.run_episode(env, f"train-{i}", seed=seed * 100_000 + i, max_turns=MAX_STEPS)
        replay.add(cut_episode(ep, states, BURN_IN, TRACE, PERIOD))
        learn_after_episode(learner, actor, replay, updates_per_episode, batch_size, sync_period)
    return learner


def evaluate(net: RecurrentQNetwork, encoder) -> tuple[float, float]:
    """Greedy (success rate, mean return) on the held-out EVAL_SEEDS."""
    env, actor = maze(), QActor(net, encoder, epsilon=0.0)
    eps = [
        actor.run_episode(env, f"eval-{i}", seed=s, greedy=True, max_turns=MAX_STEPS)[0]
        for i, s in enumerate(EVAL_SEEDS)
    ]
    net.train()
    return float(np.mean([episode_success(e) for e in eps])), float(
        np.mean([sum(t.reward for t in e.turns) for e in eps])
    )


def best_memoryless_success(env: MazeEnv, seeds: list[int], max_steps: int) -> float:
    """The best success rate over `seeds` of ANY deterministic map observation -> move (what a
    greedy memoryless agent is): all 4^(observation kinds) maps, run on the cell graph."""
    cells = sorted(env.goal_distance)
    idx = {c: i for i, c in enumerate(cells)}
    kinds = sorted({env.observe(c) for c in env.starts})
    kind = np.array([kinds.index(env.observe(c)) if c != env.goal else 0 for c in cells])
    nxt = np.array([[idx[c] if c == env.goal else idx[env.moved(c, a)] for a in ACTIONS] for c in cells])
    maps = np.array(list(itertools.product(range(len(ACTIONS)), repeat=len(kinds))))  # [M, kinds]
    starts, counts = np.unique(
        [idx[random.Random(s).choice(env.starts)] for s in seeds], return_counts=True
    )  # as env.reset(seed)
    pos = np.broadcast_to(starts, (len(maps), len(starts))).copy()
    for _ in range(max_steps):
        pos = nxt[pos, np.take_along_axis(maps, kind[pos], axis=1)]
    return float(((pos == idx[env.goal]) * counts).sum(1).max() / len(seeds))


@pytest.mark.learning
def test_recurrent_beats_memoryless_on_po_maze():
    torch.set_num_threads(1)
    t0 = time.time()
    env = maze()
    # the reset seeds reproduce the start cells the bound enumerates
    for s in EVAL_SEEDS[:5]:
        env.reset(seed=s)
        assert env.position == random.Random(s).choice(env.starts)
    bound = best_memoryless_success(env, EVAL_SEEDS, MAX_STEPS)
    encoder = make_encoder()
    results = {}
    for name, memory in (("recurrent", True), ("memoryless", False)):
        t1 = time.time()
        learner = train(memory, encoder)
        success, ret = evaluate(learner.network, encoder)
        results[name] = {"success": success, "return": round(ret, 2), "seconds": round(time.time() - t1)}
    print(
        f"\nR2D2 PO maze (double_t, max_steps {MAX_STEPS}): {results}; best memoryless map {bound:.2f} ({time.time() - t0:.0f}s)"
    )
    rec, mem = results["recurrent"]["success"], results["memoryless"]["success"]
    assert bound <= 0.51, bound
    assert mem <= bound + 1e-9, results  # a memoryless greedy agent is one of the enumerated maps
    assert rec >= 0.7, results
    assert rec - mem >= 0.4, results
    assert results["recurrent"]["return"] >= results["memoryless"]["return"] + 8.0, results
