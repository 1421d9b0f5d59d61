"""Config: defaults valid, overrides typed, every bad value named by its field path."""

import pytest

from services.config import ConfigError, ShoalConfig, load_config


def test_defaults_and_demo_config_load():
    from deploy.cli import default_config_path

    cfg = load_config(default_config_path())
    assert cfg.run.mode == "ray" and cfg.ppo.clip_coef == 0.2


def test_overrides_are_typed():
    cfg = load_config(None, ["ppo.learning_rate=1e-4", "rollout.num_workers=3", "reward.reward_model_path=null"])
    assert cfg.ppo.learning_rate == 1e-4 and cfg.rollout.num_workers == 3
    assert cfg.reward.reward_model_path is None


@pytest.mark.parametrize(
    "override, path",
    [
        ("ppo.learning_rate=-1", "ppo.learning_rate"),
        ("nosuch.key=1", "nosuch"),
        ("ppo.nosuch=1", "ppo.nosuch"),
        ("rollout.engine=tpu", "rollout.engine"),
        ("ppo.minibatch_size=1000", "ppo.minibatch_size"),
        ("model.num_heads=3", "model.num_heads"),
        ("reward.rule_functions=[no_such_module:f]", "reward.rule_functions"),
        ("reward.rule_functions=[os:no_such_fn]", "reward.rule_functions"),
    ],
)
def test_bad_values_name_the_field(override, path):
    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    assert str(e.value).startswith(path + ":"), str(e.value)


def test_yaml_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("ppo: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    nested = tmp_path / "n.yaml"
    nested.write_text("ppo:\n  clip_coef: 0\n")
    with pytest.raises(ConfigError, match="ppo.clip_coef"):
        load_config(nested)


def test_config_is_frozen_and_every_field_described():
    cfg = ShoalConfig()
    with pytest.raises(Exception):
        cfg.ppo.clip_coef = 0.3  # type: ignore[misc]
    for section, field in ShoalConfig.model_fields.items():
        assert field.description, section
        for name, f in field.annotation.model_fields.items():
            assert f.description, f"{section}.{name} has no description"


def test_missing_model_path_is_named(tmp_path):
    from services.config import check_paths_for_training

    cfg = load_config(None, [f"model.path={tmp_path}/nope"])
    with pytest.raises(ConfigError, match="^model.path:"):
        check_paths_for_training(cfg)


def test_readme_config_reference_is_current():
    from pathlib import Path

    from deploy.config_reference import with_reference

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert with_reference(readme) == readme, "run: python -m deploy.config_reference --write README.md"
