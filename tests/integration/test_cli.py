"""The `shoal` CLI as a user runs it (subprocess): bad input ends in one line and exit 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from shoal.services.program import LOCAL_ACTORS_PER_CORE

pytestmark = pytest.mark.integration


def shoal(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "shoal.deploy.cli", *args], capture_output=True, text=True, timeout=timeout
    )


def assert_one_line_error(r: subprocess.CompletedProcess, *needles: str) -> None:
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert "Traceback" not in r.stderr, r.stderr[-2000:]
    errors = [line for line in r.stderr.splitlines() if line.startswith("shoal: error:")]
    assert len(errors) == 1, r.stderr[-2000:]
    for needle in needles:
        assert needle in errors[0], errors[0]


@pytest.mark.parametrize(
    "overrides, needles",
    [
        (["nosuch.key=1"], ["nosuch", "unknown key"]),
        (["ppo.learning_rate=-0.1"], ["ppo.learning_rate", "greater than 0"]),
        (["reward.rule_functions=[no_such_module.rewards:score]"], ["reward.rule_functions", "no_such_module"]),
        (["model.path=/no/such/model"], ["model.path", "/no/such/model"]),
    ],
)
def test_train_rejects_bad_config(overrides, needles, tmp_path):
    sets = [a for o in overrides for a in ("--set", o)]
    assert_one_line_error(shoal("train", *sets, "--set", f"run.runs_dir={tmp_path}"), *needles)


def test_train_rejects_redis_that_does_not_answer(sft_models, tmp_path):
    r = shoal(
        "train",
        "--set",
        f"model.path={sft_models['policy']}",
        "--set",
        f"reward.reward_model_path={sft_models['reward']}",
        "--set",
        "run.redis_url=redis://127.0.0.1:1/0",
        "--set",
        f"run.runs_dir={tmp_path}",
    )
    assert_one_line_error(r, "redis://127.0.0.1:1/0", "does not answer")


def test_train_rm_names_the_bad_line_of_a_preference_file(sft_models, tmp_path):
    prefs = tmp_path / "prefs.jsonl"
    good = {"prompt": "write about ko :", "chosen": "kofa", "rejected": "mabi"}
    prefs.write_text(json.dumps(good) + "\n" + json.dumps({"prompt": "x", "chosen": "y"}) + "\n")
    r = shoal(
        "train-rm",
        "--set",
        f"model.path={sft_models['policy']}",
        "--set",
        f"reward.reward_model_path={tmp_path}/rm",
        "--set",
        f"reward.preference_file={prefs}",
    )
    assert_one_line_error(r, "prefs.jsonl:2", "rejected")


@pytest.mark.parametrize(
    "content, needles",
    [
        (b'{"prompt": "a", "chosen": "b", "rejected": "c"}\n', ["one.jsonl: 1 record: need at least 2"]),
        (b'{"prompt": "a", "chosen": "b", "rejected": "c"}\n\xff\n', ["one.jsonl:2: not UTF-8"]),
        (b'{"prompt": "a", "chosen": "b", "rejected": "c", "gold_chosen": NaN}\n', ["one.jsonl:1:", "finite"]),
        (b'{"prompt": "a", "responses": ["b", "c"], "ranking": [1, 1]}\n', ["one.jsonl:1:", "permutation"]),
    ],
)
def test_train_rm_and_dpo_reject_bad_preference_files_and_keep_the_old_model(sft_models, tmp_path, content, needles):
    (tmp_path / "one.jsonl").write_bytes(content)
    (tmp_path / "rm").mkdir()
    (tmp_path / "rm" / "config.json").write_text("{}")
    model = ["--set", f"model.path={sft_models['policy']}"]
    r = shoal(
        "train-rm",
        *model,
        "--set",
        f"reward.reward_model_path={tmp_path}/rm",
        "--set",
        f"reward.preference_file={tmp_path}/one.jsonl",
    )
    assert_one_line_error(r, *needles)
    assert (tmp_path / "rm" / "config.json").read_text() == "{}"
    if "record" not in needles[0]:  # DPO reads the same files, naming its field
        r = shoal("train", *model, "--set", "run.algorithm=dpo", "--set", f"dpo.dataset={tmp_path}/one.jsonl", "--set", "reward.reward_model_path=null",
                  "--set", f"run.runs_dir={tmp_path}")  # fmt: skip
        assert_one_line_error(r, "dpo.dataset:", *needles)


@pytest.mark.parametrize(
    "overrides, needles",
    [
        (["dpo.beta=0"], ["dpo.beta", "greater than 0"]),
        (["dpo.online=true", "dpo.num_samples=1"], ["dpo.num_samples", "greater than or equal to 2"]),
        (["dpo.loss=hinge"], ["dpo.loss"]),
    ],
)
def test_dpo_rejects_bad_config(overrides, needles, tmp_path):
    sets = [a for o in ["run.algorithm=dpo", *overrides] for a in ("--set", o)]
    assert_one_line_error(shoal("train", *sets, "--set", f"run.runs_dir={tmp_path}"), *needles)


def test_local_train_and_metrics_command(sft_models, tmp_path):
    base = [
        "--set",
        f"model.path={sft_models['policy']}",
        "--set",
        f"reward.reward_model_path={sft_models['reward']}",
        "--set",
        f"run.runs_dir={tmp_path}/runs",
        "--set",
        "run.mode=local",
        "--set",
        "run.total_steps=2",
        "--set",
        "run.eval_prompts=8",
        "--set",
        "ppo.batch_size=16",
        "--set",
        "ppo.minibatch_size=8",
        "--set",
        "rollout.num_workers=1",
    ]
    r = shoal("train", "--quiet", *base)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "eval/gold_reward" in r.stdout and "learner_steps" in r.stdout
    m = shoal("metrics", "latest", "--runs-dir", f"{tmp_path}/runs")
    assert m.returncode == 0, m.stderr[-2000:]
    assert "learner/policy_loss" in m.stdout and "status=finished" in m.stdout


def test_multiturn_train_rejects_bad_input(tmp_path):
    """r2d2 on a free-text env, an env factory that does not import, a malformed data set."""
    base = ["--set", f"run.runs_dir={tmp_path}/runs", "--set", "dashboard.enabled=false", "--set", "run.mode=local"]
    r = shoal("train", *base, "--set", "run.algorithm=r2d2", "--set", "env.name=random_walks")
    assert_one_line_error(r, "env.name", "legal_actions")
    r = shoal("train", *base, "--set", "run.algorithm=r2d2", "--set", "env.name=no_such_pkg.envs:make")
    assert_one_line_error(r, "env.name", "no_such_pkg")
    bad = tmp_path / "episodes.jsonl"
    bad.write_text('{"episode_id": "a", "task": "t", "turns": []}\n{"episode_id": "b"\n')
    r = shoal(
        "train", *base, "--set", "run.algorithm=ilql", "--set", "env.name=random_walks", "--set", f"ilql.dataset={bad}"
    )
    assert_one_line_error(r, "episodes.jsonl:")


def test_local_r2d2_train_then_metrics(tmp_path):
    runs = f"{tmp_path}/runs"
    r = shoal(
        "train",
        "--set",
        "run.algorithm=r2d2",
        "--set",
        "run.mode=local",
        "--set",
        f"run.runs_dir={runs}",
        "--set",
        "dashboard.enabled=false",
        "--set",
        "run.total_steps=20",
        "--set",
        "env.kwargs={corridor_length: 3}",
        "--set",
        "env.eval_episodes=5",
        "--set",
        "replay.min_size_to_sample=16",
        "--set",
        "r2d2.batch_size=8",
        "--set",
        "rollout.num_workers=2",
        "--quiet",
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "eval/success_rate" in r.stdout and "learner_steps" in r.stdout
    m = shoal("metrics", "latest", "--runs-dir", runs)
    assert m.returncode == 0, m.stderr[-2000:]
    assert "learner/q_loss" in m.stdout and "rollout/episode_return_mean" in m.stdout


def test_train_refuses_more_actors_than_the_machine_holds_at_once(sft_models, tmp_path):
    """64 rollout workers on a small machine: one line naming the shortfall, before any actor
    starts (it used to start 64 actors, 11.5 GiB, and train nothing)."""
    many = LOCAL_ACTORS_PER_CORE * (os.cpu_count() or 1) + 1
    r = shoal(
        "train",
        *("--set", f"model.path={sft_models['policy']}", "--set", f"reward.reward_model_path={sft_models['reward']}"),
        *(
            "--set",
            f"rollout.num_workers={many}",
            "--set",
            f"run.runs_dir={tmp_path}",
            "--set",
            "dashboard.enabled=false",
        ),
        timeout=60,
    )
    assert_one_line_error(r, "rollout.num_workers", f"{many} rollout worker(s)", "run.ray_address")


def test_train_with_a_ray_address_that_does_not_answer(sft_models, tmp_path):
    r = shoal(
        "train",
        *("--set", f"model.path={sft_models['policy']}", "--set", f"reward.reward_model_path={sft_models['reward']}"),
        *(
            "--set",
            "run.ray_address=127.0.0.1:1",
            "--set",
            f"run.runs_dir={tmp_path}",
            "--set",
            "dashboard.enabled=false",
        ),
        timeout=60,
    )
    assert_one_line_error(r, "run.ray_address", "127.0.0.1:1", "does not answer")


@pytest.mark.parametrize("mode", ["ray", "local"])
def test_train_stops_when_every_reward_is_rejected(mode, sft_models, tmp_path):
    """A reward that is NaN for everything: one line saying so, not minutes of silent spinning;
    the events stay few (rate-limited per kind)."""
    runs = tmp_path / "runs"
    r = shoal(
        "train",
        *("--set", f"model.path={sft_models['policy']}", "--set", f"reward.reward_model_path={sft_models['reward']}"),
        *("--set", "reward.rule_functions=[shoal.reward.faults:nan_always]", "--set", f"run.mode={mode}"),
        *("--set", f"run.runs_dir={runs}", "--set", "dashboard.enabled=false", "--set", "run.eval_prompts=0"),
        timeout=240,
    )
    assert_one_line_error(r, "no rollout can be trained on", "rejected every rollout", "reward.rule_functions")
    from shoal.services.metrics import MetricsReader, resolve_redis

    url, embedded = resolve_redis(None, str(runs))
    try:
        reader = MetricsReader(url)
        run = reader.list_runs()[0]
        assert run["status"] == "failed"
        kinds = [e["kind"] for e in reader.events(run["run_id"])]
        assert 0 < kinds.count("reward_rejected") <= 5 * 4, kinds  # <= 5 per 10 s per source
    finally:
        if embedded is not None:
            embedded.close()


def _broken_copy(src: str, dst, *, config: str | None = None, drop: tuple[str, ...] = ()):
    import shutil
    from pathlib import Path

    shutil.copytree(src, dst)
    if config is not None:
        (Path(dst) / "config.json").write_text(config)
    for pattern in drop:
        for p in Path(dst).glob(pattern):
            p.unlink()
    return str(dst)


@pytest.mark.parametrize(
    "case, needles",
    [
        ("empty_config", ["model.path", "config.json is not valid JSON"]),
        ("no_weights", ["model.path", "no weights"]),
        ("rule_raises", ["reward.rule_functions", "json:dumps raised TypeError", "probe rollout"]),
        ("rule_returns_str", ["reward.rule_functions", "returned str"]),
        ("rule_not_callable", ["reward.rule_functions", "is not callable"]),
        ("too_long", ["rollout.max_new_tokens", "does not fit the model's context"]),
    ],
)
def test_train_fails_before_ray_starts(case, needles, sft_models, tmp_path):
    """What used to fail inside an actor after 27-64 s of Ray start-up, as a 57-84-line
    traceback, is checked before Ray starts: one line, in seconds."""
    import time

    policy, sets = sft_models["policy"], []
    if case == "empty_config":
        policy = _broken_copy(policy, tmp_path / "p", config="")
    elif case == "no_weights":
        policy = _broken_copy(policy, tmp_path / "p", drop=("*.safetensors",))
    elif case == "rule_raises":
        sets = ["--set", "reward.rule_functions=[json:dumps]"]
    elif case == "rule_returns_str":
        sets = ["--set", "reward.rule_functions=[shoal.reward.faults:returns_text]"]
    elif case == "rule_not_callable":
        sets = ["--set", "reward.rule_functions=[json:decoder]"]
    elif case == "too_long":
        sets = ["--set", "rollout.max_new_tokens=100000"]
    t0 = time.monotonic()
    r = shoal(
        "train",
        *("--set", f"model.path={policy}", "--set", f"reward.reward_model_path={sft_models['reward']}"),
        *("--set", f"run.runs_dir={tmp_path}/runs", "--set", "dashboard.enabled=false", *sets),
        timeout=120,
    )
    assert_one_line_error(r, *needles)
    assert "Started a local Ray" not in r.stderr  # nothing was started
    assert time.monotonic() - t0 < 30
