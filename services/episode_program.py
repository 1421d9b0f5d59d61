"""The Ray program for multi-turn RL (`run.algorithm: r2d2 | ilql`), on the PPO program's loop.

Same single controller as `services/program.py` (it moves refs, never data), other actors:

    EpisodeActor.run(n) -> BufferActor.add_episodes        (per worker, in flight; the replay
                                                            cuts R2D2 items with their stored
                                                            recurrent state)
    LearnerActor.train_step(buffer)   samples the replay, steps, sends R2D2 priorities back to
                                      the replay (and every r2d2.dq_interval steps reports dQ)
    every sync_interval steps: publish_weights -> every EpisodeActor.load_weights(handle)

The run's model directory (frozen turn encoder for r2d2, policy LM for ilql) is built or
read once here and shipped to every actor by value (`services.weights.pack_dir`).
Offline ILQL (`ilql.dataset`): the data set goes into the replay before the loop and the
workers only evaluate, unless `ilql.online` also has them play and feed the replay.
Rewards come from the environment (no scorer actors). Before and after training, the
workers play `env.eval_episodes` greedy episodes on held-out seeds (split across workers);
the summary reports success rate, mean return and, with a data set, the LMRL-Gym score.
"""

from __future__ import annotations

from typing import Any

import ray

from services import multiturn
from services.actors import BufferActor, EpisodeActor, LearnerActor
from services.config import ShoalConfig
from services.program import ActorLearnerProgram
from services.run import RunContext
from services.weights import pack_dir


class EpisodeProgram(ActorLearnerProgram):
    """See the module docstring."""

    def __init__(self, cfg: ShoalConfig, ctx: RunContext) -> None:
        super().__init__(cfg, ctx)
        multiturn.preflight(cfg)
        self.dataset = multiturn.load_dataset(cfg)
        if self.dataset:
            multiturn.check_dataset_fits(cfg, len(self.dataset))
        self.anchors = multiturn.dataset_anchors_of(self.dataset)
        self.model_dirs = multiturn.prepare_models(cfg, ctx.run_dir)
        self.bundle = ray.put({role: pack_dir(d) for role, d in self.model_dirs.items()})  # held: restarted actors unpack it again
        cj, url, rid = cfg.model_dump_json(), ctx.redis_url, ctx.run_id
        self.workers = [EpisodeActor.options(**self.worker_options()).remote(cj, url, rid, i, self.bundle) for i in range(cfg.rollout.num_workers)]
        self.buffer = BufferActor.options(num_cpus=0, **self.env_opts).remote(cj, url, rid)
        self.learner = LearnerActor.options(**self.learner_options()).remote(cj, url, rid, str(ctx.run_dir), self.bundle)
        self.collecting = cfg.run.algorithm == "r2d2" or cfg.ilql.online
        self.request_cost = cfg.env.episodes_per_request  # room is counted in whole episodes
        self.partial_requests = True  # the replay queues what its rate limiter refuses: never stall the learner
        if self.dataset:
            ray.get(self.buffer.add.remote([(ep, None) for ep in self.dataset]))
            print(f"[shoal] replay holds the data set: {len(self.dataset)} episodes from {cfg.ilql.dataset}", flush=True)
        self.start()

    def new_payload(self) -> int:
        return self.cfg.env.episodes_per_request

    def payload_size(self, payload: int) -> int:
        return int(payload)

    def request(self, i: int, num_episodes: int) -> Any:
        return self.buffer.add_episodes.remote(self.workers[i].run.remote(num_episodes))

    def room(self) -> int:
        return ray.get(self.buffer.episode_room.remote())

    def refill(self, free: int) -> None:
        if self.collecting:
            super().refill(free)

    def progress_fields(self, m: dict[str, float]) -> dict[str, str]:
        loss = m.get("learner/q_loss", m.get("learner/ilql_loss", float("nan")))
        return {"loss": f"{loss:.3f}"}

    def evaluate(self) -> dict[str, float]:
        from rollout.episode_worker import summarize_eval

        n, k = self.cfg.env.eval_episodes, len(self.workers)
        if n == 0:
            return {}
        parts = ray.get([w.evaluate.remote(list(range(i, n, k))) for i, w in enumerate(self.workers)])
        return multiturn.with_lmrl_score(summarize_eval(parts), self.anchors)

    def final_metrics(self, last: dict[str, float]) -> dict[str, Any]:
        return multiturn.final_metrics(last)

    def counters(self) -> dict[str, Any]:
        stats = ray.get(self.buffer.stats.remote())
        status = ray.get([w.status.remote() for w in self.workers])
        return {
            "learner_steps": self.version,
            "episodes": self.samples,
            "dropped_episodes": sum(s["dropped_episodes"] for s in status),
            "replay_inserts": stats.get("buffer/inserts", 0.0),
            "replay_evicted": stats.get("buffer/evicted", 0.0),
            "dropped_stale": stats.get("buffer/dropped_stale", 0.0),
            "worker_restarts": self.restarts,
        }


__all__ = ["EpisodeProgram"]
