"""The in-process runner (`services/local.py`) on real models: regressions of the review's bugs.

B3: with sync_interval > 1 the "after" evaluation must see the learner's final weights.
B2: offline ILQL data (policy_version = -1) with a staleness bound must not be dropped, and the
run must finish instead of looping on an empty replay.
"""

from __future__ import annotations

import pytest

from shoal.services import local
from shoal.services.config import load_config
from tests.conftest import small_config

pytestmark = pytest.mark.integration


def test_after_evaluation_sees_the_final_weights(sft_models, tmp_path, monkeypatch):
    seen: list[tuple[int, list[int]]] = []
    evaluate = local.LocalPipeline.evaluate

    def spy(self):
        seen.append((self.learner.policy_version, [w.policy_version for w in self.workers]))
        return evaluate(self)

    monkeypatch.setattr(local.LocalPipeline, "evaluate", spy)
    cfg = small_config(
        sft_models, tmp_path, "run.mode=local", "run.total_steps=3", "rollout.sync_interval=2", "run.eval_prompts=4"
    )
    summary = local.run_local(cfg, progress=False)
    assert summary["learner_steps"] == 3
    assert seen[-1] == (3, [3, 3]), seen  # before the fix the workers still served v2


@pytest.mark.timeout(300)
def test_offline_ilql_with_a_staleness_bound_trains(tmp_path):
    from shoal.rollout.envs import collect, write_episodes
    from shoal.rollout.envs.random_walks import RandomWalkPolicy, RandomWalksEnv

    env = RandomWalksEnv()
    data = tmp_path / "walks.jsonl"
    write_episodes(data, [ep for _, ep in collect(env, [("random_walk", RandomWalkPolicy(env))], 80, 0, 1).episodes])
    cfg = load_config(
        None,
        [
            "run.algorithm=ilql",
            "run.mode=local",
            f"run.runs_dir={tmp_path}/runs",
            "run.total_steps=3",
            "dashboard.enabled=false",
            "env.name=random_walks",
            "env.max_turns=1",
            "env.eval_episodes=4",
            f"ilql.dataset={data}",
            "ilql.batch_size=8",
            "replay.min_size_to_sample=16",
            "replay.max_policy_lag=0",
            "rollout.num_workers=1",
        ],
    )
    summary = local.run_local(cfg, progress=False)
    assert summary["learner_steps"] == 3
    assert summary["dropped_stale"] == 0
