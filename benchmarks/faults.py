"""Faults and bad input, as a user meets them: each scenario runs `shoal train` (the demo
config through Ray on the seed-0 models, 30 steps) as a subprocess, does the fault to it,
and reads what happened from its console, exit code and summary.json.

    python benchmarks/faults.py                  # every scenario (~8 min on 2 cores)
    python benchmarks/faults.py --only learner   # scenarios whose name contains "learner"

Columns:
- `noticed s`: from the fault (the SIGKILL or SIGSTOP, the Ctrl-C, or the command's start for
  bad input) to the console line saying so (`... died`, `... has not finished a request`, the
  restart line) or to the exit. A hung actor (SIGSTOP) is noticed after run.actor_timeout_s
  (10 s here, 600 s by default).
- `recovered s`: from the fault to the line saying the actor is back (or, for Ctrl-C, the
  `--resume` command's time to its "resumes at" line); `-` when nothing is to be recovered.
- `unaccounted`: prompts drawn by the driver that are neither in the replay's books (added,
  refused as full), nor rejected, nor counted as lost since the replay's last snapshot: 0
  means every prompt is accounted for (requests lost with a dead actor are re-sent); `-`
  when the run ended early by design.
- `lost since snapshot`: rollouts a restarted replay buffer had acknowledged after the
  snapshot it came back from (run.replay_snapshot_interval_s, 0.2 s by default).
- `rc`: the exit code (`130 -> 0`: interrupted, then resumed to the end).

Actors are found by Ray's process titles (`ray::WorkerActor`, `ray::ScorerActor`,
`ray::LearnerActor`, `ray::BufferActor`), as an operator would find them with `ps`.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import ROOT, format_table, report, write_results  # noqa: E402
from benchmarks.rlhf_seeds import DEMO, ensure_models  # noqa: E402

STEPS = 30


@dataclass
class Run:
    """One `shoal train` subprocess with timestamped console lines."""

    args: list[str]
    lines: list[tuple[float, str]] = field(default_factory=list)
    proc: Any = None
    started: float = 0.0

    def start(self, cwd: Path) -> Run:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "shoal.deploy.cli", "train", *self.args],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        threading.Thread(target=self._read, daemon=True).start()
        return self

    def _read(self) -> None:
        for line in self.proc.stdout:
            for part in line.replace("\r", "\n").splitlines():
                self.lines.append((time.monotonic(), part))

    def first(self, needle: str, after: float = 0.0) -> float | None:
        return next((t for t, line in list(self.lines) if needle in line and t >= after), None)

    def wait(self, timeout: float = 600) -> int:
        rc = self.proc.wait(timeout=timeout)
        time.sleep(0.2)  # the reader thread drains the pipe
        return rc

    def step(self) -> int:
        """The newest learner step on the progress bar."""
        for _, line in reversed(list(self.lines)):
            if "learner steps:" in line and "/" in line:
                try:
                    return int(line.split("|")[-1].split("/")[0].strip().split()[-1])
                except (ValueError, IndexError):
                    continue
        return 0


def ray_actor_pid(title: str) -> int:
    for p in psutil.process_iter(["cmdline", "create_time"]):
        cmd = p.info["cmdline"] or []
        if cmd and cmd[0].startswith(f"ray::{title}"):
            return p.pid
    raise RuntimeError(f"no process titled ray::{title}")


def redis_server_pid(runs: Path) -> int:
    newest = sorted(
        (
            p
            for p in psutil.process_iter(["cmdline", "create_time"])
            if "redis-server" in " ".join(p.info["cmdline"] or [])
        ),
        key=lambda p: p.info["create_time"],
    )
    if not newest:
        raise RuntimeError("no redis-server")
    return newest[-1].pid


def wait_step(run: Run, n: int, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while run.step() < n:
        if run.proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(
                f"the run ended or stalled before step {n}:\n" + "\n".join(x for _, x in run.lines[-20:])
            )
        time.sleep(0.1)


def summary_of(runs: Path) -> dict[str, Any]:
    files = sorted(runs.glob("*/summary.json"), key=lambda p: p.stat().st_mtime)
    return json.loads(files[-1].read_text()) if files else {}


def lost(summary: dict[str, Any]) -> int | None:
    """Prompts drawn that the run cannot account for: not added to the replay, refused,
    rejected, or counted as lost since the replay's last snapshot (should be 0)."""
    keys = ("drawn", "replay_added", "replay_refused", "rejected_nonfinite")
    if not all(isinstance(summary.get(k), (int, float)) for k in keys):
        return None
    accounted = sum(summary[k] for k in keys[1:]) + summary.get("replay_lost", 0)
    return int(summary["drawn"] - accounted)


# ---- scenarios -------------------------------------------------------------------------------


def kill_actor(title: str, sig: int = signal.SIGKILL, notice: str = "died") -> Callable[[Run, Path], dict[str, Any]]:
    """Send `sig` to the actor process titled `title` at step 5 (SIGSTOP: a hung actor)."""

    def act(run: Run, runs: Path) -> dict[str, Any]:
        wait_step(run, 5)
        t = time.monotonic()
        os.kill(ray_actor_pid(title), sig)
        rc = run.wait()
        noticed = run.first(notice, after=t) or (time.monotonic() if rc else None)
        back = run.first("is back", after=t)
        summary = summary_of(runs) if rc == 0 else {}
        return {
            "noticed_s": noticed - t if noticed else None,
            "recovered_s": back - t if back else None,
            "lost": lost(summary),
            "replay_lost": summary.get("replay_lost"),
            "rc": str(rc),
        }

    return act


def kill_redis(run: Run, runs: Path) -> dict[str, Any]:
    wait_step(run, 5)
    t = time.monotonic()
    os.kill(redis_server_pid(runs), signal.SIGKILL)
    rc = run.wait()
    back = run.first("restarted it on the same port", after=t)
    return {
        "noticed_s": back - t if back else None,
        "recovered_s": back - t if back else None,
        "lost": lost(summary_of(runs)),
        "rc": str(rc),
    }


def ctrl_c_then_resume(run: Run, runs: Path) -> dict[str, Any]:
    wait_step(run, 5)
    t = time.monotonic()
    os.killpg(run.proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole group
    rc = run.wait()
    stopped = time.monotonic() - t
    line = next((x for _, x in run.lines if "--resume " in x), "")
    if not line:
        return {"noticed_s": stopped, "recovered_s": None, "lost": None, "rc": str(rc)}
    again = Run([*run.args, "--resume", line.split("--resume ")[-1].strip()]).start(runs.parent)
    rc2 = again.wait()
    resumed = again.first("resumes at learner step")
    return {
        "noticed_s": stopped,
        "recovered_s": resumed - again.started if resumed else None,
        "lost": None,  # the requests in flight at the interrupt are not in the checkpoint
        "rc": f"{rc} -> {rc2}",
    }


def bad_input(run: Run, runs: Path) -> dict[str, Any]:
    rc = run.wait()
    error = next((x for _, x in run.lines if x.startswith("shoal: error:")), "")
    return {
        "noticed_s": time.monotonic() - run.started,
        "recovered_s": None,
        "lost": None,
        "rc": str(rc),
        "error": error[:160],
    }


SCENARIOS: list[tuple[str, list[str], Callable[[Run, Path], dict[str, Any]]]] = [
    # the worker kill runs twice as long: a restarted worker takes ~5 s to be seen back
    ("rollout worker SIGKILL", [f"run.total_steps={STEPS * 2}"], kill_actor("WorkerActor")),
    ("reward scorer SIGKILL", ["reward.placement=actors"], kill_actor("ScorerActor")),
    ("learner SIGKILL", ["run.checkpoint_interval=3"], kill_actor("LearnerActor")),
    ("replay buffer SIGKILL", [], kill_actor("BufferActor")),
    (
        "rollout worker hung (SIGSTOP)",
        ["run.actor_timeout_s=10"],
        kill_actor("WorkerActor", signal.SIGSTOP, "has not finished a request"),
    ),
    ("embedded Redis SIGKILL", [], kill_redis),
    ("Ctrl-C, then --resume", [f"run.total_steps={STEPS * 10}"], ctrl_c_then_resume),
    ("reward NaN for every rollout", ["reward.rule_functions=[shoal.reward.faults:nan_always]"], bad_input),
    ("rule reward that raises", ["reward.rule_functions=[json:dumps]"], bad_input),
    ("Ray address that does not answer", ["run.ray_address=127.0.0.1:1"], bad_input),
    ("64 rollout workers on this machine", ["rollout.num_workers=64"], bad_input),
]

COLUMNS = [
    ("scenario", "scenario", "s"),
    ("noticed_s", "noticed s", ".1f"),
    ("recovered_s", "recovered s", ".1f"),
    ("lost", "unaccounted", "d"),
    ("replay_lost", "lost since snapshot", "d"),
    ("rc", "rc", "s"),
]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default=None, help="run the scenarios whose name contains this")
    ap.add_argument("--models-dir", default=str(ROOT / "benchmarks" / "results" / "models"))
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    models = ensure_models(Path(args.models_dir), 0, DEMO)
    work = ROOT / "benchmarks" / "results" / "faults_runs"
    rows = []
    for name, overrides, act in SCENARIOS:
        if args.only and args.only not in name:
            continue
        runs = work / name.replace(" ", "_").replace(",", "").replace("-", "")
        sets = [
            f"model.path={models['policy']}",
            f"reward.reward_model_path={models['reward']}",
            f"run.runs_dir={runs}",
            f"run.total_steps={STEPS}",
            "run.eval_prompts=16",
            "dashboard.enabled=false",
            *overrides,
        ]
        cmd = [str(DEMO), *[x for s in sets for x in ("--set", s)]]
        print(f"[faults] {name}", flush=True)
        run = Run(cmd).start(ROOT)
        try:
            row = {"scenario": name, **act(run, runs)}
        except Exception as e:  # a scenario that could not be staged is reported, not hidden
            row = {"scenario": name, "rc": "n/a", "error": f"{type(e).__name__}: {e}"[:300]}
        finally:
            if run.proc.poll() is None:
                os.killpg(run.proc.pid, signal.SIGKILL)
        rows.append(row)
        print(f"  {row}", flush=True)
    path = write_results("faults", {"steps": STEPS, "rows": rows}, quick=bool(args.only), out=args.out)
    report("Faults and bad input (demo config through Ray, seed-0 models)", format_table(rows, COLUMNS), path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
