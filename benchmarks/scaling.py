"""Scale-out of the elastic rollout pool: rollout throughput as nodes join a running run.

A multi-node Ray cluster on this machine (`ray.cluster_utils.Cluster`: a head for the driver,
learner and replay, and nodes that each offer one `rollout` resource), the demo config through
the Ray program with `rollout.num_workers: auto`. The run starts with one node; nodes join in
stages (1 -> 2 -> 4); at each size the driver's trained-sample rate is measured over a window.
Workers are paced (`rollout.max_samples_per_s_per_worker`) so that 2 cores do not saturate:
what is measured is the coordination overhead of the pool (scaling efficiency = rate at N
nodes / (N x rate at 1 node)), and the time from `add_node` to the new worker's first request
back in the replay (trained on within rollout.max_policy_lag steps).

    python benchmarks/scaling.py                 # ~4 min on 2 cores
    python benchmarks/scaling.py --rate 32 --window 6 --repeats 2
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import ROOT, format_table, report, write_results  # noqa: E402
from benchmarks.rlhf_seeds import DEMO, ensure_models  # noqa: E402


class Stop:
    """A stop request for RayProgram.run (its loop calls `check` between events)."""

    requested = False

    def check(self) -> None:
        if self.requested:
            raise KeyboardInterrupt("benchmark done")


def rate(prog: Any, seconds: float) -> float:
    n0, t0 = prog.samples, time.monotonic()
    time.sleep(seconds)
    return (prog.samples - n0) / (time.monotonic() - t0)


def wait_for(cond: Any, timeout: float = 180.0) -> float:
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise RuntimeError("timed out")
        time.sleep(0.05)
    return time.monotonic() - t0


def one_run(models: dict[str, str], stages: list[int], rate_per_worker: float, window: float) -> list[dict[str, Any]]:
    import ray
    from ray.cluster_utils import Cluster

    from shoal.services.actors import ACTOR_ENV
    from shoal.services.config import load_config
    from shoal.services.program import RayProgram
    from shoal.services.run import close_run, open_run

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False})
    cluster.add_node(num_cpus=1, resources={"rollout": 1})
    ray.init(address=cluster.address, runtime_env={"env_vars": ACTOR_ENV}, log_to_driver=False)
    rows: list[dict[str, Any]] = []
    try:
        with tempfile.TemporaryDirectory() as runs:
            cfg = load_config(
                DEMO,
                [
                    f"model.path={models['policy']}",
                    f"reward.reward_model_path={models['reward']}",
                    f"run.runs_dir={runs}",
                    "run.total_steps=100000",
                    "run.eval_prompts=0",
                    "run.checkpoint_interval=0",
                    "dashboard.enabled=false",
                    "rollout.num_workers=auto",
                    f"rollout.max_workers={max(stages)}",
                    "rollout.worker_resources={rollout: 1}",
                    "rollout.scale_interval_s=1",
                    f"rollout.max_samples_per_s_per_worker={rate_per_worker}",
                    "reward.placement=workers",
                ],
            )
            ctx = open_run(cfg)
            prog = RayProgram(cfg, ctx)
            stop, out = Stop(), {}
            runner = threading.Thread(target=lambda: out.update(r=_run(prog, stop)), daemon=True)
            runner.start()
            wait_for(lambda: prog.version >= 3)
            nodes = 1
            for target in stages:
                join_s = []
                while nodes < target:
                    before = set(prog.served)
                    t0 = time.monotonic()
                    cluster.add_node(num_cpus=1, resources={"rollout": 1})
                    nodes += 1
                    wait_for(lambda b=before: len(set(prog.served) - b) >= 1)
                    join_s.append(time.monotonic() - t0)
                wait_for(lambda n=target: len(prog.rollout.healthy_slots()) >= n)
                time.sleep(1.0)
                r = rate(prog, window)
                rows.append(
                    {
                        "nodes": target,
                        "workers": len(prog.rollout.healthy_slots()),
                        "samples_per_s": r,
                        "join_to_first_request_s": max(join_s) if join_s else None,
                    }
                )
                print(f"  {rows[-1]}", flush=True)
            stop.requested = True
            runner.join(timeout=120)
            close_run(ctx, "finished", {})
    finally:
        ray.shutdown()
        cluster.shutdown()
    base = rows[0]["samples_per_s"]
    for row in rows:
        row["efficiency"] = row["samples_per_s"] / (row["nodes"] * base) if base else None
    return rows


def _run(prog: Any, stop: Stop) -> Any:
    try:
        return prog.run(progress=False, stop=stop)
    except KeyboardInterrupt:
        return None


COLUMNS = [
    ("repeat", "run", "d"),
    ("nodes", "nodes", "d"),
    ("workers", "workers", "d"),
    ("samples_per_s", "samples/s", ".1f"),
    ("efficiency", "efficiency", ".2f"),
    ("join_to_first_request_s", "join -> first request s", ".1f"),
]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stages", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--rate", type=float, default=32.0, help="samples/s per worker (pacing)")
    ap.add_argument("--window", type=float, default=6.0, help="seconds per throughput window")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--models-dir", default=str(ROOT / "benchmarks" / "results" / "models"))
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    models = ensure_models(Path(args.models_dir), 0, DEMO)
    rows = []
    for rep in range(args.repeats):
        print(f"[scaling] run {rep + 1}/{args.repeats}", flush=True)
        rows += [{"repeat": rep + 1, **r} for r in one_run(models, args.stages, args.rate, args.window)]
    payload = {"rate_per_worker": args.rate, "window_s": args.window, "rows": rows}
    path = write_results("scaling", payload, quick=args.repeats < 2, out=args.out)
    report(f"Elastic pool scale-out (workers paced to {args.rate:g} samples/s)", format_table(rows, COLUMNS), path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
