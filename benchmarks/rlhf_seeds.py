"""RLHF over seeds: does the demo recipe learn on every seed, through the Ray program?

For each seed: the demo's models for that seed (init-model + train-rm with run.seed = seed,
cached under --models-dir, so variants share them), then `shoal train CONFIG` in a fresh
process per run (its own Ray) with the variant's overrides. Reads each run's summary.json:
held-out gold before -> after, proxy reward, KL to the SFT policy, distinct answers (collapse),
samples generated, dropped as stale, wall time. Variants run alternately per seed (A B A B),
so machine noise spreads over all of them.

    python benchmarks/rlhf_seeds.py --seeds 0 1 2                           # the shipped demo
    python benchmarks/rlhf_seeds.py --seeds 0 1 2 \\
        --variant lag0:rollout.max_policy_lag=0 \\
        --variant naive:ppo.correction=none                                  # an ablation
    python benchmarks/rlhf_seeds.py --seeds 0 1 2 --set run.mode=local     # in one process
    python benchmarks/rlhf_seeds.py --seeds 0 1 2 \\
        --variant ppo:config=deploy/configs/demo.yaml \\
        --variant dpo:config=deploy/configs/dpo_demo.yaml                    # algorithms side by side

Each variant scores with the seed's reward model of its `reward.rm_ensemble` (the config's, or
the variant's override): one model in `seed<N>/reward`, a K-member ensemble in
`seed<N>/reward_ens<K>` (trained on first use, ~45 s per member on one core):

    python benchmarks/rlhf_seeds.py --seeds 0 1 2 --variant one_rm:reward.rm_ensemble=1 \\
        --variant ens3_wco:reward.rm_ensemble=3,reward.rm_ensemble_reduce=wco

A variant's `config=PATH` runs that config file instead of --config (each seed's models are
built once, from --config). Per run: the labelled comparisons it used (the reward model's
training pairs when a reward model ranks or rewards the samples, else the DPO data set's pairs),
answers generated, and trained answers per second of training wall time (PPO: a batch's
samples; GRPO/RLOO/REINFORCE++: groups x group size; DPO: 2 answers per pair).

Prints a table per run and a summary per variant (median and range over seeds); writes JSON to
benchmarks/results/rlhf_seeds.json (or --out).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import CAVEAT, ROOT, format_table, machine_info, write_results  # noqa: E402

DEMO = ROOT / "deploy" / "configs" / "demo.yaml"


def cli(*args: str, timeout: float = 1800) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-m", "shoal.deploy.cli", *args]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def ensure_models(models_dir: Path, seed: int, config: Path, ensemble: int | None = None) -> dict[str, str]:
    """SFT policy + reward model for this seed (built once, reused by every variant); with
    ensemble K > 1 (default: the config's reward.rm_ensemble) the reward model is a K-member
    ensemble (`reward/ensemble.py`) in `reward_ens<K>`, trained on first use from the same SFT
    policy."""
    ensemble = ensemble or ensemble_size(config, [])
    out = models_dir / f"seed{seed}"
    reward = out / ("reward" if ensemble == 1 else f"reward_ens{ensemble}")
    paths = {"policy": str(out / "policy"), "reward": str(reward)}
    sets = ["--set", f"run.seed={seed}", "--set", f"model.path={paths['policy']}"]
    sets += ["--set", f"reward.reward_model_path={paths['reward']}", "--set", f"reward.rm_ensemble={ensemble}"]
    for cmd, done in (("init-model", out / "policy" / "config.json"), ("train-rm", reward / "train_rm.json")):
        if not done.is_file():
            r = cli(cmd, str(config), "--quiet", *sets)
            if r.returncode != 0:
                raise SystemExit(f"{cmd} seed {seed} failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    return paths


def variant_config(config: Path, overrides: list[str]) -> Path:
    """The config file a variant runs: its `config=PATH`, else --config."""
    return Path(next((o.split("=", 1)[1] for o in overrides if o.startswith("config=")), config))


def ensemble_size(config: Path, overrides: list[str]) -> int:
    """reward.rm_ensemble of a variant: the config file's, or the variant's override."""
    from shoal.services.config import load_config

    cfg = load_config(variant_config(config, overrides), [o for o in overrides if not o.startswith("config=")])
    return cfg.reward.rm_ensemble


def budget(config: Path, sets: list[str]) -> dict[str, Any]:
    """What a run consumes: labelled comparisons, and answers trained on per learner step."""
    from shoal.services.config import load_config

    cfg = load_config(config, sets)
    algo = cfg.run.algorithm
    a = getattr(cfg, algo)
    per_step = {"ppo": lambda: a.batch_size, "dpo": lambda: 2 * a.batch_size}.get(
        algo, lambda: a.batch_size * a.group_size
    )
    uses_rm = algo != "dpo" or (a.online and a.judge == "reward")
    labels = cfg.reward.rm_pairs if uses_rm else (None if a.online else a.pairs)
    return {"algorithm": algo, "labels": labels, "trained_per_step": per_step()}


def run_once(config: Path, seed: int, models: dict[str, str], overrides: list[str], runs_dir: Path) -> dict[str, Any]:
    config = variant_config(config, overrides)
    overrides = [o for o in overrides if not o.startswith("config=")]
    sets = [
        f"run.seed={seed}",
        f"model.path={models['policy']}",
        f"reward.reward_model_path={models['reward']}",
        f"run.runs_dir={runs_dir}",
        "dashboard.enabled=false",
        *overrides,
    ]
    t0 = time.perf_counter()
    r = cli("train", str(config), "--quiet", *[a for s in sets for a in ("--set", s)])
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        return {"seed": seed, "error": (r.stderr or r.stdout)[-400:], "wall_s": wall}
    summary_dir = max(runs_dir.glob("*/summary.json"), key=lambda p: p.stat().st_mtime).parent
    s = json.loads((summary_dir / "summary.json").read_text())
    before, after = s.get("before", {}), s.get("after", {})
    samples = s.get("samples") or 0
    b = budget(config, sets)
    train_s = s.get("wall_s") or float("nan")
    return {
        "seed": seed,
        "algorithm": b["algorithm"],
        "labels": b["labels"],
        "trained_per_s": (s.get("learner_steps") or 0) * b["trained_per_step"] / train_s,
        "gold_before": before.get("gold_reward"),
        "gold_after": after.get("gold_reward"),
        "gold_gain": (after.get("gold_reward") or 0) - (before.get("gold_reward") or 0),
        "proxy_after": after.get("proxy_reward"),
        "kl_after": after.get("kl_ref"),
        "distinct_per_topic": after.get("distinct_per_topic"),
        "distinct_frac": after.get("distinct_frac"),
        "samples": samples,
        "learner_steps": s.get("learner_steps"),
        "dropped_frac": (s.get("dropped_stale") or 0) / samples if samples else None,
        "train_wall_s": s.get("wall_s"),
        "wall_s": round(wall, 1),
    }


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in rows if "error" not in r]
    out: dict[str, Any] = {"runs": len(rows), "failed": len(rows) - len(ok)}
    for key in ("gold_after", "gold_gain", "kl_after", "dropped_frac", "distinct_per_topic", "wall_s", "trained_per_s"):
        vals = [r[key] for r in ok if r.get(key) is not None]
        if vals:
            out[f"{key}_median"] = statistics.median(vals)
            out[f"{key}_min"], out[f"{key}_max"] = min(vals), max(vals)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--config", default=str(DEMO))
    ap.add_argument("--set", action="append", default=[], help="override for every variant")
    ap.add_argument("--variant", action="append", default=[], help="name:k=v,k=v (default: one variant, the config)")
    ap.add_argument("--models-dir", default=str(ROOT / "benchmarks" / "results" / "models"))
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    variants = {"config": []}
    if args.variant:
        variants = {}
        for spec in args.variant:
            name, _, sets = spec.partition(":")
            variants[name] = [x for x in sets.split(",") if x]
    runs_root = Path(args.models_dir).parent / "rlhf_seeds_runs"
    rows: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    for seed in args.seeds:
        for name, sets in variants.items():
            overrides = [*args.set, *sets]
            k = ensemble_size(Path(args.config), overrides)
            models = ensure_models(Path(args.models_dir), seed, Path(args.config), k)
            row = run_once(Path(args.config), seed, models, overrides, runs_root / name / f"seed{seed}")
            rows[name].append(row)
            print(json.dumps({"variant": name, **row}), flush=True)
    cols = [
        ("seed", "seed", "d"),
        ("gold_before", "gold before", ".3f"),
        ("gold_after", "gold after", ".3f"),
        ("kl_after", "KL to SFT", ".1f"),
        ("distinct_per_topic", "answers/topic", ".1f"),
        ("dropped_frac", "dropped", ".1%"),
        ("samples", "generated", "d"),
        ("labels", "labels", "d"),
        ("trained_per_s", "trained/s", ".0f"),
        ("wall_s", "wall s", ".0f"),
    ]
    summary = {}
    for name, rs in rows.items():
        print(f"\nvariant {name}: {' '.join(variants[name]) or '(config as is)'}")
        print(format_table([r for r in rs if "error" not in r], cols))
        for r in rs:
            if "error" in r:
                print(f"  seed {r['seed']} FAILED: {r['error']}")
        summary[name] = summarize(rs)
        print("  " + json.dumps(summary[name]))
    print(CAVEAT)
    payload = {
        "machine": machine_info(),
        "config": args.config,
        "set": args.set,
        "variants": variants,
        "rows": rows,
        "summary": summary,
    }
    print(f"wrote {write_results('rlhf_seeds', payload, quick=False, out=args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
