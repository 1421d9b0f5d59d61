"""Actors killed with SIGKILL mid-run (services/pools.py, services/program.py): the run goes
on with the healthy ones, counts one death (not one per re-send), re-queues what was lost,
brings the dead one back, finishes every step, and accounts for every prompt it drew."""

from __future__ import annotations

import os
import re
import signal
import threading
import time

import pytest

ray = pytest.importorskip("ray")

from tests.conftest import release_program, small_config, steps_by_hand  # noqa: E402

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
        "buffer": 0,
    }
    # every prompt drawn is in the buffer's books: trained, dropped stale, still held, or refused
    stats = ray.get(prog.buffer.stats.remote())
    assert counters["drawn"] == stats["buffer/added"] + stats["buffer/rejected_full"] + counters["rejected_nonfinite"]
    assert stats["buffer/added"] == stats["buffer/sampled"] + stats["buffer/dropped_stale"] + stats["buffer/size"]
    assert stats["buffer/sampled"] == total * cfg.ppo.batch_size
    ppr = cfg.rollout.prompts_per_request  # the requests lost in flight, re-sent: none, one or two
    assert counters["requeued"] % ppr == 0 and counters["requeued"] <= cfg.rollout.num_workers * ppr
    assert not prog.requeued


def _run_killing(cfg, actor, at_version: int):
    """Run `cfg` through the Ray program and SIGKILL `actor(prog)` once the learner reaches
    `at_version`; returns (prog, counters, events, the killed pid)."""
    from shoal.services.metrics import MetricsReader
    from shoal.services.program import RayProgram
    from shoal.services.run import close_run, open_run

    ctx = open_run(cfg)
    status, summary, killed = "failed", {}, {}
    try:
        prog = RayProgram(cfg, ctx)

        def go():
            while prog.version < at_version:
                time.sleep(0.02)
            pid = ray.get(actor(prog).pid.remote())
            os.kill(pid, signal.SIGKILL)
            killed.update(pid=pid, version=prog.version)

        killer = threading.Thread(target=go, daemon=True)
        killer.start()
        last = prog.run(progress=False)
        killer.join(timeout=30)
        assert killed, "the actor was not killed"
        counters = prog.counters(last)
        summary, status = counters, "finished"
        events = MetricsReader(ctx.redis_url).events(ctx.run_id)
    finally:
        close_run(ctx, status, summary)
    return prog, counters, events, killed["pid"]


def test_sigkill_of_the_learner_resumes_from_its_checkpoint(ray_local, sft_models, tmp_path):
    total = 14
    cfg = small_config(
        sft_models, tmp_path, f"run.total_steps={total}", "run.checkpoint_interval=4", "rollout.max_policy_lag=2"
    )
    prog, counters, events, killed_pid = _run_killing(cfg, lambda prog: prog.learner, 6)
    assert counters["learner_steps"] == total and counters["actor_deaths"]["learner"] == 1
    back = [e["message"] for e in events if e["kind"] == "actor_restored" and e["message"].startswith("learner")]
    assert len(back) == 1 and "back at step 4 from" in back[0] and "step_00000004" in back[0], back
    stats = ray.get(prog.buffer.stats.remote())
    assert counters["drawn"] == stats["buffer/added"] + stats["buffer/rejected_full"] + counters["rejected_nonfinite"]
    assert stats["buffer/added"] == stats["buffer/sampled"] + stats["buffer/dropped_stale"] + stats["buffer/size"]
    assert ray.get(prog.learner.pid.remote()) != killed_pid


def _kill_learner(prog, wait_back: bool) -> int:
    """SIGKILL the learner; with `wait_back`, wait until Ray has restarted it (another pid)
    before returning. Its pid before the kill."""
    killed_pid = ray.get(prog.learner.pid.remote())
    os.kill(killed_pid, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while wait_back and time.monotonic() < deadline:
        try:
            if ray.get(prog.learner.pid.remote(), timeout=5) != killed_pid:
                break
        except Exception:
            time.sleep(0.5)
    return killed_pid


@pytest.mark.parametrize("restarted", [False, True], ids=["met_dead", "back_before_it"])
@pytest.mark.parametrize("when", ["before_the_final_sync", "before_the_last_checkpoint"])
def test_a_learner_killed_after_the_last_step_is_back_and_retakes_it_before_the_run_ends(
    when, restarted, ray_local, sft_models, tmp_path
):
    """The learner dies after its last step: before the run's final weight sync (`drain`), or
    after it, before the run's last checkpoint (`finish`). Ray restarts it from its checkpoint
    (step 2); the run takes step 3 again and ends with its weights on every worker and in its
    last checkpoint - whether the call meets the dead learner or, restarted already, one that
    answers from step 2."""
    import json

    from shoal.learner.checkpoint import META_FILE, checkpoint_dir
    from shoal.services.metrics import MetricsReader
    from shoal.services.program import RayProgram
    from shoal.services.run import close_run, open_run

    total = 3
    cfg = small_config(
        sft_models, tmp_path, f"run.total_steps={total}", "run.checkpoint_interval=2", "run.eval_prompts=0"
    )
    ctx = open_run(cfg)
    status, summary = "failed", {}
    prog = RayProgram(cfg, ctx)
    try:
        steps_by_hand(prog, total)
        if when == "before_the_final_sync":
            killed_pid = _kill_learner(prog, restarted)
            last = prog.finish(prog.run(progress=False), progress=False)
        else:
            last = prog.run(progress=False)  # the final sync: every worker holds step 3
            killed_pid = _kill_learner(prog, restarted)
            last = prog.finish(last, progress=False)
        counters = prog.counters(last)
        summary, status = counters, "finished"
        events = MetricsReader(ctx.redis_url).events(ctx.run_id)
        stats = ray.get(prog.buffer.stats.remote())
        version = ray.get(prog.learner.policy_version.remote())
        served = [ray.get(w.status.remote())["policy_version"] for w in prog.rollout.handles()]
        pid_after = ray.get(prog.learner.pid.remote())
    finally:
        close_run(ctx, status, summary)
        release_program(prog)

    assert counters["learner_steps"] == total and version == total and pid_after != killed_pid
    assert counters["actor_deaths"]["learner"] == 1
    back = [e["message"] for e in events if e["kind"] == "actor_restored" and e["message"].startswith("learner")]
    assert len(back) == 1 and "back at step 2 from" in back[0] and back[0].endswith("step 3 is taken again"), back
    assert served and all(v == total for v in served)  # every worker holds the final weights
    assert stats["buffer/sampled"] == (total + 1) * cfg.ppo.batch_size  # step 3 twice
    meta = json.loads((checkpoint_dir(ctx.run_dir, total) / META_FILE).read_text())
    assert meta["policy_version"] == total, meta  # the last checkpoint is of the last step


@pytest.mark.parametrize("workers", [1, 2])
def test_a_worker_killed_in_the_evaluations_costs_the_start_values_and_the_final_one_runs_again(
    workers, ray_local, sft_models, tmp_path
):
    """Worker 0, which runs the evaluations, is killed in the start evaluation (the run goes on
    without the start values: the workers hold newer weights by then) and again in the final
    one (the evaluation runs again on a worker that holds the final weights: the other one, or,
    alone, worker 0 once it is back and has them)."""
    from shoal.services.metrics import MetricsReader
    from shoal.services.program import RayProgram
    from shoal.services.run import close_run, open_run

    total = 2  # 512 held-out prompts: the start evaluation is still running when worker 0 is killed
    cfg = small_config(
        sft_models, tmp_path, f"run.total_steps={total}", "run.eval_prompts=512", f"rollout.num_workers={workers}"
    )
    ctx = open_run(cfg)
    status, summary = "failed", {}
    prog = RayProgram(cfg, ctx)
    try:
        worker = prog.rollout.handle(0)
        pid = ray.get(worker.pid.remote())
        prog.before_refs = prog.evaluate_start()
        os.kill(pid, signal.SIGKILL)
        last = prog.run(progress=False)
        last = prog.finish(last, progress=False)
        assert prog.before == {}
        deadline = time.monotonic() + 60
        while not prog.rollout.healthy(0) and time.monotonic() < deadline:  # back, with the final weights
            time.sleep(0.5)
            prog.heal()
        prog.await_evaluators()
        os.kill(ray.get(prog.rollout.handle(0).pid.remote()), signal.SIGKILL)  # its evaluation request fails
        after = prog.evaluate()
        counters = prog.counters(last)
        summary, status = counters, "finished"
        events = MetricsReader(ctx.redis_url).events(ctx.run_id)
        served = [ray.get(w.status.remote())["policy_version"] for w in prog.rollout.handles()]
    finally:
        close_run(ctx, status, summary)
        release_program(prog)

    assert counters["learner_steps"] == total and counters["actor_deaths"]["rollout"] == 2
    lost = [e["message"] for e in events if e["kind"] == "evaluation_lost"]
    assert len(lost) == 1 and lost[0].startswith("rollout-0 died in the start evaluation"), lost
    again = [e["message"] for e in events if "died in the final evaluation" in e["message"]]
    assert len(again) == 1 and again[0].startswith("rollout-0"), again
    assert 0.0 <= after["gold_reward"] <= 1.0 and served and all(v == total for v in served)


def test_sigkill_of_the_replay_buffer_restores_its_snapshot_and_counts_what_was_lost(ray_local, sft_models, tmp_path):
    """Ray restarts the buffer actor, which loads its newest snapshot; the learner's step and
    the requests that met the death are sent again; every prompt drawn is trained on, dropped,
    held, refused, rejected, or counted as lost since that snapshot."""
    total = 16
    cfg = small_config(
        sft_models,
        tmp_path,
        f"run.total_steps={total}",
        "run.replay_snapshot_interval_s=0.3",
        "rollout.max_policy_lag=2",
    )
    prog, counters, events, killed_pid = _run_killing(cfg, lambda prog: prog.buffer, 5)
    assert counters["learner_steps"] == total
    assert counters["actor_deaths"] == {"rollout": 0, "reward": 0, "learner": 0, "buffer": 1}
    back = [e["message"] for e in events if e["kind"] == "actor_restored"]
    died = [e["message"] for e in events if e["kind"] == "actor_died"]
    assert len(died) == 1 and died[0].startswith("replay buffer died"), died
    assert len(back) == 1 and back[0].startswith("replay buffer is back") and "from a snapshot taken" in back[0], back
    stats = ray.get(prog.buffer.stats.remote())
    assert counters["drawn"] == (
        stats["buffer/added"] + stats["buffer/rejected_full"] + counters["rejected_nonfinite"] + counters["replay_lost"]
    )
    assert stats["buffer/added"] == stats["buffer/sampled"] + stats["buffer/dropped_stale"] + stats["buffer/size"]
    assert ray.get(prog.buffer.pid.remote()) != killed_pid


def test_a_dead_replay_buffer_without_snapshots_ends_the_run_in_one_line_that_says_how_to_go_on(
    ray_local, sft_models, tmp_path
):
    """run.replay_snapshot_interval_s=0: nothing to restart it from; the run stops with a
    RunError naming the buffer and the --resume command; its checkpoints stay usable."""
    from shoal.services.program import RayProgram
    from shoal.services.run import close_run, open_run
    from shoal.utils import RunError

    cfg = small_config(
        sft_models, tmp_path, "run.total_steps=40", "run.checkpoint_interval=2", "run.replay_snapshot_interval_s=0"
    )
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


def test_a_hung_rollout_worker_is_restarted_after_the_actor_timeout(ray_local, sft_models, tmp_path):
    """SIGSTOP freezes worker 0 mid-run (a hung engine): past run.actor_timeout_s the driver
    restarts it, the request it held is sent again, and the run finishes on time."""
    from shoal.services.metrics import MetricsReader
    from shoal.services.program import RayProgram
    from shoal.services.run import close_run, open_run

    total = 14
    cfg = small_config(
        sft_models, tmp_path, f"run.total_steps={total}", "run.actor_timeout_s=4", "rollout.max_policy_lag=2"
    )
    ctx = open_run(cfg)
    status, summary = "failed", {}
    try:
        prog = RayProgram(cfg, ctx)
        frozen: dict = {}

        def go():
            while prog.version < 3:
                time.sleep(0.02)
            pid = ray.get(prog.rollout.handle(0).pid.remote())
            os.kill(pid, signal.SIGSTOP)
            frozen.update(pid=pid)

        threading.Thread(target=go, daemon=True).start()
        last = prog.run(progress=False)
        assert frozen
        counters = prog.counters(last)
        summary, status = counters, "finished"
        events = MetricsReader(ctx.redis_url).events(ctx.run_id)
    finally:
        close_run(ctx, status, summary)
    timeouts = [e["message"] for e in events if e["kind"] == "actor_timeout"]
    assert len(timeouts) == 1 and timeouts[0].startswith("rollout-0 on node "), timeouts
    assert "run.actor_timeout_s" in timeouts[0]
    assert counters["learner_steps"] == total and counters["actor_deaths"]["rollout"] == 1
    assert counters["requeued"] >= cfg.rollout.prompts_per_request
    stats = ray.get(prog.buffer.stats.remote())
    assert counters["drawn"] == stats["buffer/added"] + stats["buffer/rejected_full"] + counters["rejected_nonfinite"]
    assert not psutil_alive(frozen["pid"])


def psutil_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_an_actor_call_past_its_deadline_is_one_line_naming_the_actor_node_and_remedy(ray_local):
    from shoal.services.calls import get_within
    from shoal.utils import RunError

    @ray.remote
    def slow():
        time.sleep(30)

    with pytest.raises(RunError) as e:
        get_within(slow.remote(), "the replay buffer", "`room`", 0.5, "10.0.0.7")
    msg = str(e.value)
    assert msg.startswith("the replay buffer on node 10.0.0.7 did not answer `room` within 0.5 s (run.actor_timeout_s)")
    assert "ray status" in msg and "--resume" in msg and "\n" not in msg


def test_sigkill_of_the_r2d2_replay_brings_back_its_sequences_states_and_priorities(ray_local, tmp_path):
    """The prioritized sequence replay (stored recurrent states, priorities, the rate
    limiter's pending queue) through its snapshot: the run finishes, and every episode drawn
    is in the restored replay's books or counted as lost since the snapshot."""
    from shoal.services.config import load_config

    total = 60
    cfg = load_config(
        None,
        [
            f"run.runs_dir={tmp_path}/runs",
            "dashboard.enabled=false",
            "env.eval_episodes=4",
            "run.algorithm=r2d2",
            f"run.total_steps={total}",
            "run.replay_snapshot_interval_s=0.2",
            "rollout.num_workers=2",
            "env.episodes_per_request=2",
            "replay.min_size_to_sample=16",
            "r2d2.batch_size=8",
            "rollout.sync_interval=5",
        ],
    )
    prog, counters, events, _ = _run_killing(cfg, lambda prog: prog.buffer, 30)
    assert counters["learner_steps"] == total and counters["actor_deaths"]["buffer"] == 1
    back = [e["message"] for e in events if e["kind"] == "actor_restored"]
    restored = re.search(r"before its restart \((\d+) items\)", back[0])
    assert restored and int(restored.group(1)) > 0, back
    stats = ray.get(prog.buffer.stats.remote())
    assert counters["drawn"] == stats["buffer/episodes_added"] + counters["replay_lost"] + counters["dropped_episodes"]
    assert stats["buffer/priority_mean"] < 1.0  # the restored TD priorities, not fresh max-priority items only
