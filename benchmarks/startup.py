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
  (process start to exit: Ray start-up, evaluation before and after, checkpoint included).
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
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import CAVEAT, ROOT, format_table, machine_info, write_results  # noqa: E402
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


def run_once(mode: str, models: dict[str, str], steps: int, sets: list[str], runs_dir: Path) -> dict[str, Any]:
    overrides = [
        f"run.mode={mode}",
        f"run.total_steps={steps}",
        f"model.path={models['policy']}",
        f"reward.reward_model_path={models['reward']}",
        f"run.runs_dir={runs_dir}",
        "dashboard.enabled=false",
        *sets,
    ]
    t0 = time.perf_counter()
    r = cli("train", str(DEMO), "--quiet", *[a for s in overrides for a in ("--set", s)])
    wall = time.perf_counter() - t0
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
        "first_step_s": summary.get("first_step_s"),
        "trained_per_s": round(steps_done * cfg_batch / wall, 1),
        "samples": summary.get("samples"),
        "gold_after": (summary.get("after") or {}).get("gold_reward"),
        **{f"t_{k}": v for k, v in (summary.get("startup_s") or {}).items()},
    }


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
    args = ap.parse_args(argv)
    models = ensure_models(Path(args.models_dir), args.seed, DEMO)
    sets = [f"run.seed={args.seed}", *args.set]
    modes = args.modes.split(",")
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="shoal-startup-") as tmp:
        for rnd in range(args.rounds):
            for mode in modes if rnd % 2 == 0 else modes[::-1]:
                row = run_once(mode, models, args.steps, sets, Path(tmp) / f"{mode}{rnd}")
                rows.append(row)
                print(json.dumps(row), flush=True)
    cols = [("mode", "mode", "s"), ("process_wall_s", "wall s", ".1f"), ("first_step_s", "first step s", ".1f")]
    cols += [(f"t_{p}", p, ".1f") for p in PHASES] + [("trained_per_s", "trained/s", ".1f")]
    print(format_table(rows, cols))
    by_mode = {m: [r for r in rows if r["mode"] == m] for m in modes}
    summary = {
        m: {k: med(rs, k) for k in ["process_wall_s", "first_step_s", "trained_per_s", *[f"t_{p}" for p in PHASES]]}
        for m, rs in by_mode.items()
    }
    if "ray" in summary and "local" in summary and summary["local"]["trained_per_s"]:
        summary["ray_over_local_trained_per_s"] = round(
            summary["ray"]["trained_per_s"] / summary["local"]["trained_per_s"], 2
        )
    print(json.dumps(summary, indent=1))
    print(CAVEAT)
    payload = {"machine": machine_info(), "argv": sys.argv[1:], "steps": args.steps, "rows": rows, "summary": summary}
    print(f"wrote {write_results('startup', payload, quick=False, out=args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
