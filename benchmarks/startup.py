"""Start-up and end-to-end speed of `shoal train` on the demo: the Ray program against the
in-process loop, as a user runs them (a fresh `shoal train` process per run).

Per run it reads the summary the run writes:
- `startup_s` (Ray program): when each start-up phase was first reached, in seconds since the
  command started (the first import of `shoal`): `run_open` (run directory, metrics store,
  config saved), `ray_up` (ray.init returned), `<role>_ready` (the last actor of a role:
  buffer, scorers, learner, workers) and `actors_ready` (the last of all) finished its
  constructor, `first_sync` (every worker holds the learner's weights), `first_rollouts` (the
  first request came back scored and buffered), `first_step` (the first learner step done);
- `first_step_s` (both modes): the first learner step, since the command started;
- trained samples/s end to end: learner steps x ppo.batch_size / the process's wall time
  (process start to exit: Ray start-up, evaluation before and after, checkpoint included);
- `cpu_s`: the CPU work of the run in all of its processes (Ray's own included), the
  machine's busy CPU time over the run from /proc/stat (so run it on an otherwise idle
  machine), and `cores_busy` = cpu_s / wall. No schedule fits cpu_s in less than cpu_s / cores
  of wall, so the Ray program's end-to-end ratio over the in-process loop can be at most
  local wall / (Ray cpu_s / cores): the `ceiling` the summary prints.
Modes alternate (ray local ray local ...) so machine noise spreads over both; the Ray / local
ratio is of the medians. Every process uses one torch thread.

    python benchmarks/startup.py                       # the demo as shipped (100 steps), 2 rounds
    python benchmarks/startup.py --steps 5 --rounds 3  # start-up only
    python benchmarks/startup.py --set rollout.num_workers=1

Models: the seed's demo models under --models-dir (built by `shoal init-model` + `train-rm` on
first use, shared with benchmarks/rlhf_seeds.py). Writes benchmarks/results/startup.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import (  # noqa: E402
    CAVEAT,
    ROOT,
    ProcessCpu,
    format_table,
    machine_cpu_seconds,
    machine_info,
    usable_cores,
    write_results,
)
from benchmarks.rlhf_seeds import DEMO, cli, ensure_models  # noqa: E402

PHASES = [
    "run_open",
    "ray_up",
    "buffer_ready",
    "scorers_ready",
    "learner_ready",
    "workers_ready",
    "actors_ready",
    "first_sync",
    "first_rollouts",
    "first_step",
]


def run_once(
    mode: str, models: dict[str, str], steps: int, sets: list[str], runs_dir: Path, per_process: bool = False
) -> dict[str, Any]:
    overrides = [
        f"run.mode={mode}",
        f"run.total_steps={steps}",
        f"model.path={models['policy']}",
        f"reward.reward_model_path={models['reward']}",
        f"run.runs_dir={runs_dir}",
        "dashboard.enabled=false",
        *sets,
    ]
    sampler = ProcessCpu() if per_process else contextlib.nullcontext()
    with sampler:
        cpu0 = machine_cpu_seconds()
        t0 = time.perf_counter()
        r = cli("train", str(DEMO), "--quiet", *[a for s in overrides for a in ("--set", s)])
        wall = time.perf_counter() - t0
    cpu = None if cpu0 is None else machine_cpu_seconds() - cpu0
    if r.returncode != 0:
        raise SystemExit(f"{mode} run failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    summary = json.loads(max(runs_dir.glob("*/summary.json"), key=lambda p: p.stat().st_mtime).read_text())
    cfg_batch = 64
    for s in sets:
        if s.startswith("ppo.batch_size="):
            cfg_batch = int(s.split("=", 1)[1])
    steps_done = summary.get("learner_steps") or steps
    return {
        "mode": mode,
        "process_wall_s": round(wall, 1),
        "cpu_s": None if cpu is None else round(cpu, 1),
        "cores_busy": None if cpu is None else round(cpu / wall, 2),
        "first_step_s": summary.get("first_step_s"),
        "trained_per_s": round(steps_done * cfg_batch / wall, 1),
        "samples": summary.get("samples"),
        "gold_after": (summary.get("after") or {}).get("gold_reward"),
        **{f"t_{k}": v for k, v in (summary.get("startup_s") or {}).items()},
        **({"cpu_by_process": sampler.groups} if per_process else {}),
    }


SUMMARY_KEYS = ["process_wall_s", "first_step_s", "trained_per_s", "cpu_s", "cores_busy"]


def ratio_ceiling(ray: dict[str, Any], local: dict[str, Any], cores: int) -> float | None:
    """The most end-to-end trained samples/s the Ray program can reach over the in-process loop
    (same steps, same batch) on `cores` cores: local wall / (Ray CPU work / cores)."""
    if not ray.get("cpu_s") or not local.get("process_wall_s"):
        return None
    return round(local["process_wall_s"] / (ray["cpu_s"] / cores), 2)


def per_process_table(rows: list[dict[str, Any]], modes: list[str]) -> str:
    """CPU s per process group, median over each mode's runs (groups under 0.1 s left out)."""
    table = []
    for mode in modes:
        runs = [r["cpu_by_process"] for r in rows if r["mode"] == mode]
        names = {n for g in runs for n in g}
        cpu = {n: statistics.median(g.get(n, 0.0) for g in runs) for n in names}
        table += [{"mode": mode, "process": n, "cpu_s": c} for n, c in sorted(cpu.items(), key=lambda kv: -kv[1])]
    cols = [("mode", "mode", "s"), ("process", "process", "s"), ("cpu_s", "CPU s (median)", ".2f")]
    return format_table([r for r in table if r["cpu_s"] >= 0.1], cols)


def med(rows: list[dict[str, Any]], key: str) -> float | None:
    vals = [r[key] for r in rows if r.get(key) is not None]
    return statistics.median(vals) if vals else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--modes", default="ray,local")
    ap.add_argument("--set", action="append", default=[], help="config override for every run")
    ap.add_argument("--models-dir", default=str(ROOT / "benchmarks" / "results" / "models"))
    ap.add_argument("--out", default=None)
    ap.add_argument(
        "--per-process",
        action="store_true",
        help="also sample /proc every 0.2 s and print the CPU each process group took (the sampler's own "
        "~0.3 CPU s a run counts in cpu_s then)",
    )
    args = ap.parse_args(argv)
    models = ensure_models(Path(args.models_dir), args.seed, DEMO)
    sets = [f"run.seed={args.seed}", *args.set]
    modes = args.modes.split(",")
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="shoal-startup-") as tmp:
        for rnd in range(args.rounds):
            for mode in modes if rnd % 2 == 0 else modes[::-1]:
                row = run_once(mode, models, args.steps, sets, Path(tmp) / f"{mode}{rnd}", args.per_process)
                rows.append(row)
                print(json.dumps(row), flush=True)
    cols = [("mode", "mode", "s"), ("process_wall_s", "wall s", ".1f"), ("first_step_s", "first step s", ".1f")]
    cols += [("cpu_s", "cpu s", ".1f"), ("cores_busy", "cores busy", ".2f")]
    cols += [(f"t_{p}", p, ".1f") for p in PHASES] + [("trained_per_s", "trained/s", ".1f")]
    print(format_table(rows, cols))
    if args.per_process:
        print(per_process_table(rows, modes))
    by_mode = {m: [r for r in rows if r["mode"] == m] for m in modes}
    summary = {m: {k: med(rs, k) for k in [*SUMMARY_KEYS, *[f"t_{p}" for p in PHASES]]} for m, rs in by_mode.items()}
    if "ray" in summary and "local" in summary and summary["local"]["trained_per_s"]:
        summary["ray_over_local_trained_per_s"] = round(
            summary["ray"]["trained_per_s"] / summary["local"]["trained_per_s"], 2
        )
        cores = usable_cores()
        ceiling = ratio_ceiling(summary["ray"], summary["local"], cores)
        if ceiling is not None:
            summary["ray_over_local_ceiling"] = ceiling
            print(
                f"CPU bound: the Ray program's runs took {summary['ray']['cpu_s']:.1f} CPU s, at least "
                f"{summary['ray']['cpu_s'] / cores:.1f} s of wall on {cores} cores; the in-process "
                f"loop's took {summary['local']['process_wall_s']:.1f} s, so Ray / local can reach at most "
                f"{ceiling:.2f}x here (measured {summary['ray_over_local_trained_per_s']:.2f}x)"
            )
    print(json.dumps(summary, indent=1))
    print(CAVEAT)
    payload = {"machine": machine_info(), "argv": sys.argv[1:], "steps": args.steps, "rows": rows, "summary": summary}
    print(f"wrote {write_results('startup', payload, quick=False, out=args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
