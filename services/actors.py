"""Thin Ray actor hosts. Each builds its component with services/builder.py where it lives.

RolloutActor  - a RolloutWorker (vLLM or transformers engine); loads weights from a handle.
EpisodeActor  - an EpisodeWorker (multi-turn env + recurrent-Q or ILQL agent; r2d2 / ilql).
ScorerActor   - a ScoringStage (reward model, rules, reference KL, gold).
BufferActor   - a BufferStage: the FIFO queue (ppo) or the episode replay over prioritized
                sequence replay (r2d2 / ilql), which also takes the learner's priorities.
LearnerActor  - a LearnerStage (PPO, R2D2 or ILQL); pulls batches from the buffer actor
                itself, so batches never pass through the driver; sends R2D2 priorities back
                to it; publishes weights through the transport.
The config travels as JSON and is validated again inside each actor. Multi-turn actors get
the run's model directory (frozen encoder / policy LM) as a file bundle by value
(`services.weights.pack_dir`) and unpack it locally, so they can live on any node.
"""

from __future__ import annotations

import tempfile
import time
from typing import Any

import ray

from services import builder
from services.config import ShoalConfig
from services.metrics import RedisMetrics
from services.prometheus import PrometheusMetrics, TeeMetrics
from services.stages import BufferStage, LearnerStage, ScoringStage
from services.weights import make_transport, unpack_dir

ACTOR_ENV = {
    "RAY_ENABLE_ZERO_COPY_TORCH_TENSORS": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "OMP_NUM_THREADS": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    # zero-copy tensors are read-only views; engines copy them into their own parameters
    "PYTHONWARNINGS": "ignore:The given NumPy array is not writable,ignore:Zero-copy tensor serialization",
}


def _sink(redis_url: str, run_id: str, source: str) -> TeeMetrics:
    """Redis (what the dashboard reads) + Ray gauges (what Prometheus scrapes)."""
    return TeeMetrics(RedisMetrics(redis_url, run_id, source), PrometheusMetrics(run_id, source))


def _setup(cfg_json: str) -> ShoalConfig:
    cfg = ShoalConfig.model_validate_json(cfg_json)
    builder.torch_setup(cfg)
    return cfg


def _model_dirs(bundles: dict[str, dict[str, bytes]] | None) -> dict[str, str]:
    """Unpack {role: pack_dir bundle} into local temporary directories -> {role: path}."""
    return {role: unpack_dir(b, tempfile.mkdtemp(prefix=f"shoal-{role}-")) for role, b in (bundles or {}).items()}


class _WorkerHost:
    """What both rollout actors share: weight loading through the transport, status, and the
    worker record on the dashboard (`metrics.worker_status`)."""

    worker_id: str
    metrics: Any

    def _host(self, cfg: ShoalConfig, worker: Any) -> None:
        self.worker = worker
        self.transport = make_transport(cfg.rollout.weight_transport)
        self.node = ray.get_runtime_context().get_node_id()
        self._report(healthy=True)

    def _report(self, **extra: Any) -> None:
        s = self.worker.status()
        self.metrics.worker_status(self.worker_id, node=self.node, engine=s["engine"], policy_version=s["policy_version"], samples=s["samples"],
                                   tokens_per_s=s["tokens_per_s"], samples_per_s=s["samples_per_s"], **extra)

    def load_weights(self, handle: Any) -> dict[str, float]:
        t0 = time.perf_counter()
        weights = self.transport.fetch(handle)
        fetch_s = time.perf_counter() - t0
        out = self.worker.load_weights(weights)
        out["weights/fetch_s"] = fetch_s
        self._report(healthy=True)
        return out

    def status(self) -> dict[str, Any]:
        return {**self.worker.status(), "node": self.node}


@ray.remote
class RolloutActor(_WorkerHost):
    def __init__(self, cfg_json: str, redis_url: str, run_id: str, index: int) -> None:
        cfg = _setup(cfg_json)
        self.worker_id = f"rollout-{index}"
        self.metrics = _sink(redis_url, run_id, self.worker_id)
        self._host(cfg, builder.make_worker(cfg, index, self.metrics))

    def generate(self, prompts: list) -> list:
        rollouts = self.worker.generate(prompts)
        self._report(healthy=True)
        return rollouts

    def logprobs(self, prompt_ids: list, response_ids: list) -> list:
        return self.worker.logprobs(prompt_ids, response_ids)


@ray.remote
class EpisodeActor(_WorkerHost):
    """Plays episodes of the run's environment with the current weights (r2d2 / ilql)."""

    def __init__(self, cfg_json: str, redis_url: str, run_id: str, index: int, model_bundles: dict[str, dict[str, bytes]]) -> None:
        from services.multiturn import make_episode_worker

        cfg = _setup(cfg_json)
        self.worker_id = f"rollout-{index}"
        self.metrics = _sink(redis_url, run_id, self.worker_id)
        self._host(cfg, make_episode_worker(cfg, index, _model_dirs(model_bundles), self.metrics))

    def run(self, num_episodes: int) -> Any:
        batch = self.worker.run(num_episodes)
        self._report(healthy=True)
        return batch

    def evaluate(self, indices: list) -> dict[str, list[float]]:
        return self.worker.evaluate(indices)


@ray.remote
class ScorerActor:
    def __init__(self, cfg_json: str, redis_url: str, run_id: str, index: int) -> None:
        cfg = _setup(cfg_json)
        sink = _sink(redis_url, run_id, f"reward-{index}")
        self.stage = ScoringStage(builder.make_scorers(cfg), sink, sink)

    def score(self, rollouts: list) -> list:
        return self.stage(rollouts)

    def rejected(self) -> int:
        return self.stage.rejected


@ray.remote
class BufferActor:
    def __init__(self, cfg_json: str, redis_url: str, run_id: str) -> None:
        cfg = _setup(cfg_json)
        if cfg.run.algorithm == "ppo":
            buffer = builder.make_buffer(cfg)
        else:
            from services.multiturn import make_replay

            buffer = make_replay(cfg)
        self.stage = BufferStage(buffer, _sink(redis_url, run_id, "buffer"))

    def add(self, items: list) -> int:
        return self.stage.add(items)

    def add_episodes(self, batch: Any) -> int:
        """An EpisodeBatch from an EpisodeActor (r2d2 / ilql); returns the room in whole episodes."""
        self.stage.add(batch.pairs())
        return self.stage.buffer.episode_room()

    def episode_room(self) -> int:
        return self.stage.buffer.episode_room()

    def update_priorities(self, keys: list, priorities: list) -> int:
        return self.stage.buffer.update_priorities(keys, priorities)

    def recent_episodes(self, n: int) -> list:
        return self.stage.buffer.recent_episodes(n)

    def free(self) -> int:
        return self.stage.free()

    def sample(self, batch_size: int, learner_version: int) -> Any:
        return self.stage.sample(batch_size, learner_version)

    def stats(self) -> dict[str, float]:
        return self.stage.stats()


@ray.remote
class LearnerActor:
    def __init__(self, cfg_json: str, redis_url: str, run_id: str, run_dir: str, model_bundles: dict[str, dict[str, bytes]] | None = None) -> None:
        from services import multiturn

        self.cfg = _setup(cfg_json)
        sink = _sink(redis_url, run_id, "learner")
        if self.cfg.run.algorithm == "ppo":
            learner = builder.make_learner(self.cfg)
        else:
            learner = multiturn.make_learner(self.cfg, _model_dirs(model_bundles))
        self.batch_size = multiturn.learner_batch_size(self.cfg)
        self.stage = LearnerStage(learner, sink, self.cfg.run.checkpoint_interval, run_dir)
        self.transport = make_transport(self.cfg.rollout.weight_transport)

    def policy_version(self) -> int:
        return self.stage.policy_version

    def train_step(self, buffer: Any) -> dict[str, float]:
        """Wait for a batch from the buffer actor, then take one learner step."""
        t0 = time.perf_counter()
        while True:
            batch = ray.get(buffer.sample.remote(self.batch_size, self.stage.policy_version))
            if batch is not None:
                break
            time.sleep(0.02)
        wait_s = time.perf_counter() - t0
        m = self.stage.step(batch)
        m["learner/wait_batch_s"] = wait_s
        feedback = self.stage.replay_feedback(batch)
        if feedback is not None:  # ordered before this learner's next sample call
            buffer.update_priorities.remote(*feedback)
        r = self.cfg.r2d2
        if self.cfg.run.algorithm == "r2d2" and r.dq_interval and self.stage.policy_version % r.dq_interval == 0:
            m.update(self.stage.diagnose(ray.get(buffer.recent_episodes.remote(r.dq_episodes)), r.sequence_period))
        return m

    def publish_weights(self) -> Any:
        """One publish per sync; returns the transport's handle (a list holding an ObjectRef)."""
        return self.transport.publish(self.stage.learner.get_weights())

    def checkpoint(self, force: bool = True) -> str | None:
        return self.stage.maybe_checkpoint(force=force)

    def logprobs(self, prompt_ids: list, response_ids: list) -> list:
        return self.stage.learner.logprobs(prompt_ids, response_ids)
