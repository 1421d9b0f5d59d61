"""Policy lag: the distribution of learner version - item policy_version over the items the
R2D2 learner samples from its replay, with 1, 2 and 4 rollout workers (issue 3), through the
real Ray program (services.program.run_ray over the R2D2 builder).

What runs: for each variant (--variants) and each worker count N (--workers), one `run_ray` of
algorithm r2d2 with a fixed number of learner steps (--steps, default 60). Only N and the
variant change between runs; the seed and everything else stay the same (COMMON below): the
default environment (cue_recall, ~12-turn episodes), r2d2 batch 16, replay min_size_to_sample
32 and capacity 2000, no replay max_policy_lag (as R2D2: nothing is dropped for staleness),
4 episodes per worker request, env.eval_episodes 0, rollout.num_cpus_per_worker 0.25 (4
workers + the 1-CPU learner fit a 2-CPU Ray), one torch thread per process. Variants:
- `base`: samples_per_insert 4 (the config default: Reverb's rate limiter), sync_interval 1;
- `sync5`: the same with rollout.sync_interval 5;
- `nolimit`: replay.samples_per_insert null (no rate limiter), sync_interval 1.
The frozen turn encoder is built once (R2D2Builder.prepare_models) and passed to every
run as r2d2.encoder_path. Ray is started once, before the first run (not in any wall time),
sized as services.program.init_ray would size it for the largest N; every run reuses it
(run_ray then neither starts nor stops Ray) and starts its own fresh actors. One embedded
Redis holds the metrics of all runs. Per-worker epsilons follow the Ape-X spread
(r2d2.epsilon_alpha), so N also changes how greedy the workers are (`--set
r2d2.epsilon_alpha=0` gives every worker epsilon 0.4).

What is read back, per run, from the run's metrics in Redis:
- the lag distribution: BufferStage keeps a running count of the policy lag of every item it
  hands to the learner and logs it as `buffer/policy_lag/<k>` at each sample, so the last
  value of each name (`MetricsReader.latest`) is the histogram over the whole run (steps x
  batch samples; items are drawn with replacement, an item sampled twice counts twice).
  From it: median, p90 (exact up to lag 3, else a bucket's lower bound: the histogram has
  fixed buckets 0 1 2 3 4 8 16 32 64+) and the fractions at lag 0, 1, 2-3, 4-15 and >= 16;
  mean and max come from the per-batch `buffer/policy_lag_mean` / `_max` series. The
  full histogram is in the JSON;
- `worker lag`: how old a worker's weights were when it finished a request: for every
  request (the worker's `rollout/episodes` entry, logged with step = its policy_version),
  the learner's version at that moment minus that step, averaged over requests (weighted by
  episodes);
- `queue lag`: EpisodeReplay parks the items the rate limiter refuses in a FIFO pending queue
  (nothing is lost) and moves them in as the learner samples. With the limiter at its cap,
  items enter at batch / samples_per_insert = 4 per learner step, so the wait is about
  pending x spi / batch learner steps; `buffer/pending` (logged at every sample) is averaged
  over the learner's steps. worker lag + queue lag is roughly the lag an item has when it
  enters the replay; the rest of its sampled lag is its age in the replay;
- steady-state rates between the learner's first and last step entries: `episodes/s`
  (increments of every worker's `rollout/episodes`; turns/s is in the JSON) and `steps/s`;
  `learner busy` (sum of learner/step_time_s / window; the rest is the learner's
  round trips through the driver and the replay actor; the time it waited for the limiter,
  learner/wait_batch_s, is in the JSON as learner_wait);
- `samples/insert`: `buffer/samples_per_insert` at the learner's last sample;
- `wall s`: `summary["wall_s"]` of run_ray: starting the actors, the run, the final drain.
  60 steps of this tiny model take only 2-5 s, so the wall time is mostly actor start-up and
  the steady rates come from short windows (`steady_s` in the JSON): they are noisy.

Reading lag here: it is counted in learner steps, not seconds, and it depends on
- samples_per_insert: the rate limiter ties learner steps to inserts (4 items per learner
  step here), whoever is faster, so the age of items in the replay in learner steps hardly
  depends on N. Nothing is evicted in a run this short and new items get the largest
  priority, but sampling spreads over everything held: the mean lag is mostly that age and
  grows with the length of the run (for uniform sampling it would be ~19.7 steps over 60
  steps with this insert schedule: 64 items at the start, then 4 per step);
- sync_interval: workers get new weights every sync_interval learner steps (a worker loads
  them after its current request), which adds up to sync_interval - 1 steps;
- the relative speed of actors and learner, and the back-pressure: a worker is sent a new
  request while the replay reports free room, but a request brings ~24 items (4 episodes) for
  every free slot it was launched against, so with more workers more items wait in the
  pending queue (the `queue lag` column);
- on this 2-core machine the workers and the learner share the cores, so more workers do not
  give more total throughput.
One run per configuration (no repeats). The lag of consecutive samples is correlated, so treat
differences of a step or so in the mean as noise. See benchmarks/README.md for the measured
numbers and their reading.

Run (from the repository root):
    .venv/bin/python benchmarks/policy_lag.py          # full: 3 variants x N = 1, 2, 4, 60 steps, ~5 min
    .venv/bin/python benchmarks/policy_lag.py --quick  # smoke: base, N = 1, 2, 12 steps, ~70 s
Options: --workers 1,2,4, --variants base,sync5,nolimit, --steps N (default 60), --set KEY=VALUE
(an extra config override for every run, repeatable), --out PATH.
Writes benchmarks/results/policy_lag.json.
"""

from __future__ import annotations

import argparse
import bisect
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import _common as C

NAME = "policy_lag"
COMMON = [
    "run.algorithm=r2d2",
    "run.seed=0",
    "env.eval_episodes=0",
    "env.episodes_per_request=4",
    "dashboard.enabled=false",
    "r2d2.batch_size=16",
    "replay.min_size_to_sample=32",
    "replay.samples_per_insert=4",
    "replay.capacity=2000",
    "rollout.num_cpus_per_worker=0.25",
]
# (first, last) lag of each fraction column, None: open; on the buffer's fixed histogram
# buckets (services.stages.LAG_BUCKETS: 0 1 2 3 4 8 16 32 64)
LAG_BINS = [(0, 0), (1, 1), (2, 3), (4, 15), (16, None)]


VARIANTS = {
    # name: (overrides, what it shows)
    "base": (["rollout.sync_interval=1"], "weights to every worker after every learner step, rate limiter on"),
    "sync5": (["rollout.sync_interval=5"], "weights every 5 learner steps"),
    "nolimit": (
        ["rollout.sync_interval=1", "replay.samples_per_insert=null"],
        "no rate limiter: learner and workers run free",
    ),
}


def run_config(
    runs_dir: Path,
    redis_url: str,
    encoder: str | None,
    steps: int,
    workers: int,
    variant: str,
    extra: Sequence[str] = (),
) -> Any:
    from shoal.services.config import load_config

    return load_config(
        None,
        [
            *COMMON,
            f"run.name=lag-{variant}-n{workers}",
            f"run.runs_dir={runs_dir}",
            f"run.redis_url={redis_url}",
            f"run.total_steps={steps}",
            f"rollout.num_workers={workers}",
            *VARIANTS[variant][0],
            *extra,
            *([f"r2d2.encoder_path={encoder}"] if encoder else []),
        ],
    )


def build_encoder(root: Path) -> str:
    """The frozen turn encoder every run shares (what each run would otherwise build itself)."""
    from shoal.builders import make_builder

    return make_builder(run_config(root, "redis://unused", None, 1, 1, "base")).prepare_models(str(root))["encoder"]


# ---- reading the metrics ---------------------------------------------------------------------


def lag_histogram(latest: dict[str, dict]) -> dict[int, int]:
    """k -> items sampled at lag k over the run (the last `buffer/policy_lag/<k>` values)."""
    prefix = "buffer/policy_lag/"
    out = {}
    for name, d in latest.items():
        if name.startswith(prefix) and name[len(prefix) :].lstrip("-").isdigit() and d["v"] is not None:
            out[int(name[len(prefix) :])] = int(d["v"])
    return dict(sorted(out.items()))


def quantile(hist: dict[int, int], q: float) -> float:
    """The smallest lag k with P(lag <= k) >= q."""
    total, acc = sum(hist.values()), 0
    for k, n in sorted(hist.items()):
        acc += n
        if acc >= q * total - 1e-9:
            return float(k)
    return float("nan")


def lag_stats(hist: dict[int, int], batches: list[dict]) -> dict[str, float]:
    """The histogram's quantiles and fractions; mean and max from the per-batch series
    (every sampled batch has the same size, so the mean of batch means is the run's mean)."""
    total = sum(hist.values())
    if not total:
        return {}
    means = [b["buffer/policy_lag_mean"] for b in batches if b.get("buffer/policy_lag_mean") is not None]
    out = {
        "sampled": total,
        "lag_mean": sum(means) / len(means) if means else float("nan"),
        "lag_median": quantile(hist, 0.5),
        "lag_p90": quantile(hist, 0.9),
        "lag_max": max((b.get("buffer/policy_lag_max") or 0.0 for b in batches), default=float("nan")),
    }
    for lo, hi in LAG_BINS:
        out[bin_key(lo, hi)] = sum(n for k, n in hist.items() if k >= lo and (hi is None or k <= hi)) / total
    return out


def bin_key(lo: int, hi: int | None) -> str:
    return f"lag {lo}" if lo == hi else f"lag {lo}+" if hi is None else f"lag {lo}-{hi}"


def stream_stats(reader: Any, run_id: str) -> dict[str, float]:
    """Steady-state rates between the learner's first and last step, and the play lag."""
    step_s = ("learner/step_time_s", "learner/step_s")  # R2D2's name, PPO's name
    learn = reader.history(run_id, names=["learner/policy_version", *step_s, "learner/wait_batch_s"], source="learner")
    learn = [e for e in learn if "learner/policy_version" in e["data"]]
    if len(learn) < 2:
        return {}
    t0, t1 = learn[0]["t"], learn[-1]["t"]
    span = t1 - t0
    times = [e["t"] for e in learn]
    versions = [int(e["data"]["learner/policy_version"]) for e in learn]
    prev: dict[str, float] = {}
    episodes_in, play_lags = 0.0, []  # (episodes, lag) per worker request
    turns_in = 0.0
    for e in reader.history(run_id, names=["rollout/episodes", "rollout/episode_length_mean"]):
        if not e["source"].startswith("rollout-") or e["step"] is None or "rollout/episodes" not in e["data"]:
            continue
        done = e["data"]["rollout/episodes"] - prev.get(e["source"], 0.0)
        prev[e["source"]] = e["data"]["rollout/episodes"]
        i = bisect.bisect_right(times, e["t"])
        learner_version = versions[i - 1] if i else 0
        play_lags.append((done, learner_version - e["step"]))
        if t0 < e["t"] <= t1:
            episodes_in += done
            turns_in += done * (e["data"].get("rollout/episode_length_mean") or 0.0)
    weight = sum(n for n, _ in play_lags)
    pending = [
        e["data"]["buffer/pending"]
        for e in reader.history(run_id, names=["buffer/pending"], source="buffer")
        if t0 <= e["t"] <= t1 and e["data"].get("buffer/pending") is not None
    ]
    return {
        "pending_mean": sum(pending) / len(pending) if pending else float("nan"),
        "pending_max": max(pending, default=float("nan")),
        "steady_s": span,
        "steady_steps_per_s": (len(learn) - 1) / span,
        "steady_episodes_per_s": episodes_in / span,
        "steady_turns_per_s": turns_in / span,
        "learner_busy": sum(next((e["data"][k] for k in step_s if k in e["data"]), 0.0) for e in learn[1:]) / span,
        "learner_wait": sum(e["data"].get("learner/wait_batch_s", 0.0) for e in learn[1:]) / span,
        "play_lag_mean": sum(n * lag for n, lag in play_lags) / weight if weight else float("nan"),
        "play_lag_max": float(max((lag for n, lag in play_lags if n), default=0)),
    }


def measure(cfg: Any, redis_url: str, variant: str) -> dict[str, Any]:
    """One run_ray; its summary plus what its metrics in Redis say about lag and rates."""
    from shoal.services.metrics import MetricsReader
    from shoal.services.program import run_ray

    summary = run_ray(cfg, progress=False)
    reader = MetricsReader(redis_url)
    latest = reader.latest(summary["run_id"])
    value = lambda name: (latest.get(name) or {}).get("v")
    hist = lag_histogram(latest)
    spi = cfg.replay.samples_per_insert
    row = {
        "variant": variant,
        "workers": cfg.rollout.num_workers,
        "sync_interval": cfg.rollout.sync_interval,
        "samples_per_insert_limit": cfg.replay.samples_per_insert,
        "learner_steps": summary["learner_steps"],
        "wall_s": summary["wall_s"],
        "episodes": summary["episodes"],
        "replay_inserts": summary["replay_inserts"],
        "samples_per_insert": value("buffer/samples_per_insert"),
        "rate_limited_inserts": value("buffer/rate_limited_inserts"),
        "rate_limited_samples": value("buffer/rate_limited_samples"),
        "learner_lag_mean_last": value("learner/policy_lag_mean"),
        "run_id": summary["run_id"],
        "histogram": hist,
    }
    batches = [
        e["data"]
        for e in reader.history(
            summary["run_id"], names=["buffer/policy_lag_mean", "buffer/policy_lag_max"], source="buffer"
        )
    ]
    row |= lag_stats(hist, batches) | stream_stats(reader, summary["run_id"])
    # with the limiter at its cap, items enter at batch / spi per learner step: the FIFO wait in steps
    row["queue_steps"] = row.get("pending_mean", float("nan")) * spi / cfg.r2d2.batch_size if spi else 0.0
    return row


def start_ray(cfg: Any) -> float:
    """Ray started once, sized as services.program.init_ray sizes it for `cfg` (the largest N);
    actor logs not forwarded. Returns the seconds it took."""
    import ray

    from shoal.services.program import required_resources

    os.environ["RAY_ENABLE_ZERO_COPY_TORCH_TENSORS"] = "1"
    cpus = max(os.cpu_count() or 1, int(required_resources(cfg)["CPU"] + 1))
    _, secs = C.timed(lambda: ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False))
    return secs


COLUMNS = [
    ("variant", "variant", "s"),
    ("workers", "workers", "d"),
    ("lag_mean", "lag mean", ".1f"),
    ("lag_median", "median", ".0f"),
    ("lag_p90", "p90", ".0f"),
    ("lag_max", "max", ".0f"),
    *[(bin_key(lo, hi), bin_key(lo, hi), ".2f") for lo, hi in LAG_BINS],
    ("play_lag_mean", "worker lag", ".2f"),
    ("queue_steps", "queue lag", ".1f"),
    ("steady_episodes_per_s", "episodes/s", ".1f"),
    ("steady_steps_per_s", "steps/s", ".1f"),
    ("samples_per_insert", "samples/insert", ".2f"),
    ("learner_busy", "learner busy", ".2f"),
    ("wall_s", "wall s", ".1f"),
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke mode: workers 1,2, variant base, 12 learner steps")
    p.add_argument("--workers", default=None, help="comma-separated rollout worker counts (default 1,2,4; quick: 1,2)")
    p.add_argument("--variants", default=None, help=f"comma-separated from {list(VARIANTS)} (default all; quick: base)")
    p.add_argument("--steps", type=int, default=None, help="run.total_steps of every run (default 60; quick: 12)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra config override for every run (repeatable)",
    )
    p.add_argument("--out", default=None, help="JSON path (default benchmarks/results/policy_lag.json)")
    a = p.parse_args(argv)
    a.workers = [int(x) for x in (a.workers or ("1,2" if a.quick else "1,2,4")).split(",")]
    a.variants = (a.variants or ("base" if a.quick else ",".join(VARIANTS))).split(",")
    a.steps = a.steps or (12 if a.quick else 60)
    for v in a.variants:
        if v not in VARIANTS:
            p.error(f"--variants: unknown variant {v!r} (have {list(VARIANTS)})")
    if min(a.workers) < 1 or a.steps < 2:
        p.error("--workers must be >= 1, --steps >= 2")
    return a


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    C.single_thread_env()
    import ray

    from shoal.services.metrics import EmbeddedRedis

    t0 = time.perf_counter()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="shoal-bench-") as tmp:
        encoder, encoder_s = C.timed(lambda: build_encoder(Path(tmp) / "models"))
        redis = EmbeddedRedis(Path(tmp) / "metrics.rdb")
        try:
            ray_init_s = start_ray(
                run_config(Path(tmp), redis.url, encoder, args.steps, max(args.workers), "base", args.set)
            )
            try:
                for variant in args.variants:
                    for n in args.workers:
                        print(f"[{NAME}] {variant}: {n} worker(s), {args.steps} learner steps ...", flush=True)
                        cfg = run_config(Path(tmp) / "runs", redis.url, encoder, args.steps, n, variant, args.set)
                        rows.append(measure(cfg, redis.url, variant))
            finally:
                ray.shutdown()
        finally:
            redis.close()
    settings = {
        "total_steps": args.steps,
        "workers": args.workers,
        "common": COMMON,
        "extra": args.set,
        "variants": {v: VARIANTS[v] for v in args.variants},
        "encoder_build_s": encoder_s,
        "ray_init_s": ray_init_s,
    }
    payload = {"settings": settings, "rows": rows, "total_s": time.perf_counter() - t0}
    path = C.write_results(NAME, payload, args.quick, args.out)
    title = (
        f"Policy lag (learner steps) of the items R2D2 samples: {args.steps} learner steps per run, batch 16, "
        f"samples_per_insert 4 unless `nolimit`; ray.init ({ray_init_s:.1f} s) not in wall"
    )
    C.report(title, C.format_table(rows, COLUMNS), path)
    print(f"total {payload['total_s']:.0f} s", flush=True)
    return {"rows": rows, "path": str(path)}


if __name__ == "__main__":
    main()
