"""Multi-turn RL (`run.algorithm: r2d2 | ilql`) in one process: the Ray program's components
(`services/multiturn.py`), stepped in order.

Per round: each worker plays `env.episodes_per_request` episodes when the replay has room,
then the learner steps while the replay serves batches (its rate limiter decides how many),
sending R2D2 priorities back and syncing weights every `rollout.sync_interval` steps.
Offline ILQL skips the playing. Same metrics store and names as the Ray program; for tests
and debugging (`run.mode: local`), and deterministic for a fixed seed.
"""

from __future__ import annotations

from typing import Any

from tqdm import tqdm

from services import multiturn
from services.config import ShoalConfig
from services.run import RunContext, build_summary, close_run, open_run
from services.stages import BufferStage, LearnerStage


class EpisodePipeline:
    def __init__(self, cfg: ShoalConfig, ctx: RunContext) -> None:
        from services import builder

        builder.torch_setup(cfg)
        self.cfg, self.ctx = cfg, ctx
        multiturn.preflight(cfg)
        self.dataset = multiturn.load_dataset(cfg)
        if self.dataset:
            multiturn.check_dataset_fits(cfg, len(self.dataset))
        self.anchors = multiturn.dataset_anchors_of(self.dataset)
        model_dirs = multiturn.prepare_models(cfg, ctx.run_dir)
        self.workers = [multiturn.make_episode_worker(cfg, i, model_dirs, ctx.sink(f"rollout-{i}")) for i in range(cfg.rollout.num_workers)]
        self.buffer = BufferStage(multiturn.make_replay(cfg), ctx.sink("buffer"))
        self.learner = LearnerStage(multiturn.make_learner(cfg, model_dirs), ctx.sink("learner"), cfg.run.checkpoint_interval, str(ctx.run_dir))
        self.batch_size = multiturn.learner_batch_size(cfg)
        self.collecting = cfg.run.algorithm == "r2d2" or cfg.ilql.online
        if self.dataset:
            self.buffer.add([(ep, None) for ep in self.dataset])
        self.episodes = 0
        self.sync()

    def sync(self) -> None:
        weights = self.learner.learner.get_weights()
        for w in self.workers:
            w.load_weights(weights)

    def collect(self) -> None:
        if not self.collecting:
            return
        for i, w in enumerate(self.workers):
            room = self.buffer.buffer.episode_room()
            if room >= self.cfg.env.episodes_per_request or (i == 0 and room > 0):  # never stall a rate-limited learner
                batch = w.run(self.cfg.env.episodes_per_request)
                self.episodes += len(batch.episodes)
                self.buffer.add(batch.pairs())

    def train_step(self) -> dict[str, float] | None:
        batch = self.buffer.sample(self.batch_size, self.learner.policy_version)
        if batch is None:
            return None
        m = self.learner.step(batch)
        feedback = self.learner.replay_feedback(batch)
        if feedback is not None:
            self.buffer.buffer.update_priorities(*feedback)
        r = self.cfg.r2d2
        if self.cfg.run.algorithm == "r2d2" and r.dq_interval and self.learner.policy_version % r.dq_interval == 0:
            m.update(self.learner.diagnose(self.buffer.buffer.recent_episodes(r.dq_episodes), r.sequence_period))
        if self.learner.policy_version % self.cfg.rollout.sync_interval == 0:
            self.sync()
        return m

    def evaluate(self) -> dict[str, float]:
        from rollout.episode_worker import summarize_eval

        n = self.cfg.env.eval_episodes
        return multiturn.with_lmrl_score(summarize_eval([self.workers[0].evaluate(range(n))]), self.anchors) if n else {}


def run_episodes_local(cfg: ShoalConfig, progress: bool = True, ctx: RunContext | None = None) -> dict[str, Any]:
    """Run r2d2 / ilql in this process; returns the summary dict."""
    ctx = ctx or open_run(cfg)
    status, summary = "failed", {}
    try:
        pipe = EpisodePipeline(cfg, ctx)
        before = pipe.evaluate()
        bar = tqdm(total=cfg.run.total_steps, desc="learner steps", disable=not progress)
        last: dict[str, float] = {}
        while pipe.learner.policy_version < cfg.run.total_steps:
            pipe.collect()
            while pipe.learner.policy_version < cfg.run.total_steps and (m := pipe.train_step()) is not None:
                last = m
                bar.update(1)
                bar.set_postfix(loss=f"{m.get('learner/q_loss', m.get('learner/ilql_loss', float('nan'))):.3f}")
            if not pipe.collecting and not last:
                raise RuntimeError("the replay never served a batch: the data set is smaller than replay.min_size_to_sample / the batch size")
        bar.close()
        pipe.sync()
        pipe.learner.maybe_checkpoint(force=True)
        stats = pipe.buffer.stats()
        counters = {
            "learner_steps": pipe.learner.policy_version,
            "episodes": pipe.episodes,
            "dropped_episodes": sum(w.dropped for w in pipe.workers),
            "replay_inserts": stats.get("buffer/inserts", 0.0),
            "replay_evicted": stats.get("buffer/evicted", 0.0),
            **multiturn.final_metrics(last),
        }
        summary = build_summary(ctx, before, pipe.evaluate(), counters)
        status = "finished"
        return summary
    finally:
        close_run(ctx, status, summary)
