"""Actors killed with SIGKILL mid-run (services/pools.py, services/program.py): the run goes
on with the healthy ones, counts one death (not one per re-send), re-queues what was lost,
brings the dead one back, finishes every step, and accounts for every prompt it drew."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

ray = pytest.importorskip("ray")

from tests.conftest import small_config  # noqa: E402

pytestmark = pytest.mark.integration


def _kill_when(prog, pool_name: str, at_version: int, done: dict) -> threading.Thread:
    """SIGKILL slot 0 of the pool once the learner reaches `at_version`."""

    def go():
        deadline = time.monotonic() + 300
        while prog.version < at_version and time.monotonic() < deadline:
            time.sleep(0.02)
        pool = getattr(prog, pool_name)
        pid = ray.get(pool.handle(0).pid.remote())
        os.kill(pid, signal.SIGKILL)
        done.update(pid=pid, version=prog.version)

    t = threading.Thread(target=go, daemon=True)
    t.start()
    return t


@pytest.mark.parametrize("pool_name", ["rollout", "scoring"])
def test_sigkill_of_a_worker_or_scorer_mid_run(pool_name, ray_local, sft_models, tmp_path):
    from shoal.services.program import RayProgram
    from shoal.services.run import close_run, open_run

    total = 16
    cfg = small_config(
        sft_models, tmp_path, f"run.total_steps={total}", "reward.placement=actors", "rollout.max_policy_lag=2"
    )
    ctx = open_run(cfg)
    status, summary = "failed", {}
    try:
        prog = RayProgram(cfg, ctx)
        killed: dict = {}
        killer = _kill_when(prog, pool_name, 3, killed)
        last = prog.run(progress=False)
        killer.join(timeout=30)
        assert killed, "the actor was not killed"
        pool = getattr(prog, pool_name)
        deadline = time.monotonic() + 90  # the dead one comes back (Ray restarts it; weights re-sent)
        while not pool.healthy(0) and time.monotonic() < deadline:
            prog.heal()
            time.sleep(0.2)
        assert pool.healthy(0), pool.slots[0]
        assert ray.get(pool.handle(0).pid.remote()) != killed["pid"]
        counters = prog.counters(last)
        summary = counters
        status = "finished"
    finally:
        close_run(ctx, status, summary)

    assert counters["learner_steps"] == total
    kind = "rollout" if pool_name == "rollout" else "reward"
    assert counters["actor_deaths"] == {
        "rollout": int(kind == "rollout"),
        "reward": int(kind == "reward"),
        "learner": 0,
    }
    # every prompt drawn is in the buffer's books: trained, dropped stale, still held, or refused
    stats = ray.get(prog.buffer.stats.remote())
    assert counters["drawn"] == stats["buffer/added"] + stats["buffer/rejected_full"] + counters["rejected_nonfinite"]
    assert stats["buffer/added"] == stats["buffer/sampled"] + stats["buffer/dropped_stale"] + stats["buffer/size"]
    assert stats["buffer/sampled"] == total * cfg.ppo.batch_size
    ppr = cfg.rollout.prompts_per_request  # the requests lost in flight, re-sent: none, one or two
    assert counters["requeued"] % ppr == 0 and counters["requeued"] <= cfg.rollout.num_workers * ppr
    assert not prog.requeued


def test_sigkill_of_the_learner_resumes_from_its_checkpoint(ray_local, sft_models, tmp_path):
    from shoal.services.metrics import MetricsReader
    from shoal.services.program import RayProgram
    from shoal.services.run import close_run, open_run

    total = 14
    cfg = small_config(
        sft_models, tmp_path, f"run.total_steps={total}", "run.checkpoint_interval=4", "rollout.max_policy_lag=2"
    )
    ctx = open_run(cfg)
    status, summary = "failed", {}
    try:
        prog = RayProgram(cfg, ctx)
        killed: dict = {}

        def go():
            while prog.version < 6:
                time.sleep(0.02)
            pid = ray.get(prog.learner.pid.remote())
            os.kill(pid, signal.SIGKILL)
            killed.update(pid=pid, version=prog.version)

        killer = threading.Thread(target=go, daemon=True)
        killer.start()
        last = prog.run(progress=False)
        killer.join(timeout=30)
        assert killed
        counters = prog.counters(last)
        summary, status = counters, "finished"
        events = MetricsReader(ctx.redis_url).events(ctx.run_id)
    finally:
        close_run(ctx, status, summary)
    assert counters["learner_steps"] == total and counters["actor_deaths"]["learner"] == 1
    back = [e["message"] for e in events if e["kind"] == "actor_restored" and e["message"].startswith("learner")]
    assert len(back) == 1 and "back at step 4 from" in back[0] and "step_00000004" in back[0], back
    stats = ray.get(prog.buffer.stats.remote())
    assert counters["drawn"] == stats["buffer/added"] + stats["buffer/rejected_full"] + counters["rejected_nonfinite"]
    assert stats["buffer/added"] == stats["buffer/sampled"] + stats["buffer/dropped_stale"] + stats["buffer/size"]
    assert ray.get(prog.learner.pid.remote()) != killed["pid"]


def test_sigkill_of_the_replay_buffer_ends_the_run_in_one_line_that_says_how_to_go_on(ray_local, sft_models, tmp_path):
    """Not restarted yet (its contents would need a snapshot per insert): the run stops with
    a RunError naming the buffer and the --resume command; its checkpoints stay usable."""
    from shoal.services.program import RayProgram
    from shoal.services.run import close_run, open_run
    from shoal.utils import RunError

    cfg = small_config(sft_models, tmp_path, "run.total_steps=40", "run.checkpoint_interval=2")
    ctx = open_run(cfg)
    try:
        prog = RayProgram(cfg, ctx)

        def go():
            while prog.version < 3:
                time.sleep(0.02)
            os.kill(ray.get(prog.buffer.pid.remote()), signal.SIGKILL)

        threading.Thread(target=go, daemon=True).start()
        with pytest.raises(RunError, match=r"^the replay buffer died .*--resume"):
            prog.run(progress=False)
    finally:
        close_run(ctx, "failed", {})
    from shoal.learner.checkpoint import latest_checkpoint

    assert latest_checkpoint(ctx.run_dir) is not None
