"""Pipeline overlap: the concurrent Ray program (services.program.run_ray) against the strictly
sequential in-process loop (services.local.run_local), on the same config and models.

What is measured, per mode, from the summary dict each runner returns (wall_s, samples,
learner_steps, dropped_stale) - end to end, i.e. including building the components (Ray
actors and their models, or the in-process ones) and the final drain, but not `ray.init`
(Ray is started once, before, and its start time is reported apart):
- samples/s: rollouts generated / wall_s;
- trained/s: learner_steps x ppo.batch_size / wall_s (samples the learner trained on);
- steps/s: learner_steps / wall_s;
and the Ray / local ratio of each (of the medians over `--rounds` rounds; each round runs
both modes, local first in odd rounds and Ray first in even ones). Because start-up is a
large share of a short run, the same rates are also given in steady state, from the run's
metrics stream in Redis (both runners report there under the same names): the time between the learner's first and last step
entries, the learner steps in between, and the rollouts generated in between (one
`rollout/samples_total` entry per generate call of `rollout.prompts_per_request` prompts).
In that window it also reports learner busy (sum of `learner/step_s` / window: ~1 means the
run is learner-bound) and generate busy (sum of every worker's `rollout/generate_s` /
window; above 1 when workers generate at the same time). For the local loop these are the
shares of its time; 1 / the largest share bounds what any overlap could gain.

Models are built as the tests' `sft_models` fixture does (short SFT warm-up of the tiny Llama,
then a small Bradley-Terry reward model). Both modes run the same config: 2 rollout workers,
eval_prompts=0, 8 new tokens, sync every step, max_policy_lag 2, the transformers engine,
and one of two workloads (WORKLOADS below): `test` = the tests' `small_config` (8 prompts per
request, PPO batch 16, minibatch 8, 1 epoch, buffer 64) and `demo` = deploy/configs/demo.yaml's
rollout/PPO settings (16 prompts per request, batch 64, minibatch 32, 4 epochs, buffer 128).
The local loop builds the same 2 workers and alternates between them, one request at a time
(the worker count gives it no parallelism; it keeps the configs identical). Ray is started
once (timed apart) with num_cpus = max(cpu count, what the run reserves + 1), as
`services.program.init_ray` does; it stays up (idle) during the local runs. Every process uses
one torch thread. On 2 cores the Ray run has 4 busy processes (2 workers, 1 scorer, the
learner) sharing them, so overlap can gain at most ~2x here.

Run (from the repository root):
    .venv/bin/python benchmarks/pipeline_overlap.py          # full: 2 workloads x 2 modes x 2 rounds, ~4-5 min
    .venv/bin/python benchmarks/pipeline_overlap.py --quick  # smoke: smaller models, `test` workload, 4 steps
Options: --steps N (default 40), --rounds R, --workloads test,demo, --models-dir DIR (reuse or
keep the built models), --out PATH.
Writes benchmarks/results/pipeline_overlap.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import _common as C

NAME = "pipeline_overlap"
COMMON = ["run.eval_prompts=0", "rollout.num_workers=2"]
WORKLOADS = {
    # the tests' small_config: tiny requests and batches (per-call overheads dominate)
    "test": [
        "rollout.prompts_per_request=8",
        "ppo.batch_size=16",
        "ppo.minibatch_size=8",
        "ppo.ppo_epochs=1",
        "buffer.capacity=64",
    ],
    # deploy/configs/demo.yaml's rollout/PPO/buffer settings: more work per call and per step
    "demo": [
        "rollout.prompts_per_request=16",
        "ppo.batch_size=64",
        "ppo.minibatch_size=32",
        "ppo.ppo_epochs=4",
        "buffer.capacity=128",
    ],
}


def build_models(root: Path, quick: bool) -> dict[str, str]:
    """SFT policy + reward model like tests/conftest.py's sft_models (reused if present)."""
    from shoal.learner.sft.learning import init_model
    from shoal.reward.train_rm import train_reward_model
    from shoal.services.config import load_config

    paths = {"policy": str(root / "policy"), "reward": str(root / "reward")}
    if all((Path(p) / "config.json").is_file() for p in paths.values()):
        return paths
    sizes = ["sft.steps=20", "reward.rm_pairs=200"] if quick else ["sft.steps=80", "reward.rm_pairs=800"]
    where = [f"model.path={paths['policy']}", f"reward.reward_model_path={paths['reward']}"]
    cfg = load_config(None, [*where, *sizes, "reward.rm_epochs=1"])
    init_model(cfg, progress=False)
    train_reward_model(cfg, progress=False)
    return paths


def run_config(models: dict[str, str], runs_dir: Path, redis_url: str, steps: int, workload: str) -> Any:
    """The run config of one workload; the web dashboard (where the config has one) is off."""
    from shoal.services.config import ShoalConfig, load_config

    quiet = ["dashboard.enabled=false"] if "dashboard" in ShoalConfig.model_fields else []
    return load_config(
        None,
        [
            f"model.path={models['policy']}",
            f"reward.reward_model_path={models['reward']}",
            f"run.name=bench-{workload}",
            f"run.runs_dir={runs_dir}",
            f"run.redis_url={redis_url}",
            f"run.total_steps={steps}",
            *COMMON,
            *WORKLOADS[workload],
            *quiet,
        ],
    )


def steady_state(redis_url: str, run_id: str, prompts_per_request: int) -> dict[str, float]:
    """Rates between the learner's first and last step entries, from the run's metrics stream;
    plus how busy the learner (sum of learner/step_s) and the workers (sum of
    rollout/generate_s over workers; > 1 when they generate in parallel) were in that window."""
    from shoal.services.metrics import MetricsReader

    reader = MetricsReader(redis_url)
    learn = reader.history(run_id, names=["learner/policy_version", "learner/step_s"], source="learner")
    if len(learn) < 2:
        return {}
    t0, t1 = learn[0]["t"], learn[-1]["t"]
    span = t1 - t0
    gens = [
        e
        for e in reader.history(run_id, names=["rollout/samples_total", "rollout/generate_s"])
        if e["source"].startswith("rollout-") and t0 < e["t"] <= t1
    ]
    return {
        "steady_s": span,
        "steady_steps_per_s": (len(learn) - 1) / span,
        "steady_samples_per_s": len(gens) * prompts_per_request / span,
        "learner_busy": sum(e["data"].get("learner/step_s", 0.0) for e in learn[1:]) / span,
        "generate_busy": sum(e["data"].get("rollout/generate_s", 0.0) for e in gens) / span,
    }


def measure(mode: str, workload: str, cfg: Any, redis_url: str) -> dict[str, Any]:
    """One run of `mode` ('local' or 'ray'); its summary turned into rates."""
    if mode == "local":
        from shoal.services.local import run_local as runner
    else:
        from shoal.services.program import run_ray as runner
    summary, outer = C.timed(lambda: runner(cfg, progress=False))
    wall, steps = summary["wall_s"], summary["learner_steps"]
    row = {
        "workload": workload,
        "mode": mode,
        "workers": cfg.rollout.num_workers,
        "batch": cfg.ppo.batch_size,
        "wall_s": wall,
        "outer_wall_s": outer,
        "samples": summary["samples"],
        "learner_steps": steps,
        "dropped_stale": summary.get("dropped_stale"),
        "samples_per_s": summary["samples"] / wall,
        "trained_per_s": steps * cfg.ppo.batch_size / wall,
        "steps_per_s": steps / wall,
        "run_id": summary["run_id"],
    }
    return row | steady_state(redis_url, summary["run_id"], cfg.rollout.prompts_per_request)


RATIO_KEYS = [
    "samples_per_s",
    "trained_per_s",
    "steps_per_s",
    "steady_samples_per_s",
    "steady_steps_per_s",
]  # ray / local


def ratio_row(local: dict[str, Any], ray_: dict[str, Any]) -> dict[str, Any]:
    """Ray / local of the medians; per-round ratios under `rounds` (round i of each mode)."""
    keys = ["wall_s", *RATIO_KEYS]
    ratio = lambda a, b: {k: a[k] / b[k] for k in keys if k in a and k in b}
    per_round = [ratio(r, lo) for r, lo in zip(ray_["rounds"], local["rounds"])]
    return {"workload": local["workload"], "mode": "ray/local", **ratio(ray_, local), "rounds": per_round}


def start_ray(cfg: Any) -> float:
    """Ray started once, before the Ray runs, sized as services.program.init_ray sizes it
    (actor logs not forwarded, to keep the output readable); returns the seconds it took."""
    import ray

    from shoal.services.program import required_resources

    os.environ["RAY_ENABLE_ZERO_COPY_TORCH_TENSORS"] = "1"
    cpus = max(os.cpu_count() or 1, int(required_resources(cfg)["CPU"] + 1))
    _, secs = C.timed(lambda: ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False))
    return secs


def bench_workload(
    workload: str, models: dict[str, str], runs_dir: Path, redis_url: str, args: argparse.Namespace
) -> list[dict[str, Any]]:
    """`args.rounds` rounds of both modes on one config (local, ray, then ray, local, ...);
    rows: local and ray (medians over rounds), ray/local. Ray must be running."""
    cfg = run_config(models, runs_dir, redis_url, args.steps, workload)
    runs: dict[str, list[dict[str, Any]]] = {"local": [], "ray": []}
    for rnd in range(args.rounds):
        for mode in ("local", "ray") if rnd % 2 == 0 else ("ray", "local"):
            print(f"[{NAME}] {workload}, round {rnd + 1}/{args.rounds}: {mode}, {args.steps} steps ...", flush=True)
            runs[mode].append(measure(mode, workload, cfg, redis_url))
    local, ray_row = combine(runs["local"]), combine(runs["ray"])
    return [local, ray_row, ratio_row(local, ray_row)]


def combine(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Median of every number over the rounds (ints stay ints when the median is whole); the
    rounds themselves are kept under `rounds`."""
    out = dict(rounds[0])
    for k, v in rounds[0].items():
        if isinstance(v, (int, float)) and not isinstance(v, bool) and all(k in r for r in rounds):
            m = C.median([r[k] for r in rounds])
            out[k] = int(m) if isinstance(v, int) and m == int(m) else m
    out["run_id"] = [r["run_id"] for r in rounds]
    return out | {"rounds": rounds}


COLUMNS = [
    ("workload", "workload", "s"),
    ("batch", "batch", "d"),
    ("mode", "mode", "s"),
    ("wall_s", "wall s", ".1f"),
    ("samples", "samples", "d"),
    ("learner_steps", "steps", "d"),
    ("samples_per_s", "samples/s", ".2f"),
    ("trained_per_s", "trained/s", ".2f"),
    ("steps_per_s", "steps/s", ".3f"),
    ("steady_samples_per_s", "steady samples/s", ".2f"),
    ("steady_steps_per_s", "steady steps/s", ".3f"),
    ("learner_busy", "learner busy", ".2f"),
    ("generate_busy", "generate busy", ".2f"),
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke mode: smaller SFT/RM budgets, 4 learner steps")
    p.add_argument("--steps", type=int, default=None, help="run.total_steps of every run (default 40)")
    p.add_argument("--rounds", type=int, default=None, help="runs per mode and workload, order alternating (default 2)")
    p.add_argument(
        "--workloads", default=None, help=f"comma-separated from {list(WORKLOADS)} (default all; quick: test)"
    )
    p.add_argument("--models-dir", default=None, help="where the policy/reward models are built (reused if there)")
    p.add_argument("--out", default=None, help="JSON path (default benchmarks/results/pipeline_overlap.json)")
    a = p.parse_args(argv)
    a.steps = a.steps or (4 if a.quick else 40)
    a.rounds = a.rounds or (1 if a.quick else 2)
    a.workloads = (a.workloads or ("test" if a.quick else ",".join(WORKLOADS))).split(",")
    for w in a.workloads:
        if w not in WORKLOADS:
            p.error(f"--workloads: unknown workload {w!r} (have {list(WORKLOADS)})")
    return a


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    C.single_thread_env()
    import ray

    from shoal.services.metrics import EmbeddedRedis

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="shoal-bench-") as tmp:
        models, build_s = C.timed(lambda: build_models(Path(args.models_dir or Path(tmp) / "models"), args.quick))
        redis = EmbeddedRedis(Path(tmp) / "metrics.rdb")
        rows: list[dict[str, Any]] = []
        try:
            ray_init_s = start_ray(run_config(models, Path(tmp), redis.url, args.steps, args.workloads[0]))
            try:
                for w in args.workloads:
                    rows += bench_workload(w, models, Path(tmp) / "runs", redis.url, args)
            finally:
                ray.shutdown()
        finally:
            redis.close()
    settings = {
        "total_steps": args.steps,
        "rounds": args.rounds,
        "common": COMMON,
        "model_build_s": build_s,
        "workloads": {w: WORKLOADS[w] for w in args.workloads},
        "ray_init_s": ray_init_s,
    }
    payload = {"settings": settings, "rows": rows, "total_s": time.perf_counter() - t0}
    path = C.write_results(NAME, payload, args.quick, args.out)
    title = (
        f"Pipeline overlap: {args.steps} learner steps per run, 2 rollout workers, median of {args.rounds} round(s); "
        f"ray.init ({ray_init_s:.1f} s) not in wall"
    )
    C.report(title, C.format_table(rows, COLUMNS), path)
    return {"rows": rows, "path": str(path)}


if __name__ == "__main__":
    main()
