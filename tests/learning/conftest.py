"""Shared, slow fixtures of the learning tests."""

from __future__ import annotations

from pathlib import Path

import pytest

DEMO = Path(__file__).resolve().parents[2] / "deploy" / "configs" / "demo.yaml"
GRPO_DEMO = DEMO.with_name("grpo_demo.yaml")


@pytest.fixture(scope="session")
def demo_models(tmp_path_factory):
    """The demo's SFT policy and its ensemble of three Bradley-Terry reward models (seed 0, the
    demo's sizes: 150 SFT steps, 10,000 gold-labelled pairs), built once per session (~3 min on
    2 cores)."""
    from shoal.learner.sft.learning import init_model
    from shoal.reward.train_rm import train_reward_model
    from shoal.services.config import load_config
    from shoal.services.run import torch_setup

    root = tmp_path_factory.mktemp("demo-models")
    cfg = load_config(DEMO, [f"model.path={root}/policy", f"reward.reward_model_path={root}/reward"])
    torch_setup(cfg)
    init_model(cfg, progress=False)
    rm = train_reward_model(cfg, progress=False)
    return {"policy": str(root / "policy"), "reward": str(root / "reward"), "rm": rm}


def demo_config(models: dict, tmp_path: Path, *overrides: str, config: Path = DEMO):
    """A shipped demo config (the PPO demo by default) on the session's demo models, writing
    into tmp_path."""
    from shoal.services.config import load_config

    base = [
        f"model.path={models['policy']}",
        f"reward.reward_model_path={models['reward']}",
        f"run.runs_dir={tmp_path}/runs",
        "dashboard.enabled=false",
    ]
    return load_config(config, [*base, *overrides])
