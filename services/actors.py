"""Thin Ray actor hosts for any algorithm: each builds its component where it lives, with the
run's builder (`shoal.builders.make_builder`), from the config sent as JSON (validated again
inside the actor).

WorkerActor   - the builder's worker: a RolloutWorker (vLLM or transformers engine) or an
                EpisodeWorker (multi-turn env + the algorithm's acting agent); `act(payload)`
                returns what goes to the scorers or the replay; loads weights from a handle.
ScorerActor   - a ScoringStage (reward model, rules, reference KL, gold).
BufferActor   - a BufferStage over the builder's replay (FIFO queue, or the episode replay over
                prioritized sequence replay, which also takes the learner's priorities).
LearnerActor  - a LearnerStage; pulls batches from the buffer actor itself, so batches never
                pass through the driver; sends priorities back to it; publishes weights
                through the transport.
Actors that need model directories (a frozen encoder, a built tiny LM) get them as file
bundles by value (`services.weights.pack_dir`) and unpack them locally, so they can live on
any node.
"""

from __future__ import annotations

import os
import time
from typing import Any

import ray

from shoal.buffer.snapshots import SnapshotClock, read_snapshot, snapshot_path, write_snapshot
from shoal.builders import make_builder
from shoal.services.calls import get_within
from shoal.services.config import ShoalConfig
from shoal.services.direct import uses_gpus
from shoal.services.metrics import RedisMetrics
from shoal.services.prometheus import PrometheusMetrics, TeeMetrics
from shoal.services.run import torch_setup
from shoal.services.stages import BufferStage, LearnerStage, ScoringStage
from shoal.services.weights import make_transport, unpack_cached
from shoal.types import VersionedWeights
from shoal.utils import RunError

ACTOR_ENV = {
    "RAY_ENABLE_ZERO_COPY_TORCH_TENSORS": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "OMP_NUM_THREADS": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    # zero-copy tensors are read-only views; engines copy them into their own parameters
    "PYTHONWARNINGS": "ignore:The given NumPy array is not writable,ignore:Zero-copy tensor serialization",
}


class _Timed:
    """Every actor records when its constructor finished (the summary's start-up timings)."""

    ready_at: float = 0.0

    def _ready(self) -> None:
        self.ready_at = time.time()

    def ready_time(self) -> float:
        return self.ready_at

    def ping(self) -> str:
        """The driver's health probe (`services.pools.ActorPool.recover`)."""
        return "pong"

    def pid(self) -> int:
        return os.getpid()

    def node_ip(self) -> str:
        """The node this actor runs on (named in the driver's timeout messages)."""
        return ray.util.get_node_ip_address()

    def node_id(self) -> str:
        """The Ray node id this actor runs on (the elastic pool notices nodes that leave)."""
        return ray.get_runtime_context().get_node_id()


class Pacer:
    """rollout.max_samples_per_s_per_worker: sleeps so that a worker's samples per second stay
    at most `rate` (0: never sleeps) - a slower engine, for scaling measurements on few cores.
    A batch of n samples may end no sooner than n / rate after the previous one ended."""

    def __init__(self, rate: float) -> None:
        self.rate, self.last_end = rate, None

    def __call__(self, samples: int) -> float:
        """Account for `samples` just made; returns the seconds slept."""
        if self.rate <= 0 or samples <= 0:
            return 0.0
        now = time.monotonic()
        due = now if self.last_end is None else self.last_end + samples / self.rate
        wait = max(0.0, due - now)
        time.sleep(wait)
        self.last_end = max(now, due)
        return wait


def _sink(redis_url: str, run_id: str, source: str) -> TeeMetrics:
    """Redis (what the dashboard reads) + Ray gauges (what Prometheus scrapes)."""
    return TeeMetrics(RedisMetrics(redis_url, run_id, source), PrometheusMetrics(run_id, source))


def _setup(cfg_json: str, torch: bool = True) -> Any:
    cfg = ShoalConfig.model_validate_json(cfg_json)
    if torch:
        torch_setup(cfg)
    return cfg


def _scoring(builder: Any, redis_url: str, run_id: str, index: int) -> ScoringStage:
    """The builder's scorers as a stage reporting as `reward-<index>` (a ScorerActor's, or a
    WorkerActor's with reward.placement `workers`)."""
    sink = _sink(redis_url, run_id, f"reward-{index}")
    return ScoringStage(builder.make_scorers(), sink, sink)


def _model_dirs(bundles: dict[str, dict[str, bytes]] | None) -> dict[str, str]:
    """Unpack {role: pack_dir bundle} into the node's model cache -> {role: path} (one copy per
    node and content, whatever the number of actors and restarts: `unpack_cached`)."""
    return {role: unpack_cached(b, role) for role, b in (bundles or {}).items()}


class WorkerActor(_Timed):
    """The builder's worker, with weight loading through the transport and its record on the
    dashboard (`metrics.worker_status`)."""

    def __init__(
        self,
        cfg_json: str,
        redis_url: str,
        run_id: str,
        index: int,
        model_bundles: dict[str, dict[str, bytes]] | None = None,
        score: bool = False,
    ) -> None:
        cfg = _setup(cfg_json)
        self.worker_id = f"rollout-{index}"
        self.metrics = _sink(redis_url, run_id, self.worker_id)
        builder = make_builder(cfg)
        self.worker = builder.make_worker(index, _model_dirs(model_bundles), self.metrics)
        # reward.placement `workers`: score here, not in a ScorerActor
        self.scoring = _scoring(builder, redis_url, run_id, index) if score else None
        self.transport = make_transport(cfg.rollout.weight_transport)
        self.node = ray.get_runtime_context().get_node_id()
        self.pace = Pacer(cfg.rollout.max_samples_per_s_per_worker)
        self._report(healthy=True)
        self._ready()

    def _report(self, **extra: Any) -> None:
        s = self.worker.status()
        self.metrics.worker_status(
            self.worker_id,
            node=self.node,
            engine=s["engine"],
            policy_version=s["policy_version"],
            samples=s["samples"],
            tokens_per_s=s["tokens_per_s"],
            samples_per_s=s["samples_per_s"],
            **extra,
        )

    def act(self, payload: Any) -> Any:
        out = self.worker.act(payload)
        self.pace(len(out))
        self._report(healthy=True)
        return self.scoring(out) if self.scoring is not None else out

    def evaluate(self, payload: Any) -> Any:
        out = self.worker.evaluate(payload)
        return self.scoring(out) if self.scoring is not None else out

    def rejected(self) -> int:
        """Rollouts its scorers rejected (non-finite scores), when it scores them."""
        return self.scoring.rejected if self.scoring is not None else 0

    def load_weights(self, handle: Any) -> dict[str, float]:
        t0 = time.perf_counter()
        weights = self.transport.fetch(handle)
        fetch_s = time.perf_counter() - t0
        out = self.worker.load_weights(weights)
        out["weights/fetch_s"] = fetch_s
        self._report(healthy=True)
        return out

    def load_weights_direct(self, weights: VersionedWeights) -> dict[str, float]:
        """rollout.weight_transport `rdt`: the learner's weights, moved here by Ray Direct
        Transport over the collective group before this call runs (`services.direct`)."""
        out = self.worker.load_weights(weights)
        self._report(healthy=True)
        return out

    def logprobs(self, prompt_ids: list, response_ids: list) -> list:
        return self.worker.logprobs(prompt_ids, response_ids)

    def status(self) -> dict[str, Any]:
        return {**self.worker.status(), "node": self.node}


@ray.remote
class ScorerActor(_Timed):
    def __init__(self, cfg_json: str, redis_url: str, run_id: str, index: int) -> None:
        self.stage = _scoring(make_builder(_setup(cfg_json)), redis_url, run_id, index)
        self._ready()

    def score(self, rollouts: list) -> list:
        return self.stage(rollouts)

    def rejected(self) -> int:
        return self.stage.rejected


@ray.remote
class BufferActor(_Timed):
    """The builder's replay as a BufferStage. With a run directory it writes a replay snapshot
    (`buffer.snapshots`) before an insert at most every run.replay_snapshot_interval_s, and
    when Ray restarts it after a crash it comes back from the newest one (the data set loaded
    again first, for replays whose snapshot holds only a position in it). `offered` counts the
    items the inserts brought (rollouts or episodes), carried in the snapshot: the driver sets
    what it saw acknowledged against it to count what a crash lost (`RayProgram.replay_lost`)."""

    def __init__(self, cfg_json: str, redis_url: str, run_id: str, run_dir: str | None = None) -> None:
        cfg = _setup(cfg_json, torch=False)  # replay holds lists and arrays: no torch to import
        builder = make_builder(cfg)
        self.stage = BufferStage(builder.make_replay(), _sink(redis_url, run_id, "buffer"))
        self.run_dir, self.offered = run_dir, 0
        self.clock = SnapshotClock(cfg.run.replay_snapshot_interval_s if run_dir else 0.0)
        self.came_back: dict[str, Any] | None = None
        if run_dir is not None and ray.get_runtime_context().was_current_actor_reconstructed:
            self.came_back = self._come_back(builder)
        elif run_dir is not None:
            snapshot_path(run_dir).unlink(missing_ok=True)  # an earlier process's (a resumed run)
        self._ready()

    def _come_back(self, builder: Any) -> dict[str, Any]:
        """Restarted by Ray: the data set, then the newest snapshot over it."""
        initial = builder.initial_items()
        if initial:
            self.stage.add(initial)
        snap = read_snapshot(self.run_dir)
        if snap is None:
            return {"snapshot": None, "offered": 0, "age_s": None, "size": len(self.stage.buffer)}
        self.stage.restore(snap["replay"])
        self.offered = int(snap["offered"])
        age = time.time() - float(snap["time"])
        return {
            "snapshot": str(snapshot_path(self.run_dir)),
            "offered": self.offered,
            "age_s": age,
            "size": len(self.stage.buffer),
        }

    def came_back_from(self) -> dict[str, Any] | None:
        """What this incarnation restored ({snapshot, offered, age_s, size}); None: it started fresh."""
        return self.came_back

    def add(self, items: list) -> tuple[int, int, float]:
        """Insert (after a snapshot when one is due). Returns (room left in units of a request,
        items offered so far, this incarnation's start time): what the driver counts with."""
        if self.clock.due():
            self.clock.mark()
            snap = self.stage.snapshot()
            if snap is not None:
                write_snapshot(self.run_dir, snap, offered=self.offered)
                self.clock.took(time.monotonic() - self.clock.last)
        self.offered += len(items)
        return self.stage.add(items), self.offered, self.ready_at

    def preload(self, items: list) -> int:
        """The run's data set (not counted as offered: the driver loads it, not the workers)."""
        return self.stage.add(items)

    def room(self) -> int:
        return self.stage.room()

    def update_priorities(self, keys: list, priorities: list) -> int:
        return self.stage.buffer.update_priorities(keys, priorities)

    def recent_episodes(self, n: int) -> list:
        return self.stage.buffer.recent_episodes(n)

    def sample(self, batch_size: int, learner_version: int) -> Any:
        return self.stage.sample(batch_size, learner_version)

    def size(self) -> int:
        return len(self.stage.buffer)

    def snapshot(self) -> dict | None:
        """The replay's contents as JSON-safe data (None when this replay takes none)."""
        return self.stage.snapshot()

    def restore(self, snap: dict) -> None:
        """A checkpoint's snapshot (a resumed run); written at once as this run's newest."""
        self.stage.restore(snap)
        if self.run_dir is not None and self.clock.interval_s > 0:
            self.clock.mark()
            write_snapshot(self.run_dir, snap, offered=self.offered)

    def stats(self) -> dict[str, float]:
        """The replay's counters, and the seconds its last snapshot took (`buffer/snapshot_s`)."""
        return {**self.stage.stats(), "buffer/snapshot_s": self.clock.cost_s}


class LearnerActor(_Timed):
    def __init__(
        self,
        cfg_json: str,
        redis_url: str,
        run_id: str,
        run_dir: str,
        model_bundles: dict[str, dict[str, bytes]] | None = None,
        replacing: bool = False,
    ) -> None:
        self.cfg = _setup(cfg_json)
        # Restarted by Ray after a crash, or started by the driver in place of a learner Ray
        # killed for good (`replacing`): go on from the run's newest checkpoint, not the start.
        from shoal.learner.checkpoint import latest_checkpoint  # torch: not at the top (the buffer imports this module)

        again = replacing or ray.get_runtime_context().was_current_actor_reconstructed
        self.restored_from = latest_checkpoint(run_dir) if again else None
        if self.restored_from is not None:
            self.cfg = self.cfg.model_copy(
                update={"run": self.cfg.run.model_copy(update={"resume_from": str(self.restored_from)})}
            )
        builder = make_builder(self.cfg)
        learner = builder.make_learner(_model_dirs(model_bundles))
        self.batch_size = builder.batch_size()
        run = self.cfg.run
        self.stage = LearnerStage(
            learner, _sink(redis_url, run_id, "learner"), run.checkpoint_interval, run_dir, run.keep_checkpoints
        )
        self.transport = make_transport(self.cfg.rollout.weight_transport)
        direct_gpus = self.cfg.rollout.weight_transport == "rdt" and uses_gpus(self.cfg)
        self.direct_device = "cuda" if direct_gpus else None
        self._ready()

    def policy_version(self) -> int:
        return self.stage.policy_version

    def restored(self) -> str | None:
        """The checkpoint this (restarted) learner resumed from; None: it started fresh."""
        return str(self.restored_from) if self.restored_from is not None else None

    def train_step(self, buffer: Any, collecting: bool = True, driver_state: dict | None = None) -> dict[str, float]:
        """Wait for a batch from the buffer actor, then take one learner step. With nothing
        collecting (an offline data set only), a replay that cannot serve a batch never will:
        RunError at once instead of polling forever (B2). `driver_state` comes with the step
        that ends with a periodic checkpoint; the replay's snapshot (taken after this batch
        left it) is saved with it."""
        t0 = time.perf_counter()
        while (batch := self._ask(buffer.sample.remote(self.batch_size, self.stage.policy_version), "sample")) is None:
            if not collecting:
                size = self._ask(buffer.size.remote(), "size")
                raise RunError(
                    f"the learner can never get a batch: the replay holds {size} items and nothing collects more "
                    f"(batch size {self.batch_size}, replay.min_size_to_sample)"
                )
            time.sleep(0.02)
        wait_s = time.perf_counter() - t0
        if driver_state is not None:
            driver_state = {**driver_state, "buffer": self._ask(buffer.snapshot.remote(), "snapshot")}
        m = self.stage.step(batch, driver_state)
        m["learner/wait_batch_s"] = wait_s
        feedback = self.stage.replay_feedback(batch)
        if feedback is not None:  # ordered before this learner's next sample call
            buffer.update_priorities.remote(*feedback)
        wanted = self.stage.diagnostic_episodes()
        if wanted:
            m.update(self.stage.diagnose(self._ask(buffer.recent_episodes.remote(wanted), "recent_episodes")))
        return m

    def _ask(self, ref: Any, what: str) -> Any:
        """The replay buffer's answer to the learner, within run.actor_timeout_s."""
        return get_within(ref, "the replay buffer", f"`{what}` from the learner", self.cfg.run.actor_timeout_s)

    def publish_weights(self) -> Any:
        """One publish per sync; returns the transport's handle (a list holding an ObjectRef)."""
        return self.transport.publish(self.stage.learner.get_weights())

    def weights_direct(self) -> VersionedWeights:
        """rollout.weight_transport `rdt`: called with `.options(tensor_transport="gloo" | "nccl")`,
        so the tensors stay here until each worker's `load_weights_direct` receives them over
        the collective group (Ray Direct Transport; `services.direct`). nccl sends GPU tensors
        only: then the snapshot goes to this actor's GPU first."""
        weights = self.stage.learner.get_weights()
        if self.direct_device is not None:
            weights = VersionedWeights(
                weights.version, {k: v.to(self.direct_device) for k, v in weights.tensors.items()}
            )
        return weights

    def checkpoint(self, force: bool = True, driver_state: dict | None = None) -> str | None:
        return self.stage.maybe_checkpoint(force=force, driver_state=driver_state)

    def logprobs(self, prompt_ids: list, response_ids: list) -> list:
        return self.stage.learner.logprobs(prompt_ids, response_ids)


# The actor classes. The Ray Direct Transport variants (rollout.weight_transport `rdt`) are the
# same classes with Ray's tensor transport enabled, which makes Ray run every call of theirs on
# a background thread: only runs that ask for it get them.
WorkerHost, LearnerHost = WorkerActor, LearnerActor
WorkerActor = ray.remote(WorkerHost)
LearnerActor = ray.remote(LearnerHost)
DirectWorkerActor = ray.remote(enable_tensor_transport=True)(WorkerHost)
DirectLearnerActor = ray.remote(enable_tensor_transport=True)(LearnerHost)
