"""Checkpoints that lose nothing: a local run resumed from its step-4 checkpoint takes exactly
the steps the uninterrupted run took (same losses, same final weights), and `shoal train`
stopped by Ctrl-C saves a checkpoint, says how to go on, and `--resume` continues the same run
id, step and charts to the end."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time

import pytest
from safetensors.torch import load_file

from tests.conftest import small_config

pytestmark = pytest.mark.integration

LOSSES = ("learner/policy_loss", "learner/value_loss", "learner/kl_ref", "learner/approx_kl")


def _learner_history(url: str, run_id: str) -> dict[int, dict[str, float]]:
    from shoal.services.metrics import MetricsReader

    out: dict[int, dict[str, float]] = {}
    for e in MetricsReader(url).history(run_id, source="learner"):
        if e["step"] is not None and "learner/policy_loss" in e["data"]:
            out[int(e["step"])] = {k: e["data"][k] for k in LOSSES if k in e["data"]}
    return out


def _weights(ckpt) -> dict:
    return load_file(str(next((ckpt / "model").glob("*.safetensors"))))


def test_a_resumed_local_run_takes_exactly_the_uninterrupted_steps(sft_models, tmp_path):
    from shoal.learner.checkpoint import checkpoint_dir, read_driver_state
    from shoal.services.local import run_local
    from shoal.services.run import open_run

    extra = ("run.mode=local", "run.total_steps=8", "run.checkpoint_interval=4", "run.keep_checkpoints=0")
    cfg = small_config(sft_models, tmp_path, *extra, "run.eval_prompts=8", "rollout.prompts_per_request=6")
    a = run_local(cfg, progress=False)
    run_a = tmp_path / "runs" / a["run_id"]
    assert read_driver_state(checkpoint_dir(run_a, 4))["buffer"]["items"]  # leftovers in the replay at step 4

    run_b = tmp_path / "runs" / "resumed-b"  # a copy of run A as it was at step 4
    shutil.copytree(run_a, run_b)
    shutil.rmtree(checkpoint_dir(run_b, 8))
    resume = cfg.model_copy(update={"run": cfg.run.model_copy(update={"resume_from": str(checkpoint_dir(run_b, 4))})})
    ctx = open_run(resume, "resumed-b", resume=True)
    b = run_local(resume, progress=False, ctx=ctx)

    from shoal.services.metrics import resolve_redis

    url, embedded = resolve_redis(None, str(tmp_path / "runs"))
    try:
        hist_a, hist_b = _learner_history(url, a["run_id"]), _learner_history(url, "resumed-b")
    finally:
        if embedded is not None:
            embedded.close()
    assert sorted(hist_b) == [5, 6, 7, 8]
    for step in (5, 6, 7, 8):
        assert hist_b[step] == hist_a[step], step  # bit for bit
    wa, wb = _weights(checkpoint_dir(run_a, 8)), _weights(checkpoint_dir(run_b, 8))
    assert all((wa[k] == wb[k]).all() for k in wa)
    assert b["before"] == a["before"]  # the start evaluation travels with the checkpoint
    assert b["learner_steps"] == 8 and b["samples"] == a["samples"]


def _shoal(*args: str) -> list[str]:
    return [sys.executable, "-m", "shoal.deploy.cli", *args]


def test_ctrl_c_saves_and_resume_continues_the_same_run(sft_models, tmp_path):
    from shoal.services.metrics import MetricsReader, resolve_redis

    runs = tmp_path / "runs"
    sets = [
        *("--set", f"model.path={sft_models['policy']}", "--set", f"reward.reward_model_path={sft_models['reward']}"),
        *("--set", "run.mode=local", "--set", f"run.runs_dir={runs}", "--set", "dashboard.enabled=false"),
        *("--set", "run.eval_prompts=8", "--set", "run.checkpoint_interval=1000"),
    ]
    proc = subprocess.Popen(
        _shoal("train", *sets, "--set", "run.total_steps=500", "--quiet"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url, embedded = None, None
    try:
        deadline = time.monotonic() + 240
        step = 0
        while time.monotonic() < deadline and step < 3:
            time.sleep(0.5)
            if url is None and runs.exists() and any(runs.glob("*.rdb")):
                url, embedded = resolve_redis(None, str(runs))
            if url is not None:
                runs_known = MetricsReader(url).list_runs()
                if runs_known:
                    v = MetricsReader(url).latest(runs_known[0]["run_id"]).get("learner/policy_version")
                    step = int(v["v"]) if v and v["v"] is not None else 0
        assert step >= 3, "the run did not start training"
        proc.send_signal(signal.SIGINT)  # what Ctrl-C does
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 130, err[-2000:]
        lines = [line for line in err.splitlines() if line.startswith("shoal:")]
        assert len(lines) == 1 and "interrupted at learner step" in lines[0] and "--resume" in lines[0], err[-2000:]
        assert "Traceback" not in err
        run_id = lines[0].split("--resume ")[1].strip()
        record = MetricsReader(url).run_info(run_id)
        assert record["status"] == "interrupted"
        stopped = int(record["summary"]["interrupted_at"])

        r = subprocess.run(
            _shoal("train", *sets, "--set", f"run.total_steps={stopped + 3}", "--quiet", "--resume", run_id),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert r.returncode == 0, r.stderr[-3000:]
        assert f"resumes at learner step {stopped}" in r.stdout
        record = MetricsReader(url).run_info(run_id)
        assert record["status"] == "finished" and record["summary"]["learner_steps"] == stopped + 3
        steps = {e["step"] for e in MetricsReader(url).history(run_id, names=["learner/policy_loss"], source="learner")}
        assert {1, 2, stopped, stopped + 1, stopped + 3} <= steps  # one chart, before and after the stop

        again = subprocess.run(
            _shoal("train", *sets, "--set", f"run.total_steps={stopped + 3}", "--resume", run_id),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert again.returncode == 2 and "already reached learner step" in again.stderr
    finally:
        if proc.poll() is None:
            proc.kill()
        if embedded is not None:
            embedded.close()


def test_resume_from_a_bad_checkpoint_is_one_line(sft_models, tmp_path):
    from tests.integration.test_cli import assert_one_line_error, shoal

    empty = tmp_path / "runs" / "broken-run" / "checkpoints" / "step_00000004"
    empty.mkdir(parents=True)
    (empty / "meta.json").write_text("{not json")
    base = ("--set", f"model.path={sft_models['policy']}", "--set", f"run.runs_dir={tmp_path / 'runs'}")
    r = shoal("train", *base, "--resume", "broken-run")
    assert_one_line_error(r, "--resume broken-run", "meta.json is corrupt")
    r = shoal("train", *base, "--resume", "no-such-run")
    assert_one_line_error(r, "--resume no-such-run", "no run directory")
    r = shoal("train", *base, "--set", f"run.resume_from={tmp_path}/nothing-here")
    assert_one_line_error(r, "run.resume_from", "does not exist")
