"""Proof (c): offline token-level ILQL beats behaviour cloning on the random-walks task.

Task (trlx "randomwalks", rollout/envs/random_walks.py): 21-node random digraph (p_edge 0.1,
graph seed 1002), goal node "a"; the prompt is the start node's letter, the action the rest
of the walk as letters; reward = (10 - length) / (10 - shortest) in [0, 1], 0 for a walk
that never reaches the goal. Data set: 1000 episodes of the trlx random-walk policy
(collect seed 0): min 0, average ~0.12, max 1.0 -> LMRL-Gym anchors 0 / 50 / 100.

Both learners start from the same random-init tiny Llama (hidden 64, 2 layers, one token per
letter), see the same 500 minibatches of 64 episodes, Adam 1e-3:
  BC   = ILQLLearner(bc_only=True), decoded from its LM head (beta 0);
  ILQL = ILQLLearner (tau 0.7, CQL 0.1, gamma 0.99, Polyak 0.05 per step), decoded with
         log pi_beta + beta (min Q_target - V), beta 16.
Evaluation: 200 fresh episodes (reset seeds 10000..10199) per policy, mean return mapped by
`normalized_score` with the data set's anchors. BC is scored with sampling (temperature 1,
the imitation of the data policy) and greedily; the better of the two is the baseline.

Claim: ILQL (beta 16, greedy) scores >= BC's best + 25 points, and >= 70.
Measured (1 CPU thread, these seeds): BC sampled 41.2, BC greedy 20.7; ILQL beta 16 greedy
88.8, sampled 81.9 (margin 47.6). Other betas on the same ILQL model (exploration script):
beta 0 sampled 45.6 / greedy 0.0, beta 4 greedy 82.4, beta 64 greedy 95.2. 55-115 s.

Run: `pytest -m learning tests/learning/test_ilql_offline.py -s`.
"""

from __future__ import annotations

import random
import statistics
import types

import pytest
import torch

from shoal.learner.ilql.acting import ILQLPolicy
from shoal.learner.ilql.config import ILQLConfig
from shoal.learner.ilql.learning import ILQLLearner
from shoal.models import build_model_dir
from shoal.rollout.envs import collect, dataset_anchors, normalized_score, run_episode
from shoal.rollout.envs.random_walks import RandomWalkPolicy, RandomWalksEnv

pytestmark = pytest.mark.learning

STEPS, BATCH, EVAL_EPISODES, BETA, MARGIN = 500, 64, 200, 16.0, 25.0


class _Letters:
    def corpus(self) -> list[str]:
        return ["abcdefghijklmnopqrstu"]


def _train(model_dir, data, cfg: ILQLConfig) -> ILQLLearner:
    torch.manual_seed(0)
    learner = ILQLLearner(str(model_dir), cfg, seed=0)
    rng = random.Random(0)
    for _ in range(STEPS):
        learner.step(rng.sample(data, BATCH))
    return learner


def _score(env, learner, beta: float, temperature: float, anchors) -> float:
    pol = ILQLPolicy.from_learner(learner, beta=beta, temperature=temperature, max_new_tokens=env.max_length, seed=1)
    rets = [run_episode(env, pol, f"eval-{i}", 1, seed=10_000 + i).turns[0].reward for i in range(EVAL_EPISODES)]
    return normalized_score(statistics.mean(rets), *anchors)


def test_ilql_beats_behaviour_cloning_on_random_walks(tmp_path):
    torch.set_num_threads(1)
    env = RandomWalksEnv()
    data = [ep for _, ep in collect(env, [("random_walk", RandomWalkPolicy(env))], 1000, 0, 1).episodes]
    anchors = dataset_anchors(ep.turns[0].reward for ep in data)
    assert anchors[0] == 0.0 and anchors[2] == 1.0 and 0.05 < anchors[1] < 0.3
    cfg = types.SimpleNamespace(vocab_size=259, hidden_size=64, num_layers=2, num_heads=2)
    model_dir = build_model_dir(_Letters(), cfg, tmp_path / "policy", seed=0)

    bc = _train(model_dir, data, ILQLConfig(bc_only=True))
    bc_sampled = _score(env, bc, 0.0, 1.0, anchors)
    bc_greedy = _score(env, bc, 0.0, 0.0, anchors)
    ilql = _train(model_dir, data, ILQLConfig(target_alpha=0.05))
    ilql_greedy = _score(env, ilql, BETA, 0.0, anchors)
    ilql_sampled = _score(env, ilql, BETA, 1.0, anchors)
    print(
        f"\nrandom_walks LMRL scores (anchors {anchors}): BC sampled {bc_sampled:.1f}, BC greedy {bc_greedy:.1f}; "
        f"ILQL beta {BETA:g} greedy {ilql_greedy:.1f}, sampled {ilql_sampled:.1f}"
    )
    assert ilql_greedy >= max(bc_sampled, bc_greedy) + MARGIN
    assert ilql_greedy >= 70.0
    assert ilql_sampled > bc_sampled
