"""The Gao curve: gold and proxy reward against d = sqrt(KL(pi || pi_SFT)), best-of-n and PPO.

Reward over-optimisation (Gao, Schulman, Hilton 2022): the policy optimises a learned proxy
(the demo's Bradley-Terry reward model) while the task's closed-form gold reward says how good
the answers really are. Both are measured against d = sqrt(KL to the SFT policy), in nats:

- best-of-n: the demo's SFT policy samples 64 answers for each of 128 held-out prompts once;
  for n = 1, 2, 4, ..., 64 the expected gold (and proxy) reward of the answer the proxy ranks
  first among n is the unbiased estimate from the 64 samples (the average over every n-subset:
  the answer of proxy rank i, ascending, is the argmax of C(i-1, n-1) of the C(64, n) subsets).
  KL_bon = log n - (n-1)/n (the analytic value, an upper bound).
- RL: `shoal train` of the PPO demo, one run per KL setting (run.mode=local, one process);
  per learner step the run's metrics stream gives `learner/kl_ref` (KL of the training batch
  to the SFT policy per answer), `reward/gold_mean` and `reward/mean` of the same batch (the
  demo's only trained reward is the reward model, so `reward/mean` is the proxy of exactly
  that batch), smoothed with a centred moving average over --smooth steps.

Rewards are gains over the SFT policy (R - R(pi_SFT), R(pi_SFT) = best-of-1 on the held-out
prompts) and the paper's functional forms are fitted to the gold gains by linear least squares
(both are linear in alpha and beta): best-of-n R(d) = d (alpha - beta d), RL R(d) = d (alpha -
beta log d) (all runs pooled, and per run). Reported: alpha, beta, R^2, the d that maximises
the fit and the gold gain there.

    python benchmarks/gao_curve.py --quick     # 2 runs x 50 steps (kl_target 4 / kl_coef 0.01): ~4 min on 2 cores
                                               # with the models built (the first time adds init-model + train-rm)
    python benchmarks/gao_curve.py             # 4 runs x 100 steps (kl_coef 0.2, 0.05, 0.01 and kl_target 4)
    python benchmarks/gao_curve.py --run low:reward.kl_coef=0.001,reward.adaptive_kl=false --steps 80

The demo's models are built once per seed under --models-dir (shared with rlhf_seeds.py).
Prints the tables; writes benchmarks/results/gao_curve.json and gao_curve.png (and copies the
PNG to docs/gao_curve.png with --docs; `--replot JSON` only redraws a finished run's plot).
Needs matplotlib (`pip install -e '.[bench]'`). A run needs a KL scorer (kl_coef > 0 or
adaptive_kl) for `learner/kl_ref`.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import RESULTS_DIR, ROOT, format_table, report, single_thread_env, write_results  # noqa: E402
from benchmarks.rlhf_seeds import DEMO, ensure_models, run_once  # noqa: E402

NS = (1, 2, 4, 8, 16, 32, 64)
QUICK_RUNS = {
    "kl_target=4": ["reward.adaptive_kl=true", "reward.kl_target=4.0"],
    "kl_coef=0.01": ["reward.adaptive_kl=false", "reward.kl_coef=0.01"],
}
FULL_RUNS = {
    "kl_coef=0.2": ["reward.adaptive_kl=false", "reward.kl_coef=0.2"],
    "kl_coef=0.05": ["reward.adaptive_kl=false", "reward.kl_coef=0.05"],
    "kl_coef=0.01": ["reward.adaptive_kl=false", "reward.kl_coef=0.01"],
    "kl_target=4": ["reward.adaptive_kl=true", "reward.kl_target=4.0"],
}


# ---- the paper's functional forms ----------------------------------------------------------


def kl_bon(n: int) -> float:
    """KL(best-of-n || pi) = log n - (n-1)/n nats (Gao et al. 2022; an upper bound)."""
    return math.log(n) - (n - 1) / n


def _dlogd(d: np.ndarray) -> np.ndarray:
    return np.where(d > 0, d * np.log(np.where(d > 0, d, 1.0)), 0.0)


def gao_form(kind: str, d: np.ndarray, alpha: float, beta: float) -> np.ndarray:
    """best-of-n: d (alpha - beta d); rl: d (alpha - beta log d)."""
    d = np.asarray(d, dtype=float)
    return alpha * d - beta * (d * d if kind == "bon" else _dlogd(d))


def fit_gao(kind: str, d: Any, r: Any) -> dict[str, float]:
    """Least-squares alpha, beta of `gao_form(kind)` (no intercept: R(0) = 0), R^2, and the d
    that maximises the fitted curve (bon: alpha / 2 beta; rl: exp(alpha / beta - 1))."""
    d, r = np.asarray(d, dtype=float), np.asarray(r, dtype=float)
    design = np.stack([d, -(d * d if kind == "bon" else _dlogd(d))], axis=1)
    (alpha, beta), *_ = np.linalg.lstsq(design, r, rcond=None)
    alpha, beta = float(alpha), float(beta)
    resid = r - design @ np.array([alpha, beta])
    ss_tot = float(((r - r.mean()) ** 2).sum())
    out = {
        "alpha": alpha,
        "beta": beta,
        "r2": 1 - float((resid**2).sum()) / ss_tot if ss_tot else math.nan,
    }
    if beta > 0:
        d_star = alpha / (2 * beta) if kind == "bon" else math.exp(alpha / beta - 1)
        out["d_star"], out["r_star"] = d_star, float(gao_form(kind, np.array([d_star]), alpha, beta)[0])
    out["points"] = len(d)
    return out


def best_of_n(proxy: np.ndarray, gold: np.ndarray, n: int) -> tuple[float, float]:
    """Unbiased E[gold], E[proxy] of the proxy-argmax among n of the k samples per prompt.

    proxy, gold: [prompts, k]. Sorted by proxy ascending, the sample of rank i (1-based) is the
    argmax of a uniformly random n-subset with probability C(i-1, n-1) / C(k, n)."""
    k = proxy.shape[1]
    order = np.argsort(proxy, axis=1, kind="stable")
    weights = np.array([math.comb(i - 1, n - 1) for i in range(1, k + 1)], dtype=float) / math.comb(k, n)
    g = np.take_along_axis(gold, order, axis=1) @ weights
    p = np.take_along_axis(proxy, order, axis=1) @ weights
    return float(g.mean()), float(p.mean())


def moving_average(x: np.ndarray, w: int) -> np.ndarray:
    """Centred moving average over w points ('valid': len(x) - w + 1 values)."""
    w = max(1, min(w, len(x)))
    return np.convolve(x, np.ones(w) / w, mode="valid")


# ---- best-of-n -------------------------------------------------------------------------------


def sample_bon(cfg: Any, prompts_n: int, k: int, seed: int, chunk: int = 512) -> dict[str, Any]:
    """k samples of the SFT policy for each of prompts_n held-out prompts, scored by the reward
    model (proxy) and the task's gold reward: arrays [prompts, k]."""
    from transformers import AutoTokenizer

    from shoal.reward.scorers import GoldScorer, RewardModelScorer
    from shoal.rollout.hf_engine import HFEngine
    from shoal.rollout.tasks import TaskPromptSource, task_from_config

    task = task_from_config(cfg.task)
    tok = AutoTokenizer.from_pretrained(cfg.model.path)
    # the eval stream's seed (learner/ppo/builder.py): prompts disjoint from training
    prompts = TaskPromptSource(task, tok, cfg.run.seed * 1000 + 7, prefix="e").next_batch(prompts_n)
    r = cfg.rollout
    engine = HFEngine(
        cfg.model.path, temperature=r.temperature, top_k=r.top_k, max_new_tokens=r.max_new_tokens, seed=seed
    )
    rm, gold_scorer = RewardModelScorer(cfg.reward.reward_model_path), GoldScorer(task)
    flat = [p for p in prompts for _ in range(k)]  # prompt-major: row i = prompt i's k samples
    proxy, gold, texts = [], [], []
    for i in range(0, len(flat), chunk):
        rollouts = engine.generate(flat[i : i + chunk])
        proxy += [t.sequence[rm.name] for t in rm.score(rollouts)]
        gold += [t.metrics_only[gold_scorer.name] for t in gold_scorer.score(rollouts)]
        texts += [ro.response_text for ro in rollouts]
    shape = (prompts_n, k)
    return {
        "proxy": np.array(proxy).reshape(shape),
        "gold": np.array(gold).reshape(shape),
        "distinct_frac": len(set(texts)) / len(texts),
    }


def bon_rows(samples: dict[str, Any], ns: tuple[int, ...]) -> list[dict[str, Any]]:
    gold0, proxy0 = best_of_n(samples["proxy"], samples["gold"], 1)
    rows = []
    for n in ns:
        g, p = best_of_n(samples["proxy"], samples["gold"], n)
        kl = kl_bon(n)
        rows.append(
            {
                "n": n,
                "kl": kl,
                "d": math.sqrt(kl),
                "gold": g,
                "gold_gain": g - gold0,
                "proxy": p,
                "proxy_gain": p - proxy0,
            }
        )
    return rows


# ---- RL --------------------------------------------------------------------------------------


def run_metrics(runs_dir: Path, run_id: str) -> list[dict[str, Any]]:
    """The learner's entries of one run: [{step, kl_ref, gold, proxy}] from the embedded Redis."""
    from shoal.services.metrics import MetricsReader
    from shoal.services.redis_server import resolve_redis

    url, server = resolve_redis(None, runs_dir)
    try:
        names = ["learner/kl_ref", "reward/gold_mean", "reward/mean"]
        entries = MetricsReader(url).history(run_id, names=names, source="learner")
    finally:
        if server is not None:
            server.close()
    return [
        {
            "step": e["step"],
            "kl_ref": e["data"]["learner/kl_ref"],
            "gold": e["data"]["reward/gold_mean"],
            "proxy": e["data"]["reward/mean"],
        }
        for e in entries
        if all(e["data"].get(n) is not None for n in names)
    ]


def rl_run(name: str, sets: list[str], args: argparse.Namespace, models: dict[str, str]) -> dict[str, Any]:
    runs_dir = RESULTS_DIR / "gao_curve_runs" / name.replace("=", "_")
    shutil.rmtree(runs_dir, ignore_errors=True)
    overrides = ["run.mode=local", f"run.total_steps={args.steps}", *args.set, *sets]
    row = run_once(Path(args.config), args.seed, models, overrides, runs_dir)
    if "error" in row:
        raise SystemExit(f"run {name} failed: {row['error']}")
    run_id = json.loads(next(runs_dir.glob("*/summary.json")).read_text())["run_id"]
    steps = run_metrics(runs_dir, run_id)
    if len(steps) < 2:
        raise SystemExit(f"run {name}: no learner/kl_ref in its metrics (set reward.kl_coef > 0 or adaptive_kl)")
    return {"name": name, "set": sets, "summary": row, "run_id": run_id, "steps": steps}


def smoothed(steps: list[dict[str, Any]], w: int, gold0: float, proxy0: float) -> dict[str, list[float]]:
    kl = moving_average(np.array([s["kl_ref"] for s in steps]), w)
    return {
        "d": np.sqrt(np.clip(kl, 0, None)).tolist(),
        "gold_gain": (moving_average(np.array([s["gold"] for s in steps]), w) - gold0).tolist(),
        "proxy_gain": (moving_average(np.array([s["proxy"] for s in steps]), w) - proxy0).tolist(),
    }


# ---- plot ------------------------------------------------------------------------------------


def plot(path: Path, bon: list[dict[str, Any]], runs: list[dict[str, Any]], fits: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_g, ax_p) = plt.subplots(1, 2, figsize=(11, 5.2))
    d_max = max([r["d"] for r in bon] + [max(run["curve"]["d"], default=0) for run in runs])
    grid = np.linspace(0, d_max * 1.02, 200)
    bd = [r["d"] for r in bon]
    ax_g.plot(bd, [r["gold_gain"] for r in bon], "ko", ms=5, label="best-of-n (n = 1..64)")
    for r in bon:
        ax_g.annotate(str(r["n"]), (r["d"], r["gold_gain"]), textcoords="offset points", xytext=(3, -10), fontsize=7)
    b = fits["bon"]
    ax_g.plot(
        grid[grid <= bd[-1] * 1.3],
        gao_form("bon", grid[grid <= bd[-1] * 1.3], b["alpha"], b["beta"]),
        "k:",
        label=f"fit d(α - βd): α={b['alpha']:.3f} β={b['beta']:.3f} R²={b['r2']:.2f}",
    )
    ax_p.plot(bd, [r["proxy_gain"] for r in bon], "ko", ms=5, label="best-of-n")
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, run in enumerate(runs):
        c = colors[i % len(colors)]
        for ax, key in ((ax_g, "gold_gain"), (ax_p, "proxy_gain")):
            ax.plot(
                run["curve"]["d"], run["curve"][key], "-", color=c, lw=1.4, label=f"PPO {run['name']} (dot: last step)"
            )
            ax.plot(run["curve"]["d"][-1:], run["curve"][key][-1:], "o", color=c, ms=4)
    if "rl" in fits:
        f = fits["rl"]
        ax_g.plot(
            grid,
            gao_form("rl", grid, f["alpha"], f["beta"]),
            "--",
            color="0.35",
            label=f"fit d(α - β log d): α={f['alpha']:.3f} β={f['beta']:.3f} R²={f['r2']:.2f}",
        )
    for ax, what in ((ax_g, "gold"), (ax_p, "proxy (reward model)")):
        ax.axhline(0, color="0.8", lw=0.8)
        ax.set_xlabel("d = sqrt(KL(π || π_SFT))  [sqrt nats]")
        ax.set_ylabel(f"{what} reward - SFT's")
        ax.set_title(f"{what} reward")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, frameon=False)
    fig.suptitle("Reward over-optimisation on the demo (keywords task, tiny Llama): Gao et al. 2022", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---- main ------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--quick", action="store_true", help="2 runs x 50 steps (~4 min on 2 cores once the models are built)"
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--config", default=str(DEMO))
    ap.add_argument("--steps", type=int, default=None, help="learner steps per PPO run (quick 50, else 100)")
    ap.add_argument("--run", action="append", default=[], help="name:k=v,k=v, one PPO run each (default: see above)")
    ap.add_argument("--set", action="append", default=[], help="override for every PPO run")
    ap.add_argument("--prompts", type=int, default=128, help="held-out prompts for best-of-n")
    ap.add_argument("--samples", type=int, default=64, help="samples per prompt for best-of-n (n up to this)")
    ap.add_argument("--smooth", type=int, default=5, help="moving-average window over learner steps")
    ap.add_argument("--models-dir", default=str(RESULTS_DIR / "models"))
    ap.add_argument("--docs", action="store_true", help="also copy the PNG to docs/gao_curve.png")
    ap.add_argument("--out", default=None)
    ap.add_argument("--replot", default=None, metavar="JSON", help="only redraw the plot of a results JSON")
    args = ap.parse_args(argv)
    if args.replot:
        doc = json.loads(Path(args.replot).read_text())
        plot(Path(doc["png"]), doc["best_of_n"], doc["runs"], doc["fits"])
        if args.docs:
            shutil.copyfile(doc["png"], ROOT / "docs" / "gao_curve.png")
        print(f"wrote {doc['png']}")
        return 0
    args.steps = args.steps or (50 if args.quick else 100)
    single_thread_env()
    from shoal.services.config import load_config

    t_start = time.perf_counter()
    models = ensure_models(Path(args.models_dir), args.seed, Path(args.config))
    t_models = time.perf_counter() - t_start
    cfg = load_config(
        args.config,
        [f"run.seed={args.seed}", f"model.path={models['policy']}", f"reward.reward_model_path={models['reward']}"],
    )

    t0 = time.perf_counter()
    samples = sample_bon(cfg, args.prompts, args.samples, args.seed)
    bon = bon_rows(samples, tuple(n for n in NS if n <= args.samples))
    t_bon = time.perf_counter() - t0
    gold0, proxy0 = bon[0]["gold"], bon[0]["proxy"]
    print(
        f"best-of-n: {args.prompts} prompts x {args.samples} samples in {t_bon:.0f}s; SFT gold {gold0:.3f}, proxy {proxy0:.3f}",
        flush=True,
    )

    variants = {
        k: v for k, _, s in (spec.partition(":") for spec in args.run) for v in [[x for x in s.split(",") if x]]
    }
    variants = variants or (QUICK_RUNS if args.quick else FULL_RUNS)
    runs, t0 = [], time.perf_counter()
    for name, sets in variants.items():
        t_run = time.perf_counter()
        run = rl_run(name, sets, args, models)
        run["curve"] = smoothed(run["steps"], args.smooth, gold0, proxy0)
        run["fit"] = fit_gao("rl", run["curve"]["d"], run["curve"]["gold_gain"])
        runs.append(run)
        print(f"PPO {name}: {len(run['steps'])} steps in {time.perf_counter() - t_run:.0f}s", flush=True)
    t_rl = time.perf_counter() - t0

    fits = {"bon": fit_gao("bon", [r["d"] for r in bon], [r["gold_gain"] for r in bon])}
    fits["bon_proxy"] = fit_gao("bon", [r["d"] for r in bon], [r["proxy_gain"] for r in bon])
    if runs:
        fits["rl"] = fit_gao(
            "rl", [d for r in runs for d in r["curve"]["d"]], [g for r in runs for g in r["curve"]["gold_gain"]]
        )
        fits["rl_proxy"] = fit_gao(
            "rl", [d for r in runs for d in r["curve"]["d"]], [p for r in runs for p in r["curve"]["proxy_gain"]]
        )
        fits.update({f"rl {r['name']}": r["fit"] for r in runs})

    png = Path(args.out).with_suffix(".png") if args.out else RESULTS_DIR / "gao_curve.png"
    plot(png, bon, runs, fits)
    if args.docs:
        (ROOT / "docs").mkdir(exist_ok=True)
        shutil.copyfile(png, ROOT / "docs" / "gao_curve.png")
    wall = time.perf_counter() - t_start

    bon_table = format_table(
        bon,
        [
            ("n", "n", "d"),
            ("kl", "KL_bon", ".3f"),
            ("d", "d", ".3f"),
            ("gold", "gold", ".3f"),
            ("gold_gain", "gold - SFT", "+.3f"),
            ("proxy", "proxy", ".3f"),
            ("proxy_gain", "proxy - SFT", "+.3f"),
        ],
    )
    rl_table = format_table(
        [
            {
                "name": r["name"],
                "steps": len(r["steps"]),
                "d_end": r["curve"]["d"][-1],
                "gold_peak": max(r["curve"]["gold_gain"]),
                "d_peak": r["curve"]["d"][int(np.argmax(r["curve"]["gold_gain"]))],
                "gold_end": r["curve"]["gold_gain"][-1],
                "proxy_end": r["curve"]["proxy_gain"][-1],
                "eval_gold": r["summary"].get("gold_after"),
                "eval_kl": r["summary"].get("kl_after"),
            }
            for r in runs
        ],
        [
            ("name", "PPO run", "s"),
            ("steps", "steps", "d"),
            ("d_end", "d end", ".2f"),
            ("gold_peak", "peak gold - SFT", "+.3f"),
            ("d_peak", "d at peak", ".2f"),
            ("gold_end", "gold - SFT end", "+.3f"),
            ("proxy_end", "proxy - SFT end", "+.3f"),
            ("eval_gold", "held-out gold after", ".3f"),
            ("eval_kl", "held-out KL after", ".1f"),
        ],
    )
    fit_table = format_table(
        [{"fit": k, **v} for k, v in fits.items()],
        [
            ("fit", "fit (gold unless _proxy)", "s"),
            ("alpha", "alpha", ".4f"),
            ("beta", "beta", ".4f"),
            ("r2", "R^2", ".3f"),
            ("d_star", "d*", ".2f"),
            ("r_star", "R(d*)", "+.3f"),
            ("points", "points", "d"),
        ],
    )
    payload = {
        "config": args.config,
        "seed": args.seed,
        "steps": args.steps,
        "smooth": args.smooth,
        "sft": {"gold": gold0, "proxy": proxy0, "distinct_frac": samples["distinct_frac"]},
        "best_of_n": bon,
        "runs": [{k: v for k, v in r.items()} for r in runs],
        "fits": fits,
        "png": str(png),
        "timing_s": {
            "models": round(t_models, 1),
            "best_of_n": round(t_bon, 1),
            "rl": round(t_rl, 1),
            "total": round(wall, 1),
        },
    }
    path = write_results("gao_curve", payload, quick=args.quick, out=args.out)
    print(f"\nbest-of-n ({args.prompts} held-out prompts x {args.samples} samples of the SFT policy)\n{bon_table}")
    print(
        f"\nPPO runs ({args.steps} learner steps, run.mode=local; curves smoothed over {args.smooth} steps)\n{rl_table}"
    )
    report(f"Gao et al. fits (reward gain over SFT vs d); wall {wall:.0f}s, plot {png}", fit_table, path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
