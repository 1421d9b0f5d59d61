"""How much work this machine does with N single-threaded processes at once, against one alone.

An actor-learner split on one machine can go at most as fast as the machine runs its processes
side by side: the Ray program's learner and rollout workers are single-threaded torch
processes (`OMP_NUM_THREADS=1`), so on a "2-core" virtual machine whose two vCPUs share a
physical core, or whose host is busy, two processes do less than twice the work of one. This
measures that ceiling, for the two kinds of work the actors do: a torch matmul loop (256 x 256,
float32, one thread: the shape of a tiny model's forward and backward) and a pure-Python loop
(the interpreter overhead of generation, scoring and the driver).

Per kind and per N (1 .. --max-procs, default the core count): N copies of the same fixed job
start at once, each in its own process; the capacity is N x (one copy's time alone) / (the
slowest copy's time among N). 1.0 per added process is perfect scaling; the Ray program's
end-to-end speed-up over the in-process loop cannot exceed the N = 2 figure on a 2-core
machine. Rounds alternate (1, 2, 1, 2 ...) so machine noise spreads over both.

    python benchmarks/parallel_capacity.py              # 3 rounds, N = 1 .. cores
    python benchmarks/parallel_capacity.py --rounds 5
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import format_table, median, report, write_results  # noqa: E402

JOBS = {
    "torch matmul": (
        "import time, torch\n"
        "torch.set_num_threads(1)\n"
        "a, b = torch.randn(256, 256), torch.randn(256, 256)\n"
        "for _ in range(50): a @ b\n"
        "t = time.perf_counter()\n"
        "for _ in range({n}): a @ b\n"
        "print(time.perf_counter() - t)\n"
    ),
    "python loop": (
        "import time\nt = time.perf_counter()\nx = 0\nfor i in range({n}): x += i\nprint(time.perf_counter() - t)\n"
    ),
}
SIZES = {"torch matmul": 3000, "python loop": 20_000_000}  # ~0.6 s and ~1.3 s alone on the CI machine


def run_copies(kind: str, copies: int) -> list[float]:
    """Start `copies` processes of the job at once; each one's own seconds for the loop."""
    code = JOBS[kind].format(n=SIZES[kind])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)
        for _ in range(copies)
    ]
    out = [p.communicate()[0] for p in procs]
    if any(p.returncode for p in procs):
        raise SystemExit(f"{kind}: a copy failed")
    return [float(o.strip()) for o in out]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--max-procs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    counts = list(range(1, max(1, args.max_procs) + 1))
    times: dict[tuple[str, int], list[float]] = {}
    for _ in range(args.rounds):
        for kind in JOBS:
            for n in counts:  # alternating: 1, 2, ... then again
                times.setdefault((kind, n), []).append(max(run_copies(kind, n)))
                time.sleep(0.2)
    rows = []
    for kind in JOBS:
        alone = median(times[(kind, 1)])
        for n in counts:
            slowest = median(times[(kind, n)])
            rows.append(
                {
                    "work": kind,
                    "processes": n,
                    "alone_s": alone,
                    "slowest_s": slowest,
                    "each_speed": alone / slowest,
                    "capacity": n * alone / slowest,
                    "spread": f"{min(times[(kind, n)]):.2f}-{max(times[(kind, n)]):.2f}",
                }
            )
    cols = [
        ("work", "work", ""),
        ("processes", "processes", "d"),
        ("alone_s", "one alone (s)", ".2f"),
        ("slowest_s", "slowest of N (s)", ".2f"),
        ("spread", "slowest, over rounds (s)", ""),
        ("each_speed", "each at (x alone)", ".2f"),
        ("capacity", "capacity (x one process)", ".2f"),
    ]
    path = write_results("parallel_capacity", {"rounds": args.rounds, "rows": rows}, quick=False, out=args.out)
    report("Work done by N single-threaded processes at once, against one alone", format_table(rows, cols), path)


if __name__ == "__main__":
    main()
