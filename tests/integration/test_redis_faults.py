"""The embedded metrics Redis under faults: killed mid-run it is restarted on its port and the
run still ends 0 with its summary; a driver killed with SIGKILL leaves no server behind (the
watchdog shuts it down, data saved) and its run reads as failed once its heartbeat is old."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

pytestmark = pytest.mark.integration


def _train(sft_models, runs, steps: int) -> subprocess.Popen:
    args = [
        *("--set", f"model.path={sft_models['policy']}", "--set", f"reward.reward_model_path={sft_models['reward']}"),
        *("--set", "run.mode=local", "--set", f"run.runs_dir={runs}", "--set", "dashboard.enabled=false"),
        *("--set", "run.eval_prompts=8", "--set", f"run.total_steps={steps}", "--quiet"),
    ]
    return subprocess.Popen(
        [sys.executable, "-m", "shoal.deploy.cli", "train", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for_steps(runs, n: int, timeout_s: float = 240) -> tuple[str, int]:
    """(run id, the embedded server's pid) once the run has logged learner step n."""
    from shoal.services.metrics import MetricsReader, resolve_redis

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        time.sleep(0.5)
        if not (runs / "shoal-metrics.rdb.settings").exists() and not (runs / "shoal-metrics.rdb").exists():
            continue
        url, server = resolve_redis(None, str(runs))
        try:
            reader = MetricsReader(url)
            known = reader.list_runs()
            v = reader.latest(known[0]["run_id"]).get("learner/policy_version") if known else None
            if v and v["v"] is not None and v["v"] >= n:
                return known[0]["run_id"], server.pid
        finally:
            server.close()
    raise AssertionError("the run did not reach step n")


def test_embedded_redis_killed_mid_run_is_restarted_and_the_run_ends_well(sft_models, tmp_path):
    from shoal.services.metrics import MetricsReader, resolve_redis

    runs = tmp_path / "runs"
    proc = _train(sft_models, runs, 60)
    try:
        run_id, pid = _wait_for_steps(runs, 3)
        os.kill(pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-2000:]
    assert "restarted it on the same port" in out
    assert f"Shoal run {run_id}" in out  # the summary table
    url, server = resolve_redis(None, str(runs))
    try:
        record = MetricsReader(url).run_info(run_id)
        assert record["status"] == "finished" and record["summary"]["learner_steps"] == 60
    finally:
        server.close()


def test_a_killed_driver_leaves_no_server_and_its_run_reads_failed(sft_models, tmp_path):
    from shoal.services.metrics import HEARTBEAT_LOST_S, MetricsReader, resolve_redis
    from shoal.services.metrics_schema import RUN_STATUSES

    runs = tmp_path / "runs"
    proc = _train(sft_models, runs, 500)
    try:
        run_id, pid = _wait_for_steps(runs, 2)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 20
        while psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
            assert time.monotonic() < deadline, "the embedded Redis outlived its driver"
            time.sleep(0.2)
    finally:
        if proc.poll() is None:
            proc.kill()
    url, server = resolve_redis(None, str(runs))  # the data was saved: start it again and read
    try:
        reader = MetricsReader(url)
        assert reader.run_info(run_id)["status"] == "running"  # a fresh heartbeat: not yet known lost
        reader.client.hset(f"shoal:run:{run_id}", "heartbeat_at", repr(time.time() - HEARTBEAT_LOST_S - 5))
        record = reader.run_info(run_id)
        assert record["status"] == "failed" and record["status"] in RUN_STATUSES
        assert "its driver stopped" in record["reason"]
    finally:
        server.close()
