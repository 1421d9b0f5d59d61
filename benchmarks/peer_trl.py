"""Peer comparison: Hugging Face TRL's GRPOTrainer vs Shoal's GRPO demo, same models and task.

Both sides train the demo's SFT policy against the demo's learned reward model on the built-in
`keywords` task, from the same prompts (PPOBuilder.prompt_source: train stream seed*1000,
held-out stream seed*1000+7), with one torch thread per process, runs alternating per seed
(TRL, Shoal, TRL, Shoal, ...). Reported per run:

- time to batch gold 0.3 / 0.4: seconds from launching the run's process (imports, Ray start,
  model loading included) until the gold reward of the training batches, as a moving average
  over the last 5 batches (320 samples; one 64-sample batch is too noisy for a threshold), first
  reaches the level; "never" if it does not. Shoal: `reward/gold_mean` per learner step from the
  run's metrics store (embedded Redis, runs_dir/shoal-metrics.rdb). TRL: the gold of each
  generation batch, computed inside the reward function (the reward itself is the RM only).
- final held-out gold: 128 held-out prompts sampled (temperature 1) with the final policy and
  scored with the task's gold reward (Shoal: its own summary.json `after.gold_reward`, the same
  prompts; TRL: the same 128 prompts, generated here with HF `generate`). Both sides also measure
  the SFT policy's held-out gold before training (part of both wall times).
- trained samples/s end to end: steps x 64 rollouts / wall seconds of the whole process.

Setup (a SEPARATE venv for TRL; the main .venv keeps its exact pins):

    python3 -m venv .venv-bench
    .venv-bench/bin/pip install -q torch==2.13.0            # CPU wheel; unpinned pulls CUDA
    .venv-bench/bin/pip install -q "trl==1.16.*" "transformers==5.19.0" \\
        pydantic pyyaml tokenizers safetensors tqdm numpy
    .venv-bench/bin/pip install -q -e . --no-deps             # shoal's task + reward-model code

Run (from the main venv: it drives Shoal itself and TRL through .venv-bench/bin/python):

    .venv/bin/python benchmarks/peer_trl.py --seeds 0 1 2 --models-dir /tmp/exp/models

Models: --models-dir/seed<k>/{policy,reward}, built with the CLI if missing (rlhf_seeds.ensure_models):
one reward model, the same on both sides; with --rm-ensemble 3, the demos' ensemble of three
(seed<k>/reward_ens3) on both sides: Shoal's scorer, and for TRL one reward function that
returns the same scorer's reduced reward (the calibrated members' mean).
Per seed the runs are: TRL with beta 0.1 (Shoal's kl_coef), Shoal with each --shoal-config
(default: the GRPO demo, matched to TRL below, and the PPO demo: the same 64 rollouts, 4 epochs
and 8 optimizer steps per batch, but one answer for each of 64 prompts and a critic), then TRL
with each other --trl-beta (default 0.0, TRL's own default: no KL term, no reference model).
--trl-no-kl-is: TRL without its IS-weighted KL (use_bias_correction_kl=False: plain k3, as Shoal's k3).
TRL runs are deterministic per seed (repeats give the same gold, only timings differ); Shoal's
are not (asynchronous: which policy version sampled which batch depends on timing), so repeat
the whole command to see Shoal's spread per seed.
Smoke test of the TRL side alone (2 batches, seconds): PEER_TRL_STEPS=2 .venv-bench/bin/python
benchmarks/peer_trl.py --trl-worker 0 POLICY_DIR REWARD_DIR /tmp/out.json (PEER_TRL_LOG_STEPS=8
prints TRL's own metrics).

Matched (TRL GRPOConfig <- deploy/configs/grpo_demo.yaml):
  num_generations 8 (group_size); generation batch 64 = 8 prompts x 8 (batch_size 8 groups);
  per_device_train_batch_size 32 (minibatch_size 4 groups) -> steps_per_generation 2;
  num_iterations 4 (epochs) -> 8 optimizer steps per batch; max_steps 8 x run.total_steps
  (the demo's 300 batches: 2400);
  max_completion_length 8, temperature 1, top_k 0, top_p 1; lr 5e-4 (grpo.learning_rate) constant, Adam(W) with
  weight_decay 0 on torch's fused kernel (TRL's default `adamw_torch_fused` with torch >= 2.8;
  Shoal's `shoal.tensors.adam`; until 2026-12-06 (and from 3cc7b27 to 501bc04) Shoal's learners
  used torch's slower per-parameter CPU loop), max_grad_norm 1; epsilon 0.2 (clip_coef); loss_type "grpo" (per-sequence token
  mean, = loss_aggregation sequence_mean); scale_rewards "group" ((r - mean) / std); a fixed
  beta 0.1 on a KL loss term (kl_coef 0.1, kl_mode loss, adaptive_kl false); bf16 off (TRL turns
  it on by default; 2x slower on this CPU); prompts = BOS + text (Shoal's encode_prompt; TRL's
  tokenizer adds no BOS, so the dataset prompt starts with "<s>"); 1 torch thread.
Not matched (deviations):
  - The KL term's form: Shoal's demo uses k2, 0.5 (log pi - log pi_ref)^2; TRL uses k3 weighted
    by the importance ratio pi / pi_old (use_bias_correction_kl, on by default). Their values
    differ, their gradients agree on-policy: both are the reverse KL's (tests/unit/test_kl.py).
    With --trl-no-kl-is TRL's term is plain k3 (the forward KL's gradient), as Shoal's
    `grpo.kl_estimator=k3` (a --shoal-config copy).
  - Shoal is asynchronous (a rollout worker generating while the learner trains, samples up to 2
    policy versions old, decoupled-PPO correction); TRL generates and trains in turn in one
    process (always on-policy at generation).
  - Shoal runs several processes (Ray, the rollout worker - engine auto = transformers on CPU -,
    the replay buffer, the learner),
    each with 1 torch thread, on the shared 2 cores; TRL is one process with 1 thread. So "same
    torch threads" holds per process, not per run.
  - TRL draws its 8 x run.total_steps training prompts (the first ones of Shoal's train stream) in a shuffled
    order; Shoal takes them in stream order.
  - Minibatches: TRL shuffles each 64-rollout batch once, rollout by rollout, and passes over the
    same two minibatches of 32 four times; Shoal's GRPO demo cuts whole groups (4 per minibatch)
    anew every epoch. `grpo.minibatch_unit=samples,grpo.reshuffle_each_epoch=false` is TRL's way.
  - The held-out evaluation code differs (Shoal's rollout engine vs HF generate); the prompts
    and sampling settings are the same.
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

from benchmarks._common import CAVEAT, ROOT, format_table, write_results  # noqa: E402

GRPO_DEMO = ROOT / "deploy" / "configs" / "grpo_demo.yaml"
PPO_DEMO = ROOT / "deploy" / "configs" / "demo.yaml"
BENCH_PY = ROOT / ".venv-bench" / "bin" / "python"


def load_grpo_demo() -> dict[str, Any]:
    """The GRPO demo config, whose schedule TRL is given (steps, learning rate)."""
    import yaml

    return yaml.safe_load(GRPO_DEMO.read_text())


_GRPO_DEMO_CFG = load_grpo_demo()  # read once
STEPS = int(os.environ.get("PEER_TRL_STEPS") or _GRPO_DEMO_CFG["run"]["total_steps"])  # fewer: a smoke test of TRL
LEARNING_RATE = float(_GRPO_DEMO_CFG["grpo"]["learning_rate"])
GROUP, PROMPTS_PER_BATCH, EPOCHS, MINIBATCH_GROUPS = 8, 8, 4, 4
EVAL_PROMPTS, MAX_NEW_TOKENS, SMOOTH = 128, 8, 5
LEVELS = (0.3, 0.4)


# ---- shared -----------------------------------------------------------------------------------


def time_to_levels(series: list[tuple[float, float]], t0: float) -> dict[str, float | None]:
    """[(epoch time, batch gold, ...)] -> seconds from t0 until the moving average first reaches each level."""
    out: dict[str, float | None] = {}
    for level in LEVELS:
        hit = None
        for i in range(len(series)):
            window = [x[1] for x in series[max(0, i - SMOOTH + 1) : i + 1]]
            if len(window) == SMOOTH and sum(window) / SMOOTH >= level:
                hit = series[i][0] - t0
                break
        out[f"t_gold_{level}"] = hit
    return out


def prompts(seed: int, stream: str, n: int, tokenizer: Any) -> list[Any]:
    """The same prompts as PPOBuilder.prompt_source(stream) for run.seed = seed."""
    from shoal.rollout.tasks import KeywordsTask, TaskPromptSource

    return TaskPromptSource(
        KeywordsTask(), tokenizer, seed * 1000 + (0 if stream == "train" else 7), stream[0]
    ).next_batch(n)


# ---- TRL side (runs inside .venv-bench) --------------------------------------------------------


def heldout_gold(model: Any, tokenizer: Any, seed: int) -> float:
    import torch

    from shoal.rollout.tasks import KeywordsTask

    task, ps = KeywordsTask(), prompts(seed, "eval", EVAL_PROMPTS, tokenizer)
    width = max(len(p.token_ids) for p in ps)
    ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(p.token_ids)) + p.token_ids for p in ps])
    mask = (torch.arange(width)[None, :] >= torch.tensor([width - len(p.token_ids) for p in ps])[:, None]).long()
    model.eval()
    with torch.no_grad():
        out = model.generate(
            input_ids=ids, attention_mask=mask, do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
            max_new_tokens=MAX_NEW_TOKENS, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        )  # fmt: skip
    texts = tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)
    return sum(task.gold_reward(p.meta, t) for p, t in zip(ps, texts)) / len(ps)


def trl_worker(seed: int, policy: str, reward: str, out_path: str) -> None:
    """One TRL GRPO run; writes {gold_before, gold_after, series, train_s} to out_path."""
    import torch

    torch.set_num_threads(1)
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from shoal.reward.scorers import RewardModelScorer, rm_text
    from shoal.rollout.tasks import KeywordsTask

    task = KeywordsTask()
    tok = AutoTokenizer.from_pretrained(policy)
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(policy, dtype=torch.float32)
    torch.manual_seed(seed)
    gold_before = heldout_gold(model, tok, seed)
    train = prompts(seed, "train", STEPS * PROMPTS_PER_BATCH, tok)
    bos = tok.bos_token or ""
    ds = Dataset.from_list([{"prompt": bos + p.text, "topic": p.meta["topic"]} for p in train])
    rm = RewardModelScorer(reward)  # one model, or an ensemble's mean (--rm-ensemble), as Shoal's scorer
    series: list[tuple[float, float]] = []

    def rm_reward(prompts: list[str], completions: list[str], topic: list[str], **_: Any) -> list[float]:
        texts = [rm_text(p.removeprefix(bos), c) for p, c in zip(prompts, completions)]
        with torch.no_grad():
            scores = [r for r, _ in rm.scores(texts)]
        gold = [task.gold_reward({"topic": t}, c) for t, c in zip(topic, completions)]
        # logged only, not part of the reward: (time, batch gold, batch RM mean)
        series.append((time.time(), sum(gold) / len(gold), sum(scores) / len(scores)))
        return scores

    args = GRPOConfig(
        output_dir=str(Path(out_path).parent / f"trl_seed{seed}"),
        seed=seed,
        use_cpu=True,
        bf16=False,
        num_generations=GROUP,
        per_device_train_batch_size=MINIBATCH_GROUPS * GROUP,
        gradient_accumulation_steps=1,
        steps_per_generation=PROMPTS_PER_BATCH // MINIBATCH_GROUPS,
        num_iterations=EPOCHS,
        max_steps=STEPS * EPOCHS * (PROMPTS_PER_BATCH // MINIBATCH_GROUPS),
        max_completion_length=MAX_NEW_TOKENS,
        temperature=1.0,
        top_k=0,
        top_p=1.0,
        learning_rate=LEARNING_RATE,
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=0.0,
        max_grad_norm=1.0,
        epsilon=0.2,
        beta=float(os.environ.get("PEER_TRL_BETA", 0.1)),
        loss_type="grpo",
        use_bias_correction_kl=os.environ.get("PEER_TRL_KL_IS", "1") == "1",
        scale_rewards="group",
        report_to="none",
        save_strategy="no",
        logging_steps=int(os.environ.get("PEER_TRL_LOG_STEPS", 10_000)),
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    trainer = GRPOTrainer(model=model, reward_funcs=[rm_reward], args=args, train_dataset=ds, processing_class=tok)
    t = time.time()
    trainer.train()
    train_s = time.time() - t
    gold_after = heldout_gold(trainer.model, tok, seed)
    Path(out_path).write_text(
        json.dumps({"gold_before": gold_before, "gold_after": gold_after, "series": series, "train_s": train_s})
    )


def run_trl(seed: int, models: dict[str, str], work: Path, beta: float) -> dict[str, Any]:
    work.mkdir(parents=True, exist_ok=True)
    kl_is = os.environ.get("PEER_TRL_KL_IS", "1") == "1"
    name = f"trl beta={beta:g}" + ("" if kl_is or not beta else " no-kl-is")
    out = work / f"{name.replace(' ', '_')}_seed{seed}.json"
    out.unlink(missing_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    env["PEER_TRL_BETA"] = str(beta)
    cmd = [str(BENCH_PY), __file__, "--trl-worker", str(seed), models["policy"], models["reward"], str(out)]
    t0 = time.time()
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600)
    wall = time.time() - t0
    if r.returncode != 0 or not out.is_file():
        return {"impl": name, "seed": seed, "error": (r.stderr or r.stdout)[-1500:], "wall_s": wall}
    d = json.loads(out.read_text())
    series = [tuple(x) for x in d["series"]]
    return {
        "impl": name, "beta": beta, "seed": seed, "gold_before": d["gold_before"], "gold_after": d["gold_after"],
        **time_to_levels(series, t0), "samples": STEPS * PROMPTS_PER_BATCH * GROUP,
        "samples_per_s": STEPS * PROMPTS_PER_BATCH * GROUP / wall, "train_s": d["train_s"], "wall_s": wall,
        "batches": len(series), "series": series,
    }  # fmt: skip


# ---- Shoal side (runs in the main venv) ---------------------------------------------------------


def shoal_series(runs_dir: Path) -> list[tuple[float, float]]:
    """(t, reward/gold_mean) per learner step from the run's embedded metrics Redis."""
    from shoal.services.metrics import MetricsReader
    from shoal.services.redis_server import EmbeddedRedis

    server = EmbeddedRedis(runs_dir / "shoal-metrics.rdb")
    try:
        # source "learner": the batch of each learner step (the reward workers also log per request)
        hist = MetricsReader(server.url).history("latest", names=["reward/gold_mean"], source="learner")
        return [(e["t"], e["data"]["reward/gold_mean"]) for e in hist if e["data"].get("reward/gold_mean") is not None]
    finally:
        server.close()


def run_shoal(seed: int, models: dict[str, str], work: Path, config: Path, ensemble: int = 1) -> dict[str, Any]:
    from benchmarks.rlhf_seeds import run_once

    name = "shoal grpo" if config == GRPO_DEMO else f"shoal {config.stem}"
    runs_dir = work / f"{name.replace(' ', '_')}_seed{seed}"
    if runs_dir.exists():
        import shutil

        shutil.rmtree(runs_dir)
    t0 = time.time()
    row = run_once(config, seed, models, [f"reward.rm_ensemble={ensemble}"], runs_dir)
    if "error" in row:
        return {"impl": name, **row}
    series = shoal_series(runs_dir)
    wall = row["wall_s"]
    trained = row["learner_steps"] * PROMPTS_PER_BATCH * GROUP  # both demos train 64 rollouts per step
    return {
        "impl": name, "seed": seed, "gold_before": row["gold_before"], "gold_after": row["gold_after"],
        **time_to_levels(series, t0), "samples": trained, "samples_per_s": trained / wall, "train_s": row["train_wall_s"], "wall_s": wall,
        "generated": row["samples"], "batches": len(series), "kl_after": row["kl_after"], "series": series,
    }  # fmt: skip


# ---- driver -------------------------------------------------------------------------------------


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in rows if "error" not in r]
    out: dict[str, Any] = {"runs": len(rows), "failed": len(rows) - len(ok)}
    for key in ("gold_after", "samples_per_s", *(f"t_gold_{lv}" for lv in LEVELS)):
        vals = [r[key] for r in ok if r.get(key) is not None]
        out[f"{key}_median"] = statistics.median(vals) if vals else None
        out[f"{key}_reached"] = f"{len(vals)}/{len(ok)}"
    return out


def main(argv: list[str] | None = None) -> int:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--trl-worker":
        seed, policy, reward, out = sys.argv[2:6]
        trl_worker(int(seed), policy, reward, out)
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--models-dir", default=str(ROOT / "benchmarks" / "results" / "models"))
    ap.add_argument("--only", choices=["trl", "shoal"], default=None, help="run one side only (debugging)")
    ap.add_argument(
        "--trl-beta",
        type=float,
        nargs="+",
        default=[0.1, 0.0],
        help="TRL runs per seed, one per KL coefficient (0.1: Shoal's kl_coef; 0.0: TRL's default)",
    )
    ap.add_argument(
        "--shoal-config",
        nargs="+",
        default=[str(GRPO_DEMO), str(PPO_DEMO)],
        help="Shoal runs per seed, one per config (default: the GRPO demo, matched to TRL, and the PPO demo: "
        "the same 64 rollouts and 8 optimizer steps per batch, one answer per prompt and a critic)",
    )
    ap.add_argument("--out", default=None)
    ap.add_argument(
        "--rm-ensemble",
        type=int,
        default=1,
        help="reward-model ensemble size on BOTH sides (1: one model; 3: the demos' ensemble, its mean as "
        "TRL's one reward function)",
    )
    ap.add_argument(
        "--trl-no-kl-is",
        action="store_true",
        help="TRL: use_bias_correction_kl=False (plain k3, as Shoal's grpo.kl_estimator=k3)",
    )
    args = ap.parse_args(argv)
    if args.trl_no_kl_is:
        os.environ["PEER_TRL_KL_IS"] = "0"
    if args.only != "shoal" and not BENCH_PY.is_file():
        raise SystemExit(f"{BENCH_PY} missing: create the TRL venv (see this script's docstring)")
    from benchmarks.rlhf_seeds import ensure_models

    work = Path(args.models_dir).parent / "peer_trl_runs"
    rows: list[dict[str, Any]] = []
    for seed in args.seeds:
        models = ensure_models(Path(args.models_dir), seed, GRPO_DEMO, ensemble=args.rm_ensemble)
        # alternate: TRL (matched beta), Shoal's configs, then TRL with its other betas
        jobs: list[tuple[str, Any]] = [("trl", b) for b in args.trl_beta]
        jobs[1:1] = [("shoal", Path(c).resolve()) for c in args.shoal_config]
        for impl, arg in jobs:
            if args.only in (None, impl):
                row = (
                    run_shoal(seed, models, work, arg, args.rm_ensemble)
                    if impl == "shoal"
                    else run_trl(seed, models, work, arg)
                )
                rows.append(row)
                print(json.dumps({k: v for k, v in row.items() if k != "series"}), flush=True)

    def never(v: Any) -> Any:
        return "never" if v is None else v

    table = [{**r, **{f"t_gold_{lv}": never(r.get(f"t_gold_{lv}")) for lv in LEVELS}} for r in rows if "error" not in r]
    cols = [
        ("impl", "impl", "s"),
        ("seed", "seed", "d"),
        ("gold_before", "held-out gold before", ".3f"),
        ("gold_after", "held-out gold after", ".3f"),
        ("t_gold_0.3", "s to gold 0.3", "s"),
        ("t_gold_0.4", "s to gold 0.4", "s"),
        ("samples_per_s", "trained samples/s", ".1f"),
        ("wall_s", "wall s", ".0f"),
    ]
    for r in table:
        for lv in LEVELS:
            v = r[f"t_gold_{lv}"]
            r[f"t_gold_{lv}"] = v if isinstance(v, str) else f"{v:.0f}"
    print(format_table(table, cols))
    for r in rows:
        if "error" in r:
            print(f"  {r['impl']} seed {r['seed']} FAILED: {r['error']}")
    impls = list(dict.fromkeys(r["impl"] for r in rows))
    summary = {impl: summarize([r for r in rows if r["impl"] == impl]) for impl in impls}
    for impl, s in summary.items():
        print(f"  {impl}: " + json.dumps(s))
    print(CAVEAT)
    payload = {
        "configs": args.shoal_config, "rm_ensemble": args.rm_ensemble, "steps": STEPS, "smooth_batches": SMOOTH,
        "rows": rows, "summary": summary,
    }  # fmt: skip
    print(f"wrote {write_results('peer_trl', payload, quick=False, out=args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
