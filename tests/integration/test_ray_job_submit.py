"""`ray job submit` against a real `ray start --head` cluster; metrics land in a real Redis.

This is the command the README gives for clusters. Token auth (on by default in Ray 2.60) is
disabled for this single-machine cluster through RAY_AUTH_MODE in every process.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import small_config

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration

RAY = str(Path(sys.executable).parent / "ray")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, proc: subprocess.Popen, timeout_s: float = 120) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"ray start exited with {proc.returncode}: {proc.stdout.read()[-3000:]}")
        try:
            urllib.request.urlopen(url + "/api/version", timeout=2)
            return
        except OSError:
            time.sleep(1)
    raise TimeoutError(f"Ray dashboard at {url} did not come up in {timeout_s} s")


def _submit(cmd: list[str], env: dict[str, str], agent_wait_s: float = 120) -> subprocess.CompletedProcess:
    """`ray job submit`; the head's dashboard answers before its node's job agent has registered
    (seen on a loaded 2-core machine: "No available agent to submit job, please try again
    later"), so that answer - and only that one - is retried, as Ray's message says."""
    deadline = time.time() + agent_wait_s
    while True:
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        if r.returncode == 0 or "No available agent" not in r.stdout + r.stderr or time.time() > deadline:
            return r
        time.sleep(2)


@pytest.fixture()
def ray_head():
    """A real `ray start --head`, in its own process group so teardown stops only this cluster.
    Its temp dir is short: Ray's unix socket paths must fit in 107 bytes."""
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    tmp = tempfile.mkdtemp(prefix="shoalray", dir="/tmp")
    dash = _free_port()
    cmd = [
        RAY,
        "start",
        "--head",
        "--block",
        "--node-ip-address=127.0.0.1",
        f"--port={_free_port()}",
        f"--dashboard-port={dash}",
        "--dashboard-host=127.0.0.1",
        "--num-cpus=6",
        "--include-dashboard=true",
        "--disable-usage-stats",
        f"--temp-dir={tmp}",
    ]
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    address = f"http://127.0.0.1:{dash}"
    try:
        _wait_http(address, proc)
        yield address, env
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        shutil.rmtree(tmp, ignore_errors=True)


def test_ray_job_submit_runs_training_and_reports_metrics(ray_head, sft_models, tmp_path):
    from shoal.services.metrics import MetricsReader, start_embedded_redis

    address, env = ray_head
    redis = start_embedded_redis(tmp_path / "metrics.rdb")  # stands in for the cluster's Redis
    try:
        cfg = small_config(sft_models, tmp_path, "run.total_steps=2", "run.eval_prompts=0")
        overrides = [
            f"model.path={cfg.model.path}",
            f"reward.reward_model_path={cfg.reward.reward_model_path}",
            f"run.runs_dir={cfg.run.runs_dir}",
            f"run.redis_url={redis.url}",
            "run.total_steps=2",
            "run.eval_prompts=0",
            "rollout.prompts_per_request=8",
            "ppo.batch_size=16",
            "ppo.minibatch_size=8",
        ]
        sets = [a for o in overrides for a in ("--set", o)]
        # The README's recipe: the checkout as the job's working directory (uploaded by Ray, .gitignore
        # respected); the job and its actors import `shoal` from that copy (shoal/__init__.py).
        cmd = [
            RAY,
            "job",
            "submit",
            f"--address={address}",
            f"--working-dir={ROOT}",
            "--",
            sys.executable,
            "-m",
            "shoal.deploy.cli",
            "train",
            "--quiet",
            *sets,
        ]
        r = _submit(cmd, env)
        out = r.stdout + r.stderr
        assert r.returncode == 0, out[-4000:]
        assert "succeeded" in out, out[-2000:]
        reader = MetricsReader(redis.url)
        runs = reader.list_runs()
        assert len(runs) == 1 and runs[0]["status"] == "finished", runs
        latest = reader.latest(runs[0]["run_id"])
        assert latest["learner/policy_version"]["v"] == 2
        assert "rollout/tokens_per_s" in latest and "reward/mean" in latest

        # the multi-turn learner through the same entrypoint: R2D2 from its shipped config
        r2d2_cfg = str(Path(__file__).resolve().parents[2] / "deploy" / "configs" / "r2d2_cue_recall.yaml")
        overrides = [
            f"run.runs_dir={cfg.run.runs_dir}",
            f"run.redis_url={redis.url}",
            "run.total_steps=20",
            "env.eval_episodes=4",
            "replay.min_size_to_sample=16",
            "r2d2.dq_interval=10",
        ]
        sets = [a for o in overrides for a in ("--set", o)]
        cmd = [
            RAY,
            "job",
            "submit",
            f"--address={address}",
            "--",
            sys.executable,
            "-m",
            "shoal.deploy.cli",
            "train",
            r2d2_cfg,
            "--quiet",
            *sets,
        ]
        r = _submit(cmd, env)
        out = r.stdout + r.stderr
        assert r.returncode == 0 and "succeeded" in out, out[-4000:]
        run = next(x for x in reader.list_runs() if x["run_id"].startswith("r2d2-cue-recall"))
        assert run["status"] == "finished", run
        latest = reader.latest(run["run_id"])
        assert (
            latest["learner/policy_version"]["v"] == 20 and "learner/q_loss" in latest and "dq/stored_burn_in" in latest
        )
        assert set(reader.workers(run["run_id"])) == {"rollout-0", "rollout-1"}
    finally:
        redis.close()
