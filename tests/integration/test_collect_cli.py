"""`shoal collect` as a user runs it (subprocess): JSONL out, a summary, drops reported."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from shoal.rollout.envs import read_episodes

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def shoal(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "shoal.deploy.cli", *args], capture_output=True, text=True, timeout=120, cwd=ROOT
    )


def test_collect_writes_mixed_quality_episodes_and_a_summary(tmp_path):
    out = tmp_path / "data" / "cue.jsonl"
    r = shoal(
        "collect",
        "cue_recall",
        "--policy",
        "optimal,mediocre,random",
        "--episodes",
        "30",
        "--out",
        str(out),
        "--seed",
        "5",
        "--env-arg",
        "corridor_length=12",
    )
    assert r.returncode == 0, r.stderr[-2000:]
    lines = r.stdout.splitlines()
    assert lines[0] == f"collected 30 episodes of cue_recall -> {out} (dropped 0)"
    assert lines[1].split() == ["policy", "episodes", "mean_return", "success_rate", "score"]
    rows = {line.split()[0]: line.split()[1:] for line in lines[2:]}
    assert rows["optimal"][:3] == ["10", "1.000", "1.000"] and rows["all"][0] == "30" and rows["all"][3] == "50.0"
    episodes = read_episodes(out)
    assert len(episodes) == 30 and all(len(e.turns) >= 14 for e in episodes)
    assert {e.worker_id for e in episodes} == {"scripted:optimal", "scripted:mediocre", "scripted:random"}
    assert not Path(str(out) + ".tmp").exists()


def test_collect_reports_and_counts_dropped_episodes(tmp_path):
    out = tmp_path / "faulty.jsonl"
    r = shoal(
        "collect",
        "shoal.rollout.envs.faults:FaultyEnv",
        "--env-arg",
        "fault=nan",
        "--env-arg",
        "inner=wordle",
        "--policy",
        "random",
        "--episodes",
        "6",
        "--out",
        str(out),
    )
    assert r.returncode == 0, r.stderr[-2000:]
    warnings = [line for line in r.stderr.splitlines() if line.startswith("shoal: warning:")]
    assert len(warnings) == 3 and all("faulty_wordle" in w and "non-finite reward" in w for w in warnings)
    assert "faulty_wordle-random-s0-000000" in warnings[0]
    assert "(dropped 3)" in r.stdout.splitlines()[0] and len(read_episodes(out)) == 3


@pytest.mark.parametrize(
    "args, needle",
    [
        (["no_such_env", "--policy", "random"], "unknown environment 'no_such_env'"),
        (["maze_po", "--policy", "optimal,best"], "unknown policy 'best'"),
        (["wordle", "--policy", "random", "--env-arg", "vocab_size=0"], "vocab_size"),
        (["wordle", "--policy", "random", "--env-arg", "novalue"], "expected key=value"),
    ],
)
def test_collect_bad_input_is_one_line(args, needle, tmp_path):
    r = shoal("collect", *args, "--episodes", "2", "--out", str(tmp_path / "x.jsonl"))
    errors = [line for line in r.stderr.splitlines() if line.startswith("shoal: error:")]
    assert r.returncode == 2 and "Traceback" not in r.stderr and len(errors) == 1 and needle in errors[0], r.stderr
    assert not (tmp_path / "x.jsonl").exists()
