"""Config: defaults valid, overrides typed, every bad value named by its field path."""

import pytest
from pydantic import ValidationError

from shoal.services.config import ConfigError, ShoalConfig, load_config


def test_defaults_and_demo_config_load():
    from shoal.deploy.cli import default_config_path

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
        ("run.algorithm=dqn", "run.algorithm"),
        ("env.name=no_such_env", "env.name"),
        ("r2d2.start_state=random", "r2d2.start_state"),
        ("r2d2.trace_length=0", "r2d2.trace_length"),
        ("ilql.tau=1.5", "ilql.tau"),
        ("replay.samples_per_insert=-1", "replay.samples_per_insert"),
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
    with pytest.raises(ValidationError, match="frozen"):
        cfg.ppo.clip_coef = 0.3  # type: ignore[misc]
    for section, field in ShoalConfig.model_fields.items():
        assert field.description, section
        for name, f in field.annotation.model_fields.items():
            assert f.description, f"{section}.{name} has no description"


def test_missing_model_path_is_named(tmp_path):
    from shoal.builders import make_builder

    cfg = load_config(None, [f"model.path={tmp_path}/nope"])
    with pytest.raises(ConfigError, match="^model.path:"):
        make_builder(cfg).preflight()


def test_readme_config_reference_is_current():
    from pathlib import Path

    from shoal.deploy.config_reference import with_reference

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert with_reference(readme) == readme, "run: python -m shoal.deploy.config_reference --write README.md"


@pytest.mark.parametrize(
    "overrides, path",
    [
        (["run.algorithm=ilql"], "ilql.dataset"),
        (["run.algorithm=r2d2", "replay.capacity=10"], "replay.min_size_to_sample"),
    ],
)
def test_whole_config_rules_name_the_field(overrides, path):
    with pytest.raises(ConfigError) as e:
        load_config(None, overrides)
    assert str(e.value).startswith(path + ":"), str(e.value)


def test_multiturn_paths_are_checked_before_training(tmp_path):
    from shoal.builders import make_builder

    with pytest.raises(ConfigError, match="^ilql.dataset: .*does not exist"):
        make_builder(load_config(None, ["run.algorithm=ilql", f"ilql.dataset={tmp_path}/none.jsonl"])).preflight()
    with pytest.raises(ConfigError, match="^r2d2.encoder_path: "):
        make_builder(load_config(None, ["run.algorithm=r2d2", f"r2d2.encoder_path={tmp_path}"])).preflight()
    make_builder(load_config(None, ["run.algorithm=r2d2", "model.path=/not/needed/for/r2d2"])).preflight()


def test_shipped_multiturn_configs_load():
    from pathlib import Path

    for name in ("r2d2_cue_recall.yaml", "ilql_random_walks.yaml"):
        cfg = load_config(Path("deploy/configs") / name)
        assert cfg.run.algorithm in ("r2d2", "ilql")


def test_top_k_sampling_is_rejected_for_ppo():
    """B1: top-k log-probs are of a truncated distribution, while the learner's ratio and the
    reference KL use the full softmax (clip_fraction 1.0 on step 1 with identical weights)."""
    with pytest.raises(ConfigError, match=r"^rollout\.top_k: "):
        load_config(None, ["rollout.top_k=5"])
    assert load_config(None, ["run.algorithm=r2d2", "rollout.top_k=5"]).rollout.top_k == 5  # no PPO ratio there


@pytest.mark.parametrize(
    "override, field",
    [
        ("ppo.correction=vtrace", "ppo.correction"),
        ("ppo.objective=trpo", "ppo.objective"),
        ("ppo.is_cap=1.0", "ppo.is_cap"),
        ("ppo.kl_penalty_target=0", "ppo.kl_penalty_target"),
        ("reward.kl_target=-1", "reward.kl_target"),
        ("ppo.ptx_coef=-1", "ppo.ptx_coef"),
        ("ppo.reward_normalization=whiten", "ppo.reward_normalization"),
        ("ppo.lr_schedule=step", "ppo.lr_schedule"),
        ("ppo.lr_min_ratio=1.5", "ppo.lr_min_ratio"),
    ],
)
def test_bad_async_and_ptx_settings_name_the_field(override, field):
    with pytest.raises(ConfigError, match="^" + field.replace(".", r"\.")):
        load_config(None, [override])


def test_ptx_data_file_errors_name_file_and_line(tmp_path, sft_like_model_dir):
    from shoal.builders import make_builder

    base = [f"model.path={sft_like_model_dir}", "reward.reward_model_path=null", "ppo.ptx_coef=1"]
    with pytest.raises(ConfigError, match="^ppo.ptx_data: .*does not exist"):
        make_builder(load_config(None, [*base, f"ppo.ptx_data={tmp_path}/none.jsonl"])).preflight()
    bad = tmp_path / "ptx.jsonl"
    bad.write_text('{"text": "ok"}\n{"txt": "no"}\n')
    with pytest.raises(ConfigError, match=r"ptx\.jsonl:2: expected"):
        make_builder(load_config(None, [*base, f"ppo.ptx_data={bad}"])).preflight()
    bad.write_bytes(b"\xff\xfe not utf-8")
    with pytest.raises(ConfigError, match="not UTF-8"):
        make_builder(load_config(None, [*base, f"ppo.ptx_data={bad}"])).preflight()


@pytest.fixture
def sft_like_model_dir(tmp_path):
    """A directory that passes the model.path check without loading (shoal.model_dirs): a
    config with a model_type, a weights file and a tokenizer file."""
    d = tmp_path / "policy"
    d.mkdir()
    (d / "config.json").write_text('{"model_type": "llama", "max_position_embeddings": 64}')
    (d / "model.safetensors").write_bytes(b"")
    (d / "tokenizer.json").write_text("{}")
    return d


def test_weight_transport_names_and_rdt_with_vllm_on_cpu_are_refused_with_the_field():
    with pytest.raises(ConfigError) as e:
        load_config(None, ["rollout.weight_transport=nccl"])
    assert str(e.value).startswith("rollout.weight_transport:"), str(e.value)
    with pytest.raises(ConfigError) as e:
        load_config(None, ["rollout.weight_transport=rdt", "rollout.engine=vllm"])
    assert str(e.value).startswith("rollout: weight_transport: rdt on CPU (gloo) needs engine: transformers")
    assert load_config(None, ["rollout.weight_transport=rdt"]).rollout.weight_transport == "rdt"
