"""The elastic rollout pool (rollout.max_workers; services/program.py `scale`, services/pools.py
`grow` / `retire`) on a multi-node Ray cluster started on this machine
(`ray.cluster_utils.Cluster`: a head for the learner and buffer, and nodes that offer one
`rollout` resource each). A node joins mid-run: a worker starts on it, gets the current
weights, and the run's rollout throughput rises (workers are paced to a fixed rate, so 2 cores
do not hide it); the node leaves: its worker leaves the pool, its request is sent again, and
the run finishes with every prompt accounted for."""

from __future__ import annotations

import threading
import time

import pytest

ray = pytest.importorskip("ray")

from tests.conftest import small_config  # noqa: E402

pytestmark = pytest.mark.integration

RATE = 24.0  # samples/s per worker (rollout.max_samples_per_s_per_worker)


@pytest.fixture
def cluster():
    from ray.cluster_utils import Cluster

    from shoal.services.actors import ACTOR_ENV

    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False})
    c.add_node(num_cpus=1, resources={"rollout": 1})
    ray.init(address=c.address, runtime_env={"env_vars": ACTOR_ENV})
    yield c
    ray.shutdown()
    c.shutdown()


def _rate(prog, seconds: float) -> float:
    n0, t0 = prog.samples, time.monotonic()
    time.sleep(seconds)
    return (prog.samples - n0) / (time.monotonic() - t0)


def test_a_node_joins_then_leaves_mid_run(cluster, sft_models, tmp_path):
    from shoal.services.metrics import MetricsReader
    from shoal.services.program import RayProgram
    from shoal.services.run import close_run, open_run

    total = 70
    cfg = small_config(
        sft_models,
        tmp_path,
        f"run.total_steps={total}",
        "run.eval_prompts=0",
        "rollout.num_workers=auto",
        "rollout.max_workers=3",
        "rollout.worker_resources={rollout: 1}",
        "rollout.scale_interval_s=1",
        f"rollout.max_samples_per_s_per_worker={RATE}",
        "rollout.max_policy_lag=4",
        "reward.placement=workers",
    )
    ctx = open_run(cfg)
    status, summary, seen = "failed", {}, {}
    try:
        prog = RayProgram(cfg, ctx)
        out: dict = {}
        runner = threading.Thread(target=lambda: out.update(last=prog.run(progress=False)), daemon=True)
        runner.start()  # the run in a thread: Ray's Cluster adds and removes nodes from the main one
        while prog.version < 3:
            time.sleep(0.05)
        seen["rate_1"] = _rate(prog, 4.0)
        node = cluster.add_node(num_cpus=1, resources={"rollout": 1})
        t = time.monotonic()
        while len(prog.rollout.healthy_slots()) < 2 and time.monotonic() - t < 120:
            time.sleep(0.1)
        seen["joined_s"], seen["workers_2"] = time.monotonic() - t, len(prog.rollout.healthy_slots())
        time.sleep(1.0)
        seen["rate_2"] = _rate(prog, 4.0)
        cluster.remove_node(node)
        seen["removed_at"] = prog.version
        runner.join(timeout=300)
        last = out["last"]
        counters = prog.counters(last)
        summary, status = counters, "finished"
        events = MetricsReader(ctx.redis_url).events(ctx.run_id)
        workers = MetricsReader(ctx.redis_url).workers(ctx.run_id)
    finally:
        close_run(ctx, status, summary)
    print(seen)
    assert seen["workers_2"] == 2, seen
    assert seen["rate_2"] > 1.5 * seen["rate_1"], seen  # ~2x at a fixed per-worker rate
    assert seen["removed_at"] < total, seen  # the node left while the run went on
    kinds = [e["kind"] for e in events]
    assert "worker_joined" in kinds and "worker_left" in kinds, kinds
    assert counters["learner_steps"] == total
    assert workers["rollout-1"].get("left") is True and workers["rollout-0"].get("healthy") is True, workers
    assert len(prog.rollout.active()) == 1 and len(prog.rollout.slots) == 2
    stats = ray.get(prog.buffer.stats.remote())
    assert counters["drawn"] == stats["buffer/added"] + stats["buffer/rejected_full"] + counters["rejected_nonfinite"]
    assert not prog.requeued
