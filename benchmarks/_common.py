"""Helpers shared by the benchmark scripts: threads, model directories, tables, JSON results.

Not a benchmark itself. Every script imports it as `benchmarks._common` after putting the
repository root on `sys.path` (so `python benchmarks/<name>.py` and
`python -m benchmarks.<name>` both work).
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "benchmarks" / "results"

CAVEAT = (
    "caveat: timings come from a shared, noisy machine (other jobs may run at the same time); "
    "compare the RATIOS measured within one run, not absolute numbers across runs."
)


def single_thread_env() -> None:
    """One torch/OpenMP thread in this process and in everything it starts."""
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["MKL_NUM_THREADS"] = "1"
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    import torch

    torch.set_num_threads(1)


def machine_info() -> dict[str, Any]:
    """Where and when the numbers were taken (stored next to them in the JSON)."""
    import torch

    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "cpu_count": os.cpu_count(),
        "loadavg_1_5_15": [round(x, 2) for x in load],
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
    }


def machine_cpu_seconds() -> float | None:
    """CPU seconds every core of the machine has spent busy since boot (user, nice, system,
    irq, softirq, steal in /proc/stat; Linux only, else None). The difference over a run, on
    an otherwise idle machine, is the CPU work the run took in all of its processes (Ray's
    included), which no scheduling can fit in less than work / cores of wall."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def process_group(cmdline: str) -> str:
    """A readable name for a process by its command line: a Ray actor by its class
    (`ray::LearnerActor`), a Ray daemon by its program (`raylet`, `gcs_server`, `dashboard.py`,
    ...), `shoal <command>` for the CLI's own process, else the program's file name."""
    words = cmdline.split()
    if not words:
        return "?"
    if words[0].startswith("ray::"):
        return words[0].split(".")[0]
    names = [Path(w).name for w in words]
    if "python" not in names[0]:
        return "shoal " + " ".join(words[1:2]) if names[0] == "shoal" else names[0]
    if "-c" in words[1:] and not any(w.endswith(".py") or w == "-m" for w in words[1 : words.index("-c")]):
        return "python -c"
    args = [w for w in words[1:] if not w.startswith("-") or w == "-m"]
    if args[:2] == ["-m", "shoal.deploy.cli"] or (args and Path(args[0]).name == "shoal"):
        rest = args[2:] if args[0] == "-m" else args[1:]
        return "shoal " + " ".join(rest[:1])
    if args[:1] == ["-m"] and len(args) > 1:
        return args[1]
    return Path(args[0]).name if args else names[0]


class ProcessCpu:
    """CPU seconds per process group (`process_group`) of every process that ran while the
    `with` block ran: /proc sampled every `interval` s in a thread (Linux only; a process that
    exits loses at most its last interval)."""

    def __init__(self, interval: float = 0.2) -> None:
        self.interval, self.groups = interval, {}
        self._tck = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    def _snapshot(self) -> dict[int, tuple[str, float, bool]]:
        out: dict[int, tuple[str, float, bool]] = {}
        for pid in os.listdir("/proc") if os.path.isdir("/proc") else []:
            if not pid.isdigit():
                continue
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            fields = stat[stat.rfind(")") + 2 :].split()
            # an exiting process has no command line left: its kernel name (15 characters) stands in
            name = cmd.strip() or stat[stat.find("(") + 1 : stat.rfind(")")]
            out[int(pid)] = (name, (int(fields[11]) + int(fields[12])) / self._tck, bool(cmd.strip()))
        return out

    def _merge(self) -> None:
        for pid, (name, cpu, full) in self._snapshot().items():
            if not full and pid in self._last:
                name = self._last[pid][0]
            self._last[pid] = (name, cpu, full)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._merge()
            self._stop.wait(self.interval)
        self._merge()

    def __enter__(self) -> ProcessCpu:
        self._base, self._last, self._stop = self._snapshot(), {}, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        groups: dict[str, float] = {}
        for pid, (cmd, cpu, _) in self._last.items():
            spent = cpu - self._base.get(pid, ("", 0.0, True))[1]
            if spent > 0:
                key = process_group(cmd)
                groups[key] = groups.get(key, 0.0) + spent
        self.groups = {k: round(v, 2) for k, v in sorted(groups.items(), key=lambda kv: -kv[1])}


def usable_cores() -> int:
    """Cores this process may run on (its affinity), else os.cpu_count()."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


# ---- models ----------------------------------------------------------------------------------


def model_section(hidden: int, layers: int, heads: int, vocab: int = 512) -> Any:
    """A validated ModelSection (head_dim = hidden/heads must be >= 32 for vLLM CPU)."""
    from shoal.services.config import ModelSection

    return ModelSection(hidden_size=hidden, num_layers=layers, num_heads=heads, vocab_size=vocab)


def build_random_model(out_dir: str | Path, hidden: int, layers: int, heads: int, seed: int = 0) -> Path:
    """A random-init Llama + BPE tokenizer directory via shoal.models.build_model_dir."""
    from shoal.models import build_model_dir
    from shoal.rollout.tasks import KeywordsTask

    return build_model_dir(KeywordsTask(), model_section(hidden, layers, heads), out_dir, seed=seed)


def count_params(model_dir: str | Path) -> int:
    """Parameters stored in a model directory's safetensors files (no model is built)."""
    from safetensors import safe_open

    total = 0
    for f in sorted(Path(model_dir).glob("*.safetensors")):
        with safe_open(str(f), framework="pt") as st:
            for name in st.keys():  # noqa: SIM118 (safe_open handles are not iterable)
                shape = st.get_slice(name).get_shape()
                n = 1
                for d in shape:
                    n *= d
                total += n
    return total


def fixed_prompts(model_dir: str | Path, n: int, seed: int = 0) -> list[Any]:
    """n seeded prompts of the built-in task, tokenized by the model's tokenizer."""
    from transformers import AutoTokenizer

    from shoal.rollout.tasks import KeywordsTask, TaskPromptSource

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    return TaskPromptSource(KeywordsTask(), tok, seed, prefix="bench").next_batch(n)


# ---- numbers and output ----------------------------------------------------------------------


def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs)) if xs else float("nan")


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """(fn(), seconds it took)."""
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def _cell(value: Any, fmt: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    try:
        return format(value, fmt)
    except (TypeError, ValueError):
        return str(value)


def format_table(rows: list[dict[str, Any]], columns: list[tuple[str, str, str]]) -> str:
    """columns: (key, header, format spec). A Markdown table, so README can take it as is."""
    head = [h for _, h, _ in columns]
    body = [[_cell(r.get(k), f) for k, _, f in columns] for r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(head)]
    line = lambda cells: "| " + " | ".join(c.rjust(w) for c, w in zip(cells, widths)) + " |"
    sep = "|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|"
    return "\n".join([line(head), sep, *(line(b) for b in body)])


def results_path(name: str, out: str | None = None) -> Path:
    """`out` if given, else benchmarks/results/<name>.json (quick runs too: `quick` is inside)."""
    return Path(out) if out else RESULTS_DIR / f"{name}.json"


def write_results(name: str, payload: dict[str, Any], quick: bool, out: str | None = None) -> Path:
    """The JSON document: machine info, the caveat, the arguments, then `payload`."""
    path = results_path(name, out)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "benchmark": name,
        "quick": quick,
        "machine": machine_info(),
        "caveat": CAVEAT,
        "argv": sys.argv[1:],
        **payload,
    }
    path.write_text(json.dumps(doc, indent=2, default=str))
    return path


def report(title: str, table: str, path: Path) -> None:
    print(f"\n{title}\n{table}\n{CAVEAT}\nresults: {path}", flush=True)
