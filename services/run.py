"""What every run does around its loop: identity, run directory, metrics store, dashboard,
evaluation, and the summary table. Shared by `services/local.py` and `services/program.py`.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shoal.services.config import ShoalConfig, dump_config, public_config


@dataclass
class RunContext:
    cfg: ShoalConfig
    run_id: str
    run_dir: Path
    redis_url: str
    embedded: Any = None
    started: float = field(default_factory=time.time)
    dashboard: Any = None
    next_check: float = 0.0
    store_warned: bool = False

    def tick(self, every_s: float = 5.0) -> None:
        """Called from the driver's loop: every few seconds, restart a dead embedded Redis on
        its port (the actors' URL stays valid) and write the run's heartbeat (a run whose
        driver died is then seen as failed: `services.metrics.HEARTBEAT_LOST_S`)."""
        now = time.monotonic()
        if now < self.next_check:
            return
        self.next_check = now + every_s
        import redis

        from shoal.services.metrics import RunRegistry

        if self.embedded is not None and not self.embedded.alive():
            try:
                self.embedded = self.embedded.restart()
                print(
                    f"[shoal] the embedded Redis ({self.embedded.db_path.name}) died; restarted it on the same port: "
                    "metrics written since its last save are lost",
                    flush=True,
                )
            except Exception as e:  # noqa: BLE001 - the run goes on without metrics
                self._warn_store(e)
                return
        try:
            RunRegistry(self.redis_url).heartbeat(self.run_id)
        except (redis.RedisError, ValueError) as e:
            self._warn_store(e)

    def _warn_store(self, err: Exception) -> None:
        if not self.store_warned:
            self.store_warned = True
            print(
                f"[shoal] the metrics store does not answer ({type(err).__name__}); training goes on without metrics",
                flush=True,
            )

    def sink(self, source: str) -> Any:
        """Redis metrics, mirrored to Prometheus gauges when Ray is up (services/prometheus.py)."""
        from shoal.services.metrics import RedisMetrics
        from shoal.services.prometheus import PrometheusMetrics, TeeMetrics

        return TeeMetrics(RedisMetrics(self.redis_url, self.run_id, source), PrometheusMetrics(self.run_id, source))


def new_run_id(name: str) -> str:
    return f"{name}-{time.strftime('%Y%m%d-%H%M%S')}-{int(time.time() * 1000) % 1000:03d}"


def open_run(cfg: ShoalConfig, run_id: str | None = None, resume: bool = False) -> RunContext:
    """Create the run directory, save the resolved config, connect the metrics store. With
    `resume`, the run `run_id` goes on: same directory, same record and charts in Redis."""
    from shoal.services.metrics import RunRegistry, resolve_redis

    run_id = run_id or new_run_id(cfg.run.name)
    run_dir = Path(cfg.run.runs_dir) / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(dump_config(cfg))
    url, embedded = resolve_redis(cfg.run.redis_url, cfg.run.runs_dir)
    RunRegistry(url).start_run(run_id, cfg.run.algorithm, json.dumps(public_config(cfg)), exist_ok=resume)
    return RunContext(cfg, run_id, run_dir, url, embedded, dashboard=start_run_dashboard(cfg, url, run_id))


def start_run_dashboard(cfg: ShoalConfig, redis_url: str, run_id: str) -> Any:
    """The web dashboard beside the run (unless dashboard.enabled is false); never fails the run."""
    d = cfg.dashboard
    if not d.enabled:
        return None
    try:
        from shoal.services.dashboard import start_dashboard

        server = start_dashboard(redis_url, d.host, d.port, d.token, d.poll_interval_s)
    except Exception as e:  # a dashboard problem must not stop training
        print(f"[shoal] dashboard not started ({e}); use `shoal metrics {run_id}` or `shoal dashboard`", flush=True)
        return None
    moved = f"  (port {server.moved_from} was busy)" if server.moved_from else ""
    print(f"[shoal] dashboard: {server.url}#run={run_id}{moved}", flush=True)
    return server


class Interrupted(Exception):
    """Ctrl-C or SIGTERM stopped a run after it saved a checkpoint (`shoal train --resume`)."""

    def __init__(self, run_id: str, step: int, total: int, checkpoint: str | None) -> None:
        self.run_id, self.step, self.total, self.checkpoint = run_id, step, total, checkpoint
        saved = f"checkpoint {checkpoint}" if checkpoint else "no checkpoint could be saved"
        super().__init__(f"run {run_id} interrupted at learner step {step} of {total} ({saved})")


class StopRequest:
    """Ctrl-C or SIGTERM during training (`stop_on_signals`): the loop stops at its next safe
    point - between learner steps, never inside an optimizer step - and saves a checkpoint."""

    def __init__(self) -> None:
        self.requested = False

    def check(self) -> None:
        """At a safe point of the loop: raise KeyboardInterrupt if a stop was asked for."""
        if self.requested:
            raise KeyboardInterrupt("stop requested")


@contextmanager
def stop_on_signals() -> Iterator[StopRequest]:
    """The first Ctrl-C / SIGTERM (`ray job stop`, `kill`, a scheduler's preemption) asks the
    loop to stop after the current step; a second one interrupts at once (main thread only)."""
    stop = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(signum: int, frame: Any) -> None:
        if stop.requested:
            raise KeyboardInterrupt(f"signal {signum}")
        stop.requested = True
        print("\n[shoal] stopping after the current step to save a checkpoint (again: stop at once)", flush=True)

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def uninterruptible(fn: Callable[[], Any]) -> Any:
    """`fn()` with SIGINT and SIGTERM ignored: a second Ctrl-C must not leave half a
    checkpoint (checkpoints are written atomically, but the run would lose this one)."""
    if threading.current_thread() is not threading.main_thread():
        return fn()
    old = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        return fn()
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def resumed(ctx: RunContext, step: int, checkpoint: str, lost: list[str]) -> None:
    """Say that a run goes on, and what of its state did not come back."""
    note = f"; not restored: {', '.join(lost)}" if lost else ""
    print(f"[shoal] run {ctx.run_id} resumes at learner step {step} from {checkpoint}{note}", flush=True)
    ctx.sink("driver").event("run_resumed", f"resumed at step {step} from {checkpoint}{note}")


def close_run(ctx: RunContext, status: str, summary: dict[str, Any]) -> None:
    """Write summary.json and the run's final status. A metrics store that died does not fail
    a run that trained: the embedded one is restarted for the record, a remote one is left
    with a warning (the summary is on disk)."""
    import redis

    from shoal.services.metrics import RunRegistry

    try:
        (ctx.run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
        ctx.next_check = 0.0
        ctx.tick()
        try:
            RunRegistry(ctx.redis_url).finish_run(ctx.run_id, status, summary)
        except (redis.RedisError, ValueError) as e:
            print(
                f"[shoal] warning: the run's end could not be recorded in the metrics store ({type(e).__name__}); "
                f"its summary is in {ctx.run_dir / 'summary.json'}",
                flush=True,
            )
    finally:
        if ctx.dashboard is not None:
            ctx.dashboard.stop()
        if ctx.embedded is not None:
            ctx.embedded.close()


UNTRAINABLE_AFTER_REQUESTS = 8  # requests back, none accepted by the replay: stop and say why


def untrainable_reason(requests: int, added: float, rejected: int) -> str | None:
    """Why nothing can ever be trained, once enough requests have come back to tell: the
    replay accepted none of their rollouts and the scorers rejected some (a reward that is
    NaN for everything used to spin for minutes: 52,256 rollouts rejected, no step, no word)."""
    if requests < UNTRAINABLE_AFTER_REQUESTS or added > 0 or rejected == 0:
        return None
    return (
        f"no rollout can be trained on: the reward rejected every rollout scored so far ({rejected}, from "
        f"{requests}+ requests: non-finite scores); check reward.rule_functions and "
        "reward.reward_model_path (events `reward_rejected` name the scorer and the value)"
    )


def torch_setup(cfg: Any) -> None:
    """torch threads per process (run.torch_threads): torch's default of one thread per core is
    many times slower on a shared or oversubscribed machine."""
    import torch

    torch.set_num_threads(cfg.run.torch_threads)


def build_summary(ctx: RunContext, before: dict, after: dict, counters: dict[str, float]) -> dict[str, Any]:
    wall = time.time() - ctx.started
    return {
        "run_id": ctx.run_id,
        "run_dir": str(ctx.run_dir),
        "wall_s": round(wall, 1),
        "before": before,
        "after": after,
        **counters,
    }


def format_summary(summary: dict[str, Any]) -> str:
    """The table printed at the end of a run."""
    before, after = summary.get("before", {}), summary.get("after", {})
    rows = [("metric", "start", "end")]
    for key in (
        "gold_reward",
        "proxy_reward",
        "kl_ref",
        "length",
        "distinct_frac",
        "distinct_per_topic",
        "success_rate",
        "return_mean",
        "lmrl_score",
        "length_mean",
        "episodes",
    ):
        if key in before or key in after:
            rows.append((f"eval/{key}", _fmt(before.get(key)), _fmt(after.get(key))))
    for key, value in summary.items():
        if key not in ("before", "after", "run_id", "run_dir"):
            rows.append((key, "", _fmt(value)))
    w0 = max(len(r[0]) for r in rows)
    lines = [f"Shoal run {summary.get('run_id')}  ({summary.get('run_dir')})"]
    lines += [f"  {a:<{w0}}  {b:>10}  {c:>10}" for a, b, c in rows]
    return "\n".join(lines)


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, dict):
        return " ".join(f"{k} {_fmt(x)}" for k, x in v.items())
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def log_error(run_dir: Path, who: str, err: BaseException | str) -> Path:
    """Append a traceback to the run's `errors.log` (mode 0600, URL passwords masked); returns its path."""
    from shoal.services.secrets import redact_text

    log = Path(run_dir) / "errors.log"
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a") as f:
        f.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} {who}\n{redact_text(str(err))}\n")
    return log
