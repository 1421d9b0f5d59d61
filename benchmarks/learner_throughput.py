"""Learner throughput: optimizer steps/s of the multi-turn learners (issue 3) on CPU, one torch
thread: R2D2 (recurrent per-utterance double-Q), token-level ILQL with its behaviour-cloning
baseline, and PPO for reference.

What is measured (each learner's own `step`, a batch already in memory; no replay, no Ray):
1. learner.r2d2.R2D2Learner against batch size (--batches) and burn-in + trace length
   (--lengths, items of L = burn_in + trace + 1 turns), burn_in_gradients off; and on, at
   one batch size (--bigrad-batch). Setup: a text environment (--env, default maze_po: 100-turn
   episodes, 4 moves), a tiny frozen encoder (learner.recurrent_q.build_tiny_encoder: random
   Llama hidden --encoder-hidden, 1 layer, BPE trained on rollout.envs.base.env_corpus), an LSTM
   Q network of --hidden units, the env's legal actions as the action set, n-step 5, stored
   start states. Items: buffer.sequences.cut_episode (period = trace / 2) of --episodes
   episodes played by learner.r2d2.acting.QActor (untrained network, epsilon 0.4). Columns:
   - step ms: one `step_with_priorities` (encode, unroll online + target, targets, backward,
     Adam, priorities); steps/s, items/s, turns/s (B x L positions unrolled) and trace
     turns/s (B x trace, the turns that carry the loss) follow from it;
   - encode warm ms: `R2D2Learner._tensors` alone (the step's encoding: cache look-ups of every
     observation, action and candidate, stacked into tensors) with every text cached;
     update ms = step ms - encode warm ms, the rest of the step;
   - encode cold ms: the same with the encoder's cache emptied first: the env's texts in the
     batch are encoded by the LM (`cold texts`: how many; maze_po has ~12 distinct texts);
   - encode distinct ms: cold, with every observation made unique (its episode id and turn
     appended), as with natural-language turns that rarely repeat; `distinct texts` were
     encoded; enc texts/s = distinct texts / (distinct - warm), the encoder's rate on misses.
     Turns shared by overlapping items are one text, as in a real batch.
   The cache is restored after each cold measurement, so the steps always run warm.
2. learner.ilql.ILQLLearner on random-walks episodes (rollout.envs.collect of the trlx
   random-walk policy, 1000 episodes; the tiny Llama of tests/learning/test_ilql_offline.py:
   hidden 64, 2 layers, one token per letter), against batch size (--ilql-batches), with
   ILQL (Q1, Q2, V heads, CQL, Polyak) and bc_only (the LM head's cross-entropy alone).
   prep ms is `batch_from_episodes` (tokenize + collate), inside the step; update ms the rest;
   agent tokens/s counts the trained action tokens (the metric `ilql_tokens`), seq tokens/s
   all non-pad positions; ILQL/BC is the ratio of step times at the same batch (the median
   over rounds of each round's ratio; `on/off` of the R2D2 table is the same for
   burn_in_gradients on against off at the same length and batch).
3. learner.ppo.PPOLearner on the keywords task (--ppo-configs batch/minibatch/epochs, the
   tests' 16/8/1 and the demo's 64/32/4): random-init Llama 128/2L/4H (the config default),
   the seeded prompts of benchmarks._common.fixed_prompts, responses of --ppo-tokens random
   tokens whose behaviour and reference log-probs come from the initial weights. One step is
   epochs x (batch / minibatch) gradient updates plus the no-grad pass; updates/s counts those.

How: every configuration gets its own learner (fresh optimizer), --warmup steps, then
--repeats rounds; in each round every configuration of a learner runs --steps consecutive
steps (configurations interleaved, so load from other jobs falls on all alike) and the round
gives seconds per step = elapsed / steps. Tables show medians over rounds. Batches are
drawn beforehand (--seed) and cycled, so sampling is not timed. R2D2 and ILQL are measured
on a tiny encoder / LM: the ratios between knobs carry over better than the absolute rates.

Caveats: a shared 2-core machine (see benchmarks/README.md): compare ratios within one run.
Step times of tens of milliseconds are dominated by per-op overhead (R2D2 unrolls the LSTM
cell one turn at a time in Python, twice: online and target), so they grow less than
linearly with batch size here and would not on a large model.

Run (from the repository root):
    .venv/bin/python benchmarks/learner_throughput.py            # full: 12 R2D2, 6 ILQL, 2 PPO configs, ~1-2 min
    .venv/bin/python benchmarks/learner_throughput.py --quick    # smoke: 2 lengths x 2 batches, ~20 s
Options: --learners r2d2,ilql,ppo, --env, --lengths 2+4,4+8,8+16, --batches 16,32,64,
--bigrad-batch (0: skip), --ilql-batches, --ppo-configs 16/8/1,64/32/4, --repeats, --steps,
--warmup, --out PATH. Writes benchmarks/results/learner_throughput.json.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import random
import sys
import tempfile
import time
import types
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import _common as C

NAME = "learner_throughput"


def quiet_hf() -> None:
    """No progress bars from transformers / huggingface_hub when models are written and loaded."""
    import os

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    with contextlib.suppress(Exception):  # cosmetic only
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()


def n_params(*modules: Any) -> int:
    return sum(p.numel() for m in modules for p in m.parameters())


def interleaved_rounds(
    configs: list[dict[str, Any]],
    step: Callable[[dict[str, Any], int], Any],
    args: argparse.Namespace,
    extra: Callable[[dict[str, Any], int], None] | None = None,
) -> None:
    """Warm up every config, then --repeats rounds of --steps steps per config (interleaved);
    appends seconds per step to cfg["step_s"]; `extra(cfg, round)` runs after a config's steps."""
    for cfg in configs:
        cfg["step_s"], cfg["i"] = [], 0
        for _ in range(args.warmup):
            step(cfg, cfg["i"])
            cfg["i"] += 1
    for r in range(args.repeats):
        for cfg in configs:
            t0 = time.perf_counter()
            for _ in range(args.steps):
                step(cfg, cfg["i"])
                cfg["i"] += 1
            cfg["step_s"].append((time.perf_counter() - t0) / args.steps)
            if extra is not None:
                extra(cfg, r)


def round_ratio(a: list[float], b: list[float]) -> float:
    """Median over rounds of a[r] / b[r] (two configurations timed in the same round)."""
    return C.median([x / y for x, y in zip(a, b)])


# ---- R2D2 ------------------------------------------------------------------------------------


def parse_lengths(text: str) -> list[tuple[int, int]]:
    out = []
    for part in text.split(","):
        bi, tr = part.split("+")
        out.append((int(bi), int(tr)))
    return out


def distinct_items(items: list[Any]) -> list[Any]:
    """The items with every observation unique to its episode turn (padding stays "")."""
    return [
        replace(
            it,
            observations=[
                f"{o} ({it.episode_id} turn {it.start + p})" if o else "" for p, o in enumerate(it.observations)
            ],
        )
        for it in items
    ]


def bench_r2d2(args: argparse.Namespace) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    from shoal.buffer.sequences import cut_episode, item_length
    from shoal.learner.r2d2.acting import QActor
    from shoal.learner.r2d2.config import R2D2Config
    from shoal.learner.r2d2.learning import R2D2Learner
    from shoal.learner.r2d2.networks import RecurrentQNetwork, build_tiny_encoder
    from shoal.rollout.envs.base import env_corpus, legal_actions_of
    from shoal.rollout.envs.registry import make_env
    from shoal.types import SampledBatch

    t0 = time.perf_counter()
    env = make_env(args.env)
    action_set = legal_actions_of(env)
    if not action_set:
        raise SystemExit(f"--env {args.env}: R2D2 here needs an env with legal_actions() (a small action set)")
    encoder = build_tiny_encoder(
        env_corpus(env, num_episodes=60, seed=args.seed), hidden_size=args.encoder_hidden, seed=args.seed
    )
    actor = QActor(
        RecurrentQNetwork(encoder.dim, hidden_size=args.hidden, seed=args.seed), encoder, epsilon=0.4, worker_id="bench"
    )
    episodes = [actor.run_episode(env, f"e{i}", seed=args.seed * 100_000 + i) for i in range(args.episodes)]
    setup_s = time.perf_counter() - t0

    configs: list[dict[str, Any]] = []
    rng = random.Random(args.seed)
    for bi, tr in parse_lengths(args.lengths):
        pool = [it for ep, st in episodes for it in cut_episode(ep, st, bi, tr, max(1, tr // 2))]
        if not pool:
            raise SystemExit(f"--lengths {bi}+{tr}: the {args.env} episodes are too short to hold an item")
        grads = [False] + ([True] if args.bigrad_batch > 0 else [])
        for bigrad in grads:
            for b in args.batches if not bigrad else [args.bigrad_batch]:
                cfg = R2D2Config(burn_in_length=bi, trace_length=tr, burn_in_gradients=bigrad)
                net = RecurrentQNetwork(encoder.dim, hidden_size=args.hidden, seed=args.seed)
                learner = R2D2Learner(net, encoder, cfg, action_set=action_set)
                batches = [
                    SampledBatch(rng.choices(pool, k=b), keys=list(range(b)), weights=[1.0] * b)
                    for _ in range(args.batch_pool)
                ]
                configs.append(
                    {
                        "learner": learner,
                        "batches": batches,
                        "batch": b,
                        "burn_in": bi,
                        "trace": tr,
                        "L": item_length(bi, tr),
                        "burn_in_gradients": bigrad,
                        "pool_items": len(pool),
                        "warm": [],
                        "cold": [],
                        "distinct": [],
                        "cold_texts": 0,
                        "distinct_texts": 0,
                        "valid_trace": [],
                    }
                )
    configs.sort(key=lambda c: (c["burn_in_gradients"], c["L"], c["batch"]))
    for c in configs:  # every text of every batch cached before anything is timed
        encoder.encode([s for bt in c["batches"] for it in bt.items for s in (*it.observations, *it.actions)])
    encoder.encode(action_set)

    def step(c: dict[str, Any], i: int) -> None:
        m, _ = c["learner"].step_with_priorities(c["batches"][i % len(c["batches"])])
        c["valid_trace"].append(m["learner/trace_turns"])

    def encode_timings(c: dict[str, Any], r: int) -> None:
        items = c["batches"][r % len(c["batches"])].items
        lrn = c["learner"]
        c["warm"].append(C.timed(lambda: lrn._tensors(items))[1])
        saved = dict(encoder._cache)
        try:
            encoder._cache = {"": saved[""]}
            c["cold"].append(C.timed(lambda: lrn._tensors(items))[1])
            c["cold_texts"] = len(encoder) - 1
            encoder._cache = {"": saved[""]}
            uniq = distinct_items(items)
            c["distinct"].append(C.timed(lambda: lrn._tensors(uniq))[1])
            c["distinct_texts"] = len(encoder) - 1
        finally:
            encoder._cache = saved

    interleaved_rounds(configs, step, args, encode_timings)

    rows = []
    for c in configs:
        s, warm, cold, dist = C.median(c["step_s"]), C.median(c["warm"]), C.median(c["cold"]), C.median(c["distinct"])
        b, L = c["batch"], c["L"]
        rows.append(
            {
                "burn_in": c["burn_in"],
                "trace": c["trace"],
                "lengths": f"{c['burn_in']}+{c['trace']}",
                "L": L,
                "batch": b,
                "burn_in_gradients": c["burn_in_gradients"],
                "bigrad": "on" if c["burn_in_gradients"] else "off",
                "step_ms": 1e3 * s,
                "steps_per_s": 1 / s,
                "items_per_s": b / s,
                "turns_per_s": b * L / s,
                "trace_turns_per_s": b * c["trace"] / s,
                "valid_trace_turns_per_step": C.median(c["valid_trace"]),
                "encode_warm_ms": 1e3 * warm,
                "update_ms": 1e3 * (s - warm),
                "encode_warm_share": warm / s,
                "encode_cold_ms": 1e3 * cold,
                "cold_texts": c["cold_texts"],
                "encode_distinct_ms": 1e3 * dist,
                "distinct_texts": c["distinct_texts"],
                "encoder_texts_per_s": c["distinct_texts"] / (dist - warm) if dist > warm else float("nan"),
                "step_s_all": c["step_s"],
                "pool_items": c["pool_items"],
            }
        )
    base = {(r["L"], r["batch"]): r["step_s_all"] for r in rows if not r["burn_in_gradients"]}
    for r in rows:
        off = base.get((r["L"], r["batch"])) if r["burn_in_gradients"] else None
        r["bigrad_over_off"] = round_ratio(r["step_s_all"], off) if off else None
    lrn = configs[0]["learner"]
    info = {
        "env": args.env,
        "actions": action_set,
        "episodes": args.episodes,
        "episode_turns_mean": sum(len(ep.turns) for ep, _ in episodes) / len(episodes),
        "hidden": args.hidden,
        "encoder_hidden": args.encoder_hidden,
        "q_params": n_params(lrn.network),
        "encoder_params": n_params(encoder.model),
        "env_texts": len(encoder) - 1,
        "setup_s": setup_s,
        "n_step": lrn.cfg.n_step,
        "start_state": lrn.cfg.start_state,
        "sequence_period": "trace // 2",
    }
    return rows, info


# ---- ILQL ------------------------------------------------------------------------------------


class _Letters:
    """The random-walks vocabulary: one token per node letter (as tests/learning/test_ilql_offline.py)."""

    def corpus(self) -> list[str]:
        return ["abcdefghijklmnopqrstu"]


def bench_ilql(args: argparse.Namespace, tmp: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    from shoal.learner.ilql.config import ILQLConfig
    from shoal.learner.ilql.learning import ILQLLearner
    from shoal.models import build_model_dir
    from shoal.rollout.envs import collect
    from shoal.rollout.envs.random_walks import RandomWalkPolicy, RandomWalksEnv

    t0 = time.perf_counter()
    env = RandomWalksEnv()
    data = [
        ep
        for _, ep in collect(env, [("random_walk", RandomWalkPolicy(env))], args.ilql_episodes, args.seed, 1).episodes
    ]
    model_cfg = types.SimpleNamespace(vocab_size=259, hidden_size=64, num_layers=2, num_heads=2)
    model_dir = build_model_dir(_Letters(), model_cfg, tmp / "ilql_policy", seed=args.seed)
    rng = random.Random(args.seed)
    configs = []
    for b in args.ilql_batches:
        batches = [rng.sample(data, b) for _ in range(args.batch_pool)]
        for bc_only in (False, True):
            learner = ILQLLearner(str(model_dir), ILQLConfig(bc_only=bc_only), seed=args.seed)
            configs.append(
                {
                    "learner": learner,
                    "batches": batches,
                    "batch": b,
                    "bc_only": bc_only,
                    "prep": [],
                    "tokens": [],
                    "seq_tokens": [],
                }
            )
    setup_s = time.perf_counter() - t0

    def step(c: dict[str, Any], i: int) -> None:
        m = c["learner"].step(c["batches"][i % len(c["batches"])])
        c["tokens"].append(m["learner/ilql_tokens"])

    def prep(c: dict[str, Any], r: int) -> None:
        episodes = c["batches"][r % len(c["batches"])]
        tb, dt = C.timed(lambda: c["learner"].batch_from_episodes(episodes))
        c["prep"].append(dt)
        c["seq_tokens"].append(float(tb.attention_mask.sum()))

    interleaved_rounds(configs, step, args, prep)
    rows = []
    for c in configs:
        s, p = C.median(c["step_s"]), C.median(c["prep"])
        tokens, seq = C.median(c["tokens"]), C.median(c["seq_tokens"])
        rows.append(
            {
                "batch": c["batch"],
                "mode": "bc_only" if c["bc_only"] else "ilql",
                "step_ms": 1e3 * s,
                "steps_per_s": 1 / s,
                "episodes_per_s": c["batch"] / s,
                "agent_tokens_per_step": tokens,
                "agent_tokens_per_s": tokens / s,
                "seq_tokens_per_s": seq / s,
                "prep_ms": 1e3 * p,
                "update_ms": 1e3 * (s - p),
                "prep_share": p / s,
                "step_s_all": c["step_s"],
            }
        )
    bc = {r["batch"]: r["step_s_all"] for r in rows if r["mode"] == "bc_only"}
    for r in rows:
        r["ilql_over_bc"] = round_ratio(r["step_s_all"], bc[r["batch"]]) if r["mode"] == "ilql" else None
    il = next(c["learner"] for c in configs if not c["bc_only"])
    info = {
        "episodes": len(data),
        "model": vars(model_cfg),
        "trunk_params": n_params(il.model),
        "head_params": sum(p.numel() for p in il.heads.online_parameters()),
        "target_head_params": n_params(il.heads.target_q1, il.heads.target_q2),
        "mean_agent_tokens_per_episode": sum(r["agent_tokens_per_step"] / r["batch"] for r in rows) / len(rows),
        "setup_s": setup_s,
    }
    return rows, info


# ---- PPO -------------------------------------------------------------------------------------


def parse_ppo_configs(text: str) -> list[tuple[int, int, int]]:
    return [tuple(int(x) for x in part.split("/")) for part in text.split(",")]  # type: ignore[misc]


def bench_ppo(args: argparse.Namespace, tmp: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    import torch

    from shoal.learner.ppo.config import PPOConfig
    from shoal.learner.ppo.learning import PPOLearner
    from shoal.services.config import RewardSection
    from shoal.types import RewardTerms, Rollout, SampledBatch, ScoredRollout

    t0 = time.perf_counter()
    hidden, layers, heads = 128, 2, 4
    model_dir = C.build_random_model(tmp / "ppo_policy", hidden, layers, heads, seed=args.seed)
    prompts = C.fixed_prompts(model_dir, max(b for b, _, _ in parse_ppo_configs(args.ppo_configs)), seed=args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    configs = []
    for (b, mb, epochs), adam in itertools.product(parse_ppo_configs(args.ppo_configs), args.ppo_adam.split(",")):
        learner = PPOLearner(
            str(model_dir),
            PPOConfig(batch_size=b, minibatch_size=mb, ppo_epochs=epochs),
            RewardSection(reward_model_path=None, kl_coef=0.05),
            seed=args.seed,
        )
        if adam == "loop":  # torch's default CPU Adam, a few ops per parameter (the learners use fused)
            learner.optimizer = torch.optim.Adam(learner.params, lr=learner.ppo.learning_rate, foreach=False)
        elif adam != "fused":
            raise SystemExit(f"--ppo-adam: {adam!r} is not fused or loop")
        vocab = learner.model.config.vocab_size
        batches = []
        for _ in range(args.batch_pool):
            ps = prompts[:b]
            resp = [torch.randint(3, vocab, (args.ppo_tokens,), generator=gen).tolist() for _ in ps]
            lps = learner.logprobs([p.token_ids for p in ps], resp)
            rewards = torch.rand(b, generator=gen).tolist()
            batches.append(
                SampledBatch(
                    [
                        ScoredRollout(Rollout(p, r, "", lp, 0, "bench"), RewardTerms({"bench": rw}, list(lp)), rw)
                        for p, r, lp, rw in zip(ps, resp, lps, rewards)
                    ]
                )
            )
        configs.append(
            {
                "learner": learner,
                "batches": batches,
                "batch": b,
                "minibatch": mb,
                "epochs": epochs,
                "adam": adam,
                "tokens": [],
            }
        )
    setup_s = time.perf_counter() - t0

    def step(c: dict[str, Any], i: int) -> None:
        m = c["learner"].step(c["batches"][i % len(c["batches"])])
        c["tokens"].append(m["learner/trained_tokens"])

    interleaved_rounds(configs, step, args)
    rows = []
    for c in configs:
        s = C.median(c["step_s"])
        updates = c["epochs"] * -(-c["batch"] // c["minibatch"])
        rows.append(
            {
                "batch": c["batch"],
                "minibatch": c["minibatch"],
                "epochs": c["epochs"],
                "adam": c["adam"],
                "step_ms": 1e3 * s,
                "steps_per_s": 1 / s,
                "rollouts_per_s": c["batch"] / s,
                "tokens_per_s": C.median(c["tokens"]) / s,
                "updates_per_step": updates,
                "updates_per_s": updates / s,
                "step_s_all": c["step_s"],
            }
        )
    info = {
        "model": {"hidden_size": hidden, "num_layers": layers, "num_heads": heads},
        "params": n_params(configs[0]["learner"].model),
        "response_tokens": args.ppo_tokens,
        "prompt_tokens": len(prompts[0].token_ids),
        "setup_s": setup_s,
    }
    return rows, info


# ---- output ----------------------------------------------------------------------------------

R2D2_COLUMNS = [
    ("lengths", "burn-in+trace", "s"),
    ("L", "L", "d"),
    ("batch", "batch", "d"),
    ("bigrad", "burn-in grads", "s"),
    ("step_ms", "step ms", ".1f"),
    ("steps_per_s", "steps/s", ".1f"),
    ("items_per_s", "items/s", ".0f"),
    ("turns_per_s", "turns/s", ".0f"),
    ("trace_turns_per_s", "trace turns/s", ".0f"),
    ("encode_warm_ms", "encode warm ms", ".2f"),
    ("update_ms", "update ms", ".1f"),
    ("encode_cold_ms", "encode cold ms", ".1f"),
    ("cold_texts", "cold texts", "d"),
    ("encode_distinct_ms", "encode distinct ms", ".0f"),
    ("distinct_texts", "distinct texts", "d"),
    ("encoder_texts_per_s", "enc texts/s", ".0f"),
    ("bigrad_over_off", "on/off", ".2f"),
]
ILQL_COLUMNS = [
    ("batch", "batch", "d"),
    ("mode", "mode", "s"),
    ("step_ms", "step ms", ".1f"),
    ("steps_per_s", "steps/s", ".1f"),
    ("episodes_per_s", "episodes/s", ".0f"),
    ("agent_tokens_per_s", "agent tokens/s", ".0f"),
    ("seq_tokens_per_s", "seq tokens/s", ".0f"),
    ("prep_ms", "prep ms", ".1f"),
    ("update_ms", "update ms", ".1f"),
    ("ilql_over_bc", "ILQL/BC", ".2f"),
]
PPO_COLUMNS = [
    ("batch", "batch", "d"),
    ("minibatch", "minibatch", "d"),
    ("epochs", "epochs", "d"),
    ("adam", "Adam", "s"),
    ("step_ms", "step ms", ".0f"),
    ("steps_per_s", "steps/s", ".2f"),
    ("rollouts_per_s", "rollouts/s", ".0f"),
    ("tokens_per_s", "tokens/s", ".0f"),
    ("updates_per_step", "updates/step", "d"),
    ("updates_per_s", "updates/s", ".1f"),
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: lengths 2+4, 4+8; batches 16, 32; ILQL 16, 32; PPO 16/8/1; 2 rounds",
    )
    p.add_argument("--learners", default="r2d2,ilql,ppo")
    p.add_argument("--env", default="maze_po", help="R2D2 environment (built-in name with legal_actions())")
    p.add_argument("--lengths", default="2+4,4+8,8+16", help="R2D2 burn_in+trace pairs")
    p.add_argument("--batches", default="16,32,64", help="R2D2 batch sizes")
    p.add_argument(
        "--bigrad-batch", type=int, default=32, help="R2D2 batch size also run with burn_in_gradients on (0: skip)"
    )
    p.add_argument("--hidden", type=int, default=64, help="R2D2 LSTM size (config default 64)")
    p.add_argument(
        "--encoder-hidden", type=int, default=64, help="hidden size of the tiny turn encoder (config default 64)"
    )
    p.add_argument("--episodes", type=int, default=40, help="R2D2 episodes played to cut items from")
    p.add_argument("--ilql-batches", default="16,32,64")
    p.add_argument("--ilql-episodes", type=int, default=1000)
    p.add_argument("--ppo-configs", default="16/8/1,64/32/4", help="PPO batch/minibatch/epochs (tests, demo)")
    p.add_argument(
        "--ppo-adam",
        default="fused",
        help="fused (the learners' shoal.tensors.adam), loop (torch's CPU default), or both",
    )
    p.add_argument("--ppo-tokens", type=int, default=8, help="PPO response length (config max_new_tokens default 8)")
    p.add_argument("--batch-pool", type=int, default=4, help="batches drawn per configuration and cycled")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per configuration")
    p.add_argument("--steps", type=int, default=8, help="timed steps per configuration and round")
    p.add_argument("--repeats", type=int, default=7, help="rounds (the tables show medians over them)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    if args.quick:
        args.lengths, args.batches, args.ilql_batches, args.ppo_configs = "2+4,4+8", "16,32", "16,32", "16/8/1"
        args.episodes, args.ilql_episodes, args.warmup, args.steps, args.repeats = 12, 200, 1, 2, 2
    args.batches = [int(b) for b in str(args.batches).split(",")]
    args.ilql_batches = [int(b) for b in str(args.ilql_batches).split(",")]
    args.learners = [x.strip() for x in args.learners.split(",") if x.strip()]
    unknown = set(args.learners) - {"r2d2", "ilql", "ppo"}
    if unknown:
        p.error(f"unknown learners {sorted(unknown)} (r2d2, ilql, ppo)")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    C.single_thread_env()
    quiet_hf()
    t0 = time.perf_counter()
    payload: dict[str, Any] = {}
    tables: list[tuple[str, str]] = []
    settings = {k: getattr(args, k) for k in ("learners", "warmup", "steps", "repeats", "batch_pool", "seed")}
    with tempfile.TemporaryDirectory(prefix="shoal-bench-") as tmp:
        if "r2d2" in args.learners:
            rows, info = bench_r2d2(args)
            payload["r2d2"], payload["r2d2_info"] = rows, info
            title = (
                f"R2D2Learner on {info['env']} ({info['episode_turns_mean']:.0f}-turn episodes, {len(info['actions'])} actions): "
                f"Q net {info['q_params'] / 1e3:.0f}k params (LSTM {info['hidden']}), encoder {info['encoder_params'] / 1e3:.0f}k "
                f"(hidden {info['encoder_hidden']}); median of {args.repeats} rounds x {args.steps} steps"
            )
            tables.append((title, C.format_table(rows, R2D2_COLUMNS)))
        if "ilql" in args.learners:
            rows, info = bench_ilql(args, Path(tmp))
            payload["ilql"], payload["ilql_info"] = rows, info
            title = (
                f"ILQLLearner on random_walks ({info['mean_agent_tokens_per_episode']:.1f} agent tokens/episode): trunk "
                f"{info['trunk_params'] / 1e3:.0f}k params, heads {info['head_params'] / 1e3:.0f}k (+ {info['target_head_params'] / 1e3:.0f}k "
                f"target copies); median of {args.repeats} rounds x {args.steps} steps"
            )
            tables.append((title, C.format_table(rows, ILQL_COLUMNS)))
        if "ppo" in args.learners:
            rows, info = bench_ppo(args, Path(tmp))
            payload["ppo"], payload["ppo_info"] = rows, info
            title = (
                f"PPOLearner on keywords (reference): {info['params'] / 1e6:.2f}M params, {info['prompt_tokens']}-token prompts, "
                f"{info['response_tokens']}-token responses; median of {args.repeats} rounds x {args.steps} steps"
            )
            tables.append((title, C.format_table(rows, PPO_COLUMNS)))
    payload["settings"], payload["total_s"] = settings, time.perf_counter() - t0
    path = C.write_results(NAME, payload, args.quick, args.out)
    for i, (title, table) in enumerate(tables):
        if i == len(tables) - 1:
            C.report(title, table, path)
        else:
            print(f"\n{title}\n{table}", flush=True)
    print(f"total {payload['total_s']:.0f} s", flush=True)
    return {"path": str(path), **{k: payload[k] for k in ("r2d2", "ilql", "ppo") if k in payload}}


if __name__ == "__main__":
    main()
