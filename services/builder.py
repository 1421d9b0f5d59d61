"""Per-algorithm assembly, shared by the in-process runner and the Ray program.

Every component is built by one function here from the run config, so `services/local.py`
(one process) and `services/actors.py` (Ray actors, each building its own component where it
lives) construct exactly the same objects. Heavy imports happen inside the functions.
"""

from __future__ import annotations

from typing import Any

from services.config import ShoalConfig
from services.core import MetricsSink


def torch_setup(cfg: ShoalConfig) -> None:
    import torch

    torch.set_num_threads(cfg.run.torch_threads)


def make_task(cfg: ShoalConfig) -> Any:
    from rollout.tasks import task_from_config

    return task_from_config(cfg.task)


def make_tokenizer(cfg: ShoalConfig) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(cfg.model.path)


def make_prompt_source(cfg: ShoalConfig, tokenizer: Any, stream: str = "train") -> Any:
    """Seeded prompts; `eval` uses a disjoint seed stream from `train`."""
    from rollout.tasks import TaskPromptSource

    seed = cfg.run.seed * 1000 + (0 if stream == "train" else 7)
    return TaskPromptSource(make_task(cfg), tokenizer, seed, prefix=stream[0])


def make_worker(cfg: ShoalConfig, index: int, metrics: MetricsSink | None = None) -> Any:
    from rollout.engines import make_engine
    from rollout.worker import RolloutWorker

    worker_id = f"rollout-{index}"
    engine = make_engine(cfg.rollout.engine, cfg.model.path, cfg.rollout, cfg.run.seed + 101 * index, worker_id)
    return RolloutWorker(engine, worker_id, metrics)


def make_scorers(cfg: ShoalConfig) -> list[Any]:
    from reward.scorers import build_scorers

    return build_scorers(cfg, make_task(cfg))


def make_buffer(cfg: ShoalConfig) -> Any:
    from buffer.fifo import FIFOQueue

    return FIFOQueue(cfg.buffer.capacity, cfg.rollout.max_policy_lag)


def learner_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def make_learner(cfg: ShoalConfig, metrics: MetricsSink | None = None) -> Any:
    from learner.ppo import PPOLearner

    learner = PPOLearner(
        cfg.model.path,
        cfg.ppo,
        cfg.reward,
        temperature=cfg.rollout.temperature,
        seed=cfg.run.seed,
        device=learner_device(),
        metrics=metrics,
    )
    if cfg.run.resume_from:
        learner.restore(cfg.run.resume_from)
    return learner
