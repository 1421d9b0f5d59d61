"""Proof (d) of issue 3: the multi-turn algorithms through the Ray program.

R2D2: three EpisodeActors (recurrent-Q agents, Ape-X epsilons) feed the prioritized sequence
replay actor, the learner actor samples it, sends priorities back, reports dQ, and
broadcasts weights; one in five episodes hits a NaN reward (FaultyEnv) and is dropped,
counted and reported. ILQL: offline data set + online workers with ILQL decoding.
Everything lands in a real (embedded) Redis.
"""

from __future__ import annotations

import pytest

ray = pytest.importorskip("ray")

from shoal.services.config import load_config  # noqa: E402
from shoal.services.metrics import MetricsReader, resolve_redis  # noqa: E402

pytestmark = pytest.mark.integration


def _cfg(tmp_path, *extra):
    return load_config(
        None, [f"run.runs_dir={tmp_path}/runs", "dashboard.enabled=false", "env.eval_episodes=6", *extra]
    )


def _reader(tmp_path):
    return resolve_redis(None, str(tmp_path / "runs"))


def test_r2d2_runs_through_the_ray_program(ray_local, tmp_path):
    from shoal.services.program import run_ray

    steps = 30
    cfg = _cfg(
        tmp_path,
        "run.algorithm=r2d2",
        f"run.total_steps={steps}",
        "rollout.num_workers=3",
        "rollout.num_cpus_per_worker=1",
        "env.name=shoal.rollout.envs.faults:FaultyEnv",
        "env.kwargs={fault: nan, inner: cue_recall, every: 5, at_turn: 2, corridor_length: 4}",
        "env.episodes_per_request=2",
        "replay.min_size_to_sample=16",
        "r2d2.batch_size=8",
        "r2d2.dq_interval=10",
        "r2d2.dq_episodes=4",
        "rollout.sync_interval=5",
    )
    summary = run_ray(cfg, progress=False)
    assert summary["learner_steps"] == steps
    assert summary["episodes"] > 0 and summary["replay_inserts"] > 0
    assert summary["dropped_episodes"] > 0, summary  # seeds divisible by 5 hit a NaN reward
    assert "success_rate" in summary["before"] and "success_rate" in summary["after"]
    assert list((tmp_path / "runs" / summary["run_id"] / "checkpoints").iterdir())
    url, embedded = _reader(tmp_path)
    try:
        reader = MetricsReader(url)
        run = summary["run_id"]
        assert reader.run_info(run)["status"] == "finished"
        latest = reader.latest(run)
        for name in [
            "learner/q_loss",
            "learner/priority_mean",
            "learner/policy_version",
            "buffer/size",
            "buffer/policy_lag_mean",
            "buffer/priority_mean",
            "rollout/episode_return_mean",
            "rollout/turns_per_s",
            "rollout/dropped_episodes",
            "dq/zero",
            "dq/stored",
            "dq/stored_burn_in",
            "weights/sync_s",
        ]:
            assert name in latest, name
        assert latest["buffer/priority_mean"]["v"] < 1.0  # the learner's TD priorities replaced the initial 1.0
        workers = reader.workers(run)
        assert set(workers) == {"rollout-0", "rollout-1", "rollout-2"}
        assert all(w["engine"] == "recurrent_q" and w["policy_version"] == steps for w in workers.values())
        drops = [e["message"] for e in reader.events(run) if e["kind"] == "episode_dropped"]
        train_drops = [m for m in drops if "episode 'rollout-" in m]
        assert train_drops and all("task 'faulty_cue_recall'" in m and "non-finite reward" in m for m in drops), drops[
            :3
        ]
    finally:
        if embedded is not None:
            embedded.close()


def test_ilql_offline_data_and_online_workers_through_the_ray_program(ray_local, tmp_path):
    from shoal.rollout.envs import collect, write_episodes
    from shoal.rollout.envs.random_walks import RandomWalkPolicy, RandomWalksEnv
    from shoal.services.program import run_ray

    env = RandomWalksEnv()
    data = [ep for _, ep in collect(env, [("random_walk", RandomWalkPolicy(env))], 120, 0, 1).episodes]
    path = tmp_path / "walks.jsonl"
    write_episodes(path, data)
    cfg = _cfg(
        tmp_path,
        "run.algorithm=ilql",
        "run.total_steps=6",
        "rollout.num_workers=2",
        "env.name=random_walks",
        "env.max_turns=1",
        f"ilql.dataset={path}",
        "ilql.online=true",
        "ilql.batch_size=16",
        "ilql.max_new_tokens=10",
        "replay.min_size_to_sample=16",
        "replay.capacity=400",
        "env.episodes_per_request=4",
    )
    summary = run_ray(cfg, progress=False)
    assert summary["learner_steps"] == 6
    assert summary["episodes"] > 0  # online episodes went in beside the data set
    assert summary["replay_inserts"] > len(data)
    assert "lmrl_score" in summary["before"] and "lmrl_score" in summary["after"]
    url, embedded = _reader(tmp_path)
    try:
        reader = MetricsReader(url)
        latest = reader.latest(summary["run_id"])
        for name in [
            "learner/ilql_loss",
            "learner/ilql_q_loss",
            "learner/ilql_cql_loss",
            "buffer/size",
            "rollout/episode_return_mean",
        ]:
            assert name in latest, name
        workers = reader.workers(summary["run_id"])
        assert all(w["engine"] == "ilql_transformers" and w["policy_version"] == 6 for w in workers.values())
    finally:
        if embedded is not None:
            embedded.close()
