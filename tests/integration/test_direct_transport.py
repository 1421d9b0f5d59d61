"""Weights over Ray Direct Transport (`rollout.weight_transport=rdt`, gloo on CPU) through the
Ray program: a worker that joins loads through the object store until the group is formed
again with it; a worker that dies unnoticed makes the transfer fail, Ray kills the learner for
good, and the run goes on with a new learner from its newest checkpoint - also when the
transfer that fails is the run's final sync, after its last step."""

from __future__ import annotations

import os
import re
import signal
import time

import pytest

ray = pytest.importorskip("ray")

from tests.conftest import release_program, small_config, steps_by_hand  # noqa: E402

pytestmark = pytest.mark.integration

FIXED_P, FIXED_R = [[1, 5, 6, 7], [1, 9, 4]], [[8, 9, 10, 2], [11, 12]]


def _max_diff(a: list, b: list) -> float:
    return max(abs(x - y) for ra, rb in zip(a, b, strict=True) for x, y in zip(ra, rb, strict=True))


def _match_learner(prog) -> None:
    """Every healthy worker serves the learner's version with the learner's log-probs."""
    want = ray.get(prog.learner.logprobs.remote(FIXED_P, FIXED_R))
    version = ray.get(prog.learner.policy_version.remote())
    for w in prog.rollout.handles():
        assert ray.get(w.status.remote())["policy_version"] == version
        assert _max_diff(ray.get(w.logprobs.remote(FIXED_P, FIXED_R)), want) < 1e-4


def _kill_unnoticed(prog, slot: int) -> None:
    """The worker's process dies with no request failing; Ray restarts it outside the group."""
    pid = ray.get(prog.rollout.handle(slot).pid.remote())
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if ray.get(prog.rollout.handle(slot).pid.remote(), timeout=5) != pid:
                return
        except Exception:
            time.sleep(0.5)
    raise AssertionError(f"worker {slot} did not come back")


def _books_balance(prog, counters: dict, stats: dict) -> None:
    """Every prompt drawn is in the buffer's books; every item added is sampled, dropped or held."""
    assert counters["drawn"] == stats["buffer/added"] + stats["buffer/rejected_full"] + counters["rejected_nonfinite"]
    assert stats["buffer/added"] == stats["buffer/sampled"] + stats["buffer/dropped_stale"] + stats["buffer/size"]
    assert not prog.requeued


def _run_rdt_to_the_end(sft_models, tmp_path, monkeypatch, total: int, before) -> dict:
    """A run over `rdt` (checkpoints every 2 steps, lag 2): `before(prog)` breaks something,
    then the run goes to its end; what it reported, and the program."""
    from shoal.services import direct
    from shoal.services.metrics import MetricsReader
    from shoal.services.program import RayProgram
    from shoal.services.run import close_run, open_run

    monkeypatch.setattr(direct, "REGROUP_S", 0.0)  # a failed formation is tried again at once
    cfg = small_config(
        sft_models,
        tmp_path,
        f"run.total_steps={total}",
        "run.checkpoint_interval=2",
        "run.eval_prompts=0",
        "rollout.max_policy_lag=2",
        "rollout.weight_transport=rdt",
    )
    ctx = open_run(cfg)
    status, summary = "failed", {}
    prog = RayProgram(cfg, ctx)
    try:
        old_learner = prog.learner
        before(prog)
        last = prog.run(progress=False)
        counters = prog.counters(last)
        summary, status = counters, "finished"
        events = MetricsReader(ctx.redis_url).events(ctx.run_id)
        stats = ray.get(prog.buffer.stats.remote())
        _match_learner(prog)  # the workers serve the (new) learner's weights
    finally:
        close_run(ctx, status, summary)
        release_program(prog)
    learner_said = {
        kind: [e["message"] for e in events if e["kind"] == kind and e["message"].startswith("learner")]
        for kind in ("actor_died", "actor_restored")
    }
    return {"prog": prog, "cfg": cfg, "old_learner": old_learner, "counters": counters, "stats": stats, **learner_said}


def test_a_joining_worker_loads_from_the_object_store_until_the_group_is_formed_again(
    ray_local, sft_models, tmp_path, monkeypatch
):
    from shoal.services import direct
    from shoal.services.program import RayProgram
    from shoal.services.run import close_run, open_run

    monkeypatch.setattr(direct, "REGROUP_S", 0.0)
    cfg = small_config(sft_models, tmp_path, "run.eval_prompts=0", "rollout.weight_transport=rdt")
    ctx = open_run(cfg)
    prog = RayProgram(cfg, ctx)
    try:
        assert prog.direct.members == {0, 1}
        (new,) = prog.rollout.grow(1)
        deadline = time.monotonic() + 120
        while not prog.rollout.healthy(new) and time.monotonic() < deadline:
            prog.heal()  # it joins: the current weights through the object store
            time.sleep(0.2)
        assert prog.rollout.healthy(new)
        ray.get([ref for ref, (kind, _) in list(prog.pending.items()) if kind == "load"])
        prog.pending.clear()
        # the next sync boundary forms a group with all three ...
        prog.sync(wait=True)
        assert prog.direct.members == {0, 1, new} and prog.direct.formations == 2
        # ... and the sync after it reaches every worker over it
        for i in range(3):
            prog.launch(i)
        ray.get([ref for ref, (kind, _) in list(prog.pending.items()) if kind == "chain"])
        prog.pending.clear()
        assert ray.get(prog.learner.train_step.remote(prog.buffer))["learner/policy_version"] == 1
        prog.version, put = 1, prog.handle
        prog.sync(wait=True)
        assert prog.handle is put  # nothing new went through the object store
        _match_learner(prog)
    finally:
        close_run(ctx, "finished", {})
        release_program(prog)


def test_a_worker_dead_before_a_direct_sync_costs_the_learner_and_the_run_goes_on(
    ray_local, sft_models, tmp_path, monkeypatch
):
    from shoal.services.calls import dead_for_good
    from shoal.services.program import retaken

    total = 8

    def before(prog):
        # Worker 0 dies unnoticed (no request failed yet); Ray restarts its process, which is
        # not in the group: the direct sync to it fails, and Ray kills both ends for good.
        _kill_unnoticed(prog, 0)
        prog.sync(wait=True)
        # Ray kills the learner after the failed transfer asynchronously: wait for the kill, so
        # that the run meets the dead learner in its loop (the next test: in its final sync).
        deadline = time.monotonic() + 30
        while not dead_for_good(prog.learner) and time.monotonic() < deadline:
            time.sleep(0.2)

    r = _run_rdt_to_the_end(sft_models, tmp_path, monkeypatch, total, before)
    prog, counters, stats, said, back = r["prog"], r["counters"], r["stats"], r["actor_died"], r["actor_restored"]
    assert counters["learner_steps"] == total
    assert prog.learner is not r["old_learner"]  # replaced: Ray would not restart it
    assert counters["actor_deaths"]["learner"] == 1
    assert len(said) == 1 and "Ray will not restart it" in said[0], said
    assert len(back) == 1 and "back at step" in back[0], back
    _books_balance(prog, counters, stats)
    # the steps since the checkpoint, trained on again (none when the learner had saved the step
    # it died in before the driver heard of it)
    at = int(re.search(r"died at step (\d+)", said[0])[1])
    back_at = int(re.search(r"back at step (\d+)", back[0])[1])
    assert back[0].endswith(retaken(back_at, at)), back
    retaken_steps = max(at - back_at, 0)
    # sampled by the steps trained, taken again, and maybe the one the killed learner had begun
    assert 0 <= stats["buffer/sampled"] / r["cfg"].ppo.batch_size - (total + retaken_steps) <= 1
    assert prog.direct.formations >= 2  # the group was formed again with the new learner


def test_a_direct_transfer_failing_in_the_final_sync_costs_the_learner_and_the_lost_step_is_taken_again(
    ray_local, sft_models, tmp_path, monkeypatch
):
    total = 3

    def before(prog):
        steps_by_hand(prog, total)
        assert prog.version == total
        # The final sync's transfer to worker 0 fails; Ray kills the learner (checkpoint at
        # step 2) and the worker: the run replaces both, takes step 3 again and ends synced.
        _kill_unnoticed(prog, 0)

    r = _run_rdt_to_the_end(sft_models, tmp_path, monkeypatch, total, before)
    prog, counters, stats, back = r["prog"], r["counters"], r["stats"], r["actor_restored"]
    assert counters["learner_steps"] == total
    assert prog.learner is not r["old_learner"]
    assert counters["actor_deaths"]["learner"] == 1
    assert len(back) == 1 and "back at step 2" in back[0] and back[0].endswith("step 3 is taken again"), back
    _books_balance(prog, counters, stats)
    assert stats["buffer/sampled"] == (total + 1) * r["cfg"].ppo.batch_size  # step 3 twice


def test_weights_over_nccl_between_gpus(ray_local, sft_models, tmp_path):
    """On a machine with 2+ GPUs and cupy: the learner and one worker on their own GPU, the
    weights over nccl (GPU tensors), and the worker serves the learner's log-probs."""
    torch = pytest.importorskip("torch")
    if torch.cuda.device_count() < 2 or ray.available_resources().get("GPU", 0) < 2:
        pytest.skip("needs 2 GPUs visible to Ray (nccl cannot join two ranks on one GPU)")
    pytest.importorskip("cupy")  # Ray's nccl groups are built on cupy
    from shoal.services.program import RayProgram
    from shoal.services.run import close_run, open_run

    cfg = small_config(
        sft_models,
        tmp_path,
        "run.eval_prompts=0",
        "rollout.weight_transport=rdt",
        "rollout.num_workers=1",
        "rollout.num_gpus_per_worker=1",
        "rollout.engine=transformers",
        "run.learner_num_gpus=1",
    )
    ctx = open_run(cfg)
    prog = RayProgram(cfg, ctx)
    try:
        assert prog.direct.transport == "nccl" and prog.direct.members == {0}
        prog.launch(0)
        ray.get([ref for ref, (kind, _) in list(prog.pending.items()) if kind == "chain"])
        prog.pending.clear()
        assert ray.get(prog.learner.train_step.remote(prog.buffer))["learner/policy_version"] == 1
        prog.version, put = 1, prog.handle
        prog.sync(wait=True)
        assert prog.handle is put
        _match_learner(prog)
    finally:
        close_run(ctx, "finished", {})
        release_program(prog)
