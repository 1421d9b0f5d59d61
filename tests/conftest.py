"""Shared fixtures: a tiny local model directory built from the built-in task (no hub)."""

from __future__ import annotations

import os
import sys

import pytest
import torch

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_task():
    from shoal.rollout.tasks import KeywordsTask

    return KeywordsTask()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_task):
    """A random-init tiny Llama + BPE tokenizer directory (transformers and vLLM load it)."""
    from shoal.models import build_model_dir
    from shoal.services.config import ModelSection

    return build_model_dir(tiny_task, ModelSection(), tmp_path_factory.mktemp("tiny") / "policy", seed=0)


def has_gpu() -> bool:
    return torch.cuda.is_available()


def has_vllm() -> bool:
    try:
        import vllm  # noqa: F401

        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def sft_models(tmp_path_factory):
    """A briefly SFT'd policy and a small reward model (directories), built once per session."""
    from shoal.learner.sft.learning import init_model
    from shoal.reward.train_rm import train_reward_model
    from shoal.services.config import load_config

    root = tmp_path_factory.mktemp("models")
    overrides = [
        f"model.path={root}/policy",
        f"reward.reward_model_path={root}/reward",
        "sft.steps=80",
        "reward.rm_pairs=800",
        "reward.rm_epochs=1",
    ]
    cfg = load_config(None, overrides)
    init_model(cfg, progress=False)
    train_reward_model(cfg, progress=False)
    return {"policy": str(root / "policy"), "reward": str(root / "reward")}


def small_config(models, tmp_path, *extra):
    """A run config for tests: the session's models, tmp run dir, tiny budget."""
    from shoal.services.config import load_config

    return load_config(
        None,
        [
            f"model.path={models['policy']}",
            f"reward.reward_model_path={models['reward']}",
            f"run.runs_dir={tmp_path}/runs",
            "run.total_steps=3",
            "run.eval_prompts=16",
            "rollout.num_workers=2",
            "rollout.prompts_per_request=8",
            "ppo.batch_size=16",
            "ppo.minibatch_size=8",
            "ppo.ppo_epochs=1",
            "buffer.capacity=64",
            "dashboard.enabled=false",  # the dashboard tests start their own
            *extra,
        ],
    )


def steps_by_hand(prog, n: int) -> None:
    """`n` learner steps taken by a RayProgram outside its loop, each on the batch its workers
    sample then, with no weight sync between them: a run whose loop then has no step left."""
    import ray

    for _ in range(n):
        for i in prog.rollout.healthy_slots():
            prog.launch(i)
        for ref, (kind, info) in list(prog.pending.items()):
            if kind == "chain":
                prog.on_chain(info, ref, stopping=True)
        prog.pending.clear()
        prog.version = int(ray.get(prog.train_request())["learner/policy_version"])


def release_program(prog) -> None:
    """A RayProgram's collective group and actors, now: the module's Ray (6 CPUs) is free for
    the next test. Ray's registry of collective groups holds the members' handles, so a
    program with `rollout.weight_transport=rdt` keeps its actors alive until it is closed."""
    import ray

    if prog.direct is not None:
        prog.direct.close()
    for actor in [prog.learner, prog.buffer, *prog.rollout.handles(), *prog.scoring.handles()]:
        ray.kill(actor)


# The interpreter's own teardown after a full run (Ray's, gRPC's and torch's native threads
# still alive) crashed once with SIGSEGV after every test had passed (fresh clone, 2026-12-06:
# "746 passed" then "Segmentation fault"), turning a green run red. Once pytest has printed its
# summary the process leaves with pytest's own exit status, skipping that teardown.
_EXIT_STATUS: list[int] = []


def pytest_sessionfinish(session, exitstatus):
    _EXIT_STATUS.append(int(exitstatus))


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    if _EXIT_STATUS and os.environ.get("SHOAL_TEST_HARD_EXIT", "1") == "1":
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_EXIT_STATUS[-1])
