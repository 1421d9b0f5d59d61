"""Everything in one process: the same components as the Ray program, stepped in order.

generate -> score -> buffer -> learner step -> (every sync_interval) publish + load weights.
For tests and debugging (`run.mode: local`); it reports to the same metrics store under the
same names as the Ray program. It is strictly sequential, which also makes it the baseline
of the pipeline-overlap benchmark.
"""

from __future__ import annotations

from typing import Any

from tqdm import tqdm

from services import builder
from services.config import ShoalConfig
from services.run import RunContext, build_summary, close_run, evaluate, open_run
from services.stages import BufferStage, LearnerStage, ScoringStage
from services.weights import InProcessTransport


class LocalPipeline:
    """The PPO components of one run, in this process."""

    def __init__(self, cfg: ShoalConfig, ctx: RunContext) -> None:
        builder.torch_setup(cfg)
        self.cfg, self.ctx = cfg, ctx
        self.workers = [builder.make_worker(cfg, i, ctx.sink(f"rollout-{i}")) for i in range(cfg.rollout.num_workers)]
        self.scoring = ScoringStage(builder.make_scorers(cfg), ctx.sink("reward"), ctx.sink("reward"))
        self.buffer = BufferStage(builder.make_buffer(cfg), ctx.sink("buffer"))
        self.learner = LearnerStage(builder.make_learner(cfg), ctx.sink("learner"), cfg.run.checkpoint_interval, str(ctx.run_dir))
        tokenizer = builder.make_tokenizer(cfg)
        self.prompts = builder.make_prompt_source(cfg, tokenizer, "train")
        self.eval_prompts = builder.make_prompt_source(cfg, tokenizer, "eval").next_batch(cfg.run.eval_prompts)
        self.transport = InProcessTransport()
        self.samples = 0
        self._sync()

    def evaluate(self) -> dict[str, float]:
        if not self.eval_prompts:
            return {}
        return evaluate(self.workers[0].generate, self.scoring, self.eval_prompts)

    def _sync(self) -> None:
        handle = self.transport.publish(self.learner.learner.get_weights())
        for w in self.workers:
            w.load_weights(self.transport.fetch(handle))

    def collect(self, worker_index: int) -> None:
        worker = self.workers[worker_index % len(self.workers)]
        rollouts = worker.generate(self.prompts.next_batch(self.cfg.rollout.prompts_per_request))
        self.samples += len(rollouts)
        self.buffer.add(self.scoring(rollouts))

    def train_step(self) -> dict[str, float] | None:
        batch = self.buffer.sample(self.cfg.ppo.batch_size, self.learner.policy_version)
        if batch is None:
            return None
        m = self.learner.step(batch)
        if self.learner.policy_version % self.cfg.rollout.sync_interval == 0:
            self._sync()
        return m


def run_local(cfg: ShoalConfig, progress: bool = True, ctx: RunContext | None = None) -> dict[str, Any]:
    """Run the config's algorithm in this process; returns the summary dict."""
    if cfg.run.algorithm != "ppo":
        from services.episode_local import run_episodes_local

        return run_episodes_local(cfg, progress, ctx)
    ctx = ctx or open_run(cfg)
    status, summary = "failed", {}
    try:
        pipe = LocalPipeline(cfg, ctx)
        before = pipe.evaluate()
        bar = tqdm(total=cfg.run.total_steps, desc="learner steps", disable=not progress)
        i, last = 0, {}
        while pipe.learner.policy_version < cfg.run.total_steps:
            pipe.collect(i)
            i += 1
            m = pipe.train_step()
            if m is not None:
                last = m
                bar.update(1)
                bar.set_postfix(reward=f"{m.get('reward/mean', float('nan')):.3f}", kl=f"{m.get('learner/kl_ref', 0):.3f}")
        bar.close()
        pipe.learner.maybe_checkpoint(force=True)
        counters = {
            "learner_steps": pipe.learner.policy_version,
            "samples": pipe.samples,
            "dropped_stale": pipe.buffer.stats().get("buffer/dropped_stale", 0.0),
            "rejected_nonfinite": pipe.scoring.rejected,
            "final_reward_mean": last.get("reward/mean"),
        }
        summary = build_summary(ctx, before, pipe.evaluate(), counters)
        status = "finished"
        return summary
    finally:
        close_run(ctx, status, summary)
