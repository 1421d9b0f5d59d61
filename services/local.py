"""Everything in one process: any algorithm's components (`shoal.builders`), stepped in order.

Per round: every worker whose request fits the replay's room acts (generates for prompts, or
plays episodes), its output is scored when the algorithm has scorers and goes into the
replay; then the learner steps while the replay serves batches, sends priorities back when
it computes them, runs its diagnostic when due, and publishes weights to the workers every
`rollout.sync_interval` steps. For tests and debugging (`run.mode: local`); deterministic for
a fixed seed; it reports to the same metrics store under the same names as the Ray program,
and is the sequential baseline of the pipeline-overlap benchmark.
"""

from __future__ import annotations

import time
from typing import Any

from tqdm import tqdm

from shoal import PROCESS_STARTED
from shoal.builders import make_builder
from shoal.learner.checkpoint import read_driver_state
from shoal.services.run import (
    Interrupted,
    RunContext,
    build_summary,
    close_run,
    open_run,
    resumed,
    stop_on_signals,
    torch_setup,
    uninterruptible,
    untrainable_reason,
)
from shoal.services.stages import BufferStage, LearnerStage, ScoringStage
from shoal.utils import RunError


class LocalPipeline:
    """One run's components, in this process."""

    def __init__(self, cfg: Any, ctx: RunContext) -> None:
        torch_setup(cfg)
        self.cfg, self.ctx = cfg, ctx
        self.builder = b = make_builder(cfg)
        b.preflight()
        model_dirs = b.prepare_models(str(ctx.run_dir))
        self.workers = [b.make_worker(i, model_dirs, ctx.sink(f"rollout-{i}")) for i in range(cfg.rollout.num_workers)]
        scorers = b.make_scorers()
        self.scoring = ScoringStage(scorers, ctx.sink("reward"), ctx.sink("reward")) if scorers else None
        self.buffer = BufferStage(b.make_replay(), ctx.sink("buffer"))
        self.learner = LearnerStage(
            b.make_learner(model_dirs),
            ctx.sink("learner"),
            cfg.run.checkpoint_interval,
            str(ctx.run_dir),
            cfg.run.keep_checkpoints,
        )
        initial = b.initial_items()
        if initial:
            self.buffer.add(initial)
        self.samples, self.requests = 0, 0
        self.before: dict[str, float] | None = None  # the evaluation at the start (kept across a resume)
        self.first_step_s: float | None = None  # seconds from the command's start to the first learner step
        self.sync()

    def sync(self) -> None:
        weights = self.learner.learner.get_weights()
        for w in self.workers:
            w.load_weights(weights)

    def collect(self) -> bool:
        """One request per worker while the replay has room for it; True if any ran."""
        if not self.builder.collecting():
            return False
        ran, size = False, self.builder.request_size()
        for i, w in enumerate(self.workers):
            room = self.buffer.room()
            if room >= size or (
                self.builder.partial_requests and i == 0 and room > 0
            ):  # never stall a rate-limited learner
                items = w.act(self.builder.new_request())
                self.samples, self.requests = self.samples + len(items), self.requests + 1
                self.buffer.add(self.scoring(items) if self.scoring else items)
                ran = True
        self.check_trainable()
        return ran

    def check_trainable(self) -> None:
        if self.learner.policy_version == 0 and self.scoring is not None:
            added = self.buffer.stats().get("buffer/added", 1.0)
            reason = untrainable_reason(self.requests, added, self.scoring.rejected)
            if reason:
                raise RunError(reason)

    def train_step(self) -> dict[str, float] | None:
        batch = self.buffer.sample(self.builder.batch_size(), self.learner.policy_version)
        if batch is None:
            return None
        m = self.learner.step(batch, self.driver_state() if self.learner.checkpoint_due() else None)
        feedback = self.learner.replay_feedback(batch)
        if feedback is not None:
            self.buffer.buffer.update_priorities(*feedback)
        wanted = self.learner.diagnostic_episodes()
        if wanted:
            m.update(self.learner.diagnose(self.buffer.buffer.recent_episodes(wanted)))
        if self.learner.policy_version % self.cfg.rollout.sync_interval == 0:
            self.sync()
        return m

    # -- checkpoints -------------------------------------------------------------------------
    def driver_state(self) -> dict[str, Any]:
        """Everything besides the learner that a resumed run needs to go on exactly as this one
        would: the data position, the workers' sampling RNGs, the replay, the counters."""
        return {
            "builder": self.builder.state_dict(),
            "workers": [getattr(w, "rng_state", lambda: None)() for w in self.workers],
            "buffer": self.buffer.snapshot(),
            "samples": self.samples,
            "requests": self.requests,
            "before": self.before,
        }

    def restore(self, state: dict[str, Any]) -> list[str]:
        """Load a `driver_state`; returns what could not be restored (said to the user)."""
        lost = []
        self.builder.load_state_dict(state.get("builder") or {})
        for w, rng in zip(self.workers, state.get("workers") or []):
            if hasattr(w, "set_rng_state"):
                w.set_rng_state(rng)
        if state.get("buffer") is not None:
            self.buffer.restore(state["buffer"])
        elif state:
            lost.append("the replay's contents (this replay takes no snapshot)")
        self.samples, self.requests = int(state.get("samples", 0)), int(state.get("requests", 0))
        self.before = state.get("before")
        return lost

    def save(self) -> str | None:
        return self.learner.maybe_checkpoint(force=True, driver_state=self.driver_state())

    def evaluate(self) -> dict[str, float]:
        requests = self.builder.eval_requests(1)
        outputs = [self.workers[0].evaluate(r) for r in requests]
        if self.scoring:
            outputs = [self.scoring(o) for o in outputs]
        return self.builder.summarize_eval(outputs) if outputs else {}

    def counters(self, last: dict[str, float]) -> dict[str, Any]:
        stats = self.buffer.stats()
        rejected = self.scoring.rejected if self.scoring else 0
        dropped = sum(getattr(w, "dropped", 0) for w in self.workers)
        return {
            "learner_steps": self.learner.policy_version,
            self.builder.unit: self.samples,
            **self.builder.counters(stats, rejected, dropped),
            "first_step_s": self.first_step_s,
            **self.builder.final_metrics(last),
        }


def run_local(cfg: Any, progress: bool = True, ctx: RunContext | None = None) -> dict[str, Any]:
    """Run the config's algorithm in this process; returns the summary dict. Ctrl-C or SIGTERM
    saves a checkpoint and raises `Interrupted`; `run.resume_from` (`shoal train --resume`)
    continues exactly where that checkpoint left off."""
    ctx = ctx or open_run(cfg)
    status, summary = "failed", {}
    try:
        pipe = LocalPipeline(cfg, ctx)
        if cfg.run.resume_from:
            lost = pipe.restore(read_driver_state(cfg.run.resume_from))
            resumed(ctx, pipe.learner.policy_version, cfg.run.resume_from, lost)
        if pipe.before is None:
            pipe.before = pipe.evaluate()
        total = cfg.run.total_steps
        bar = tqdm(total=total, initial=pipe.learner.policy_version, desc="learner steps", disable=not progress)
        try:
            with stop_on_signals() as stop:
                last = train_loop(pipe, total, bar, stop)
        except KeyboardInterrupt:
            bar.close()
            status = "interrupted"
            path = uninterruptible(pipe.save)
            summary = {"interrupted_at": pipe.learner.policy_version, "checkpoint": path, **pipe.counters({})}
            raise Interrupted(ctx.run_id, pipe.learner.policy_version, total, path) from None
        finally:
            bar.close()  # an error line starts on a line of its own
        pipe.sync()  # B3: the final weights reach the workers before "after" is evaluated
        pipe.save()
        summary = build_summary(ctx, pipe.before, pipe.evaluate(), pipe.counters(last))
        status = "finished"
        return summary
    finally:
        close_run(ctx, status, summary)


def train_loop(pipe: LocalPipeline, total: int, bar: Any, stop: Any = None) -> dict[str, float]:
    """Train on what the replay serves, then collect; until `total` steps. Training comes
    first so that a resumed run takes the steps an uninterrupted one would take next."""
    last: dict[str, float] = {}
    check = stop.check if stop is not None else (lambda: None)  # Ctrl-C: stop here, between steps
    while pipe.learner.policy_version < total:
        pipe.ctx.tick()
        trained = False
        while pipe.learner.policy_version < total:
            check()
            m = pipe.train_step()
            if m is None:
                break
            last, trained = m, True
            pipe.first_step_s = pipe.first_step_s or round(time.time() - PROCESS_STARTED, 1)
            bar.update(1)
            bar.set_postfix(**pipe.builder.progress_fields(m))
        if pipe.learner.policy_version >= total:
            break
        check()
        if not (pipe.collect() or trained):  # B2: nothing can change any more; say so instead of looping
            raise RunError(
                f"the learner can never get a batch: the replay holds {len(pipe.buffer.buffer)} items, "
                f"fewer than it needs to sample (batch size {pipe.builder.batch_size()}, replay.min_size_to_sample), "
                "and nothing collects more; add data or lower them"
            )
    return last
