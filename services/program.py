"""The Ray program: `shoal train CONFIG` with run.mode=ray, and the `ray job submit` entrypoint.

One program for every algorithm: what the actors hold comes from the run's builder
(`shoal.builders`); the driver is a single controller that moves object refs, never data:

    payload -> WorkerActor.act -> [ScorerActor.score] -> BufferActor.add     (per worker, in
                                                                            flight; scorers
                                                                            when the algorithm
                                                                            has them, inside
                                                                            the workers with
                                                                            reward.placement
                                                                            `workers`)
    LearnerActor.train_step(buffer)  (the learner pulls batches from the buffer actor and
                                      sends priorities back to it)
    every sync_interval steps: LearnerActor.publish_weights -> handle -> every
    WorkerActor.load_weights(handle) (queued behind its current request: no restart)

Generation and learning overlap: workers keep acting with version v while the learner trains;
the buffer drops samples older than max_policy_lag. Back-pressure: a worker gets a new request
only when the buffer has room for it (in units of a request: prompts, or whole episodes). A
dead worker is restarted by Ray (max_restarts), gets the latest weights again and its request
is re-sent. Model directories the actors need (a frozen encoder, a built tiny LM) are built
once here and shipped to every actor by value (`services.weights.pack_dir`).
"""

from __future__ import annotations

import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.exceptions import RayActorError, RayTaskError
from tqdm import tqdm

from shoal import PROCESS_STARTED
from shoal.builders import make_builder
from shoal.services.actors import ACTOR_ENV, BufferActor, LearnerActor, ScorerActor, WorkerActor
from shoal.services.config import ConfigError, ShoalConfig
from shoal.services.run import RunContext, build_summary, close_run, open_run
from shoal.services.weights import pack_dir
from shoal.utils import RunError


def required_resources(cfg: ShoalConfig, placement: str = "actors") -> dict[str, float]:
    """CPUs and GPUs the run's actors reserve (scorer actors only for algorithms that have
    them, and only when they are placed in their own actors)."""
    r = cfg.rollout
    scorers = make_builder(cfg).num_scorers() if placement == "actors" else 0
    cpus = r.num_workers * r.num_cpus_per_worker + scorers * cfg.reward.num_cpus_per_scorer + cfg.run.learner_num_cpus
    gpus = r.num_workers * r.num_gpus_per_worker + scorers * cfg.reward.num_gpus_per_scorer + cfg.run.learner_num_gpus
    return {"CPU": cpus, "GPU": gpus}


def init_ray(cfg: ShoalConfig) -> str | None:
    """Join RAY_ADDRESS / run.ray_address if given (as under `ray job submit`), else start a
    local Ray sized for the run. Returns None when Ray was already up, "joined" or "local".

    A local Ray is started with the actors' environment (`ACTOR_ENV`) in its own, so that every
    worker process inherits it and actors can take the workers Ray prestarts: a per-actor
    `runtime_env` makes Ray start a fresh process for each actor instead (measured: ~3 s more to
    the first step on 2 cores, benchmarks/startup.py). A cluster's nodes were started without
    it, so there the actors carry it as their runtime_env (`actor_env_options`)."""
    if ray.is_initialized():
        return None
    address = cfg.run.ray_address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True)
        return "joined"
    need = required_resources(cfg, scorer_placement(cfg, "local"))
    saved = {k: os.environ.get(k) for k in ACTOR_ENV}
    os.environ.update(ACTOR_ENV)  # the raylet, and through it every worker, inherits this
    try:
        ray.init(num_cpus=max(os.cpu_count() or 1, int(need["CPU"] + 1)), include_dashboard=False, log_to_driver=True)
    finally:  # the driver's own environment is left as it was
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return "local"


def scorer_placement(cfg: ShoalConfig, started_ray: str | None) -> str:
    """`reward.placement` resolved: `auto` puts the scorers inside the rollout workers when this
    run starts its own Ray on a machine with fewer cores than separate actors would reserve
    (one torch process fewer to start and feed: benchmarks/startup.py), else in their own."""
    if cfg.reward.placement != "auto":
        return cfg.reward.placement
    crowded = (os.cpu_count() or 1) < required_resources(cfg, "actors")["CPU"]
    return "workers" if started_ray == "local" and crowded else "actors"


def actor_env_options(started: str | None) -> dict[str, Any]:
    """Options that give an actor `ACTOR_ENV`: nothing when this process started Ray with it
    (`init_ray`), else a runtime_env (a cluster, or a Ray someone else started)."""
    return {} if started == "local" else {"runtime_env": {"env_vars": ACTOR_ENV}}


def check_resources(cfg: ShoalConfig, placement: str = "actors") -> None:
    """Fail with a clear message instead of waiting forever for resources that do not exist."""
    have, need = ray.cluster_resources(), required_resources(cfg, placement)
    for res, amount in need.items():
        if amount > have.get(res, 0.0) + 1e-9:
            raise ConfigError(
                f"the run needs {amount:g} {res} but the Ray cluster has {have.get(res, 0.0):g}: add nodes, "
                f"or lower rollout.num_workers / the num_{res.lower()}s_per_* settings"
            )


def prefetch_request(builder: Any) -> Future | None:
    """builder.new_request() in a thread (None when the builder collects nothing)."""
    if not builder.collecting():
        return None
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shoal-first-request")
    first = pool.submit(builder.new_request)
    pool.shutdown(wait=False)  # the thread ends with its one task
    return first


@dataclass
class _Chain:
    worker: int
    payload: Any
    started: float = field(default_factory=time.perf_counter)


class RayProgram:
    """The single-controller loop for any builder (module docstring)."""

    def __init__(
        self,
        cfg: ShoalConfig,
        ctx: RunContext,
        started_ray: str | None = None,
        builder: Any = None,
        first_request: Future | None = None,
    ) -> None:
        self.cfg, self.ctx = cfg, ctx
        self.builder = b = builder or make_builder(cfg)
        # The first request: a prompt builder loads the policy's tokenizer (importing
        # transformers: ~3 s of a 2-core machine) on first use; run_ray starts it before Ray.
        self.first_request = first_request or prefetch_request(b)
        self.env_opts = actor_env_options(started_ray)
        self.colocated = scorer_placement(cfg, started_ray) == "workers" and b.num_scorers() > 0
        self.events = ctx.sink("driver")
        self.version, self.samples, self.restarts = 0, 0, 0
        # start-up timeline, seconds since the command started (summary `startup_s`, benchmarks/startup.py)
        self.startup: dict[str, float] = {"run_open": round(ctx.started - PROCESS_STARTED, 2)}
        self.handle: Any = None
        self.before_refs: list[Any] | None = None  # the "before" evaluation, launched at the first step
        self.pending: dict[Any, tuple[str, Any]] = {}
        self.idle: set[int] = set()
        b.preflight()
        model_dirs = b.prepare_models(str(ctx.run_dir))
        self.bundle = (
            ray.put({role: pack_dir(d) for role, d in model_dirs.items()}) if model_dirs else None
        )  # held: restarted actors unpack it again
        cj, url, rid = cfg.model_dump_json(), ctx.redis_url, ctx.run_id
        self.workers = [self._worker(i) for i in range(cfg.rollout.num_workers)]
        self.scorers = [
            ScorerActor.options(
                num_cpus=cfg.reward.num_cpus_per_scorer, num_gpus=cfg.reward.num_gpus_per_scorer, **self.env_opts
            ).remote(cj, url, rid, i)
            for i in range(0 if self.colocated else b.num_scorers())
        ]
        self.buffer = BufferActor.options(num_cpus=0, **self.env_opts).remote(cj, url, rid)
        self.learner = LearnerActor.options(**self.learner_options()).remote(
            cj, url, rid, str(ctx.run_dir), self.bundle
        )
        self.next_scorer = 0
        initial = b.initial_items()
        if initial:
            ray.get(self.buffer.add.remote(initial))
            print(f"[shoal] replay holds the data set: {len(initial)} items", flush=True)
        self.sync(wait=True)
        self.mark("first_sync")

    def mark(self, phase: str) -> None:
        """Record the first time `phase` is reached, in seconds since the command started."""
        self.startup.setdefault(phase, round(time.time() - PROCESS_STARTED, 2))

    def _worker(self, i: int) -> Any:
        return WorkerActor.options(**self.worker_options()).remote(
            self.cfg.model_dump_json(), self.ctx.redis_url, self.ctx.run_id, i, self.bundle, self.colocated
        )

    def worker_options(self) -> dict[str, Any]:
        r = self.cfg.rollout
        return {
            "num_cpus": r.num_cpus_per_worker,
            "num_gpus": r.num_gpus_per_worker,
            "max_restarts": 3,
            **self.env_opts,
        }

    def learner_options(self) -> dict[str, Any]:
        return {"num_cpus": self.cfg.run.learner_num_cpus, "num_gpus": self.cfg.run.learner_num_gpus, **self.env_opts}

    # -- weights ---------------------------------------------------------------------------
    def sync(self, wait: bool = False) -> None:
        t0 = time.perf_counter()
        self.handle = ray.get(self.learner.publish_weights.remote())
        loads = [w.load_weights.remote(self.handle) for w in self.workers]
        if wait:
            ray.get(loads)
            self.events.log({"weights/sync_s": time.perf_counter() - t0}, step=self.version)
            return
        for i, ref in enumerate(loads):
            self.pending[ref] = ("load", (i, t0))

    # -- requests ----------------------------------------------------------------------------
    def request(self, i: int, payload: Any) -> Any:
        """The chain of one request; resolves to the buffer's room after the add."""
        items = self.workers[i].act.remote(payload)
        if self.scorers:
            items = self.scorers[self.next_scorer % len(self.scorers)].score.remote(items)
            self.next_scorer += 1
        return self.buffer.add.remote(items)

    def new_request(self) -> Any:
        """The builder's next request (the first one was built while the actors started)."""
        if self.first_request is not None:
            first, self.first_request = self.first_request, None
            return first.result()
        return self.builder.new_request()

    def launch(self, i: int, payload: Any = None) -> None:
        payload = payload if payload is not None else self.new_request()
        self.pending[self.request(i, payload)] = ("chain", _Chain(i, payload))
        self.idle.discard(i)

    def in_flight(self) -> int:
        return sum(1 for kind, _ in self.pending.values() if kind == "chain")

    def room(self) -> int:
        """The buffer's room, in units of a request."""
        return ray.get(self.buffer.room.remote())

    def refill(self, free: int) -> None:
        """Launch idle workers while the buffer has room for their requests."""
        if not self.builder.collecting():
            return
        per = self.builder.request_size()
        room = free - self.in_flight() * per
        for i in sorted(self.idle):
            if room < per and not (self.builder.partial_requests and room > 0 and self.in_flight() == 0):
                break
            self.launch(i)
            room -= per

    def on_chain(self, chain: _Chain, ref: Any, stopping: bool) -> None:
        try:
            free = ray.get(ref)
        except (RayActorError, RayTaskError) as e:
            return self.recover(chain, e)
        self.samples += self.builder.request_units(chain.payload)
        self.mark("first_rollouts")
        self.idle.add(chain.worker)
        if not stopping:
            self.refill(free)

    def recover(self, chain: _Chain, err: Exception) -> None:
        """A worker (or scorer) died mid-request: Ray restarts it; resend weights and the request."""
        self.restarts += 1
        units = self.builder.request_units(chain.payload)
        msg = f"rollout-{chain.worker} request failed ({type(err).__name__}); re-sending weights v{self.version} and its request ({units} {self.builder.unit})"
        print(f"[shoal] {msg}", flush=True)
        self.events.event("worker_restarted", msg)
        if self.restarts > 10 * len(self.workers):
            raise RuntimeError(f"too many worker failures ({self.restarts}); last: {err}") from err
        self.workers[chain.worker].load_weights.remote(self.handle)
        self.launch(chain.worker, chain.payload)

    # -- main loop --------------------------------------------------------------------------
    def train_request(self) -> Any:
        return self.learner.train_step.remote(self.buffer, self.builder.collecting())

    def run(self, progress: bool = True) -> dict[str, float]:
        total = self.cfg.run.total_steps
        bar = tqdm(total=total, desc="learner steps", disable=not progress)
        busy = {info.worker for kind, info in self.pending.values() if kind == "chain"}
        self.idle |= set(range(len(self.workers))) - busy
        self.refill(self.room())
        self.pending[self.train_request()] = ("learn", None)
        last: dict[str, float] = {}
        t_start = time.perf_counter()
        while self.version < total:
            ready, _ = ray.wait(list(self.pending), num_returns=1, timeout=0.5)
            if not ready:
                if self.idle and self.in_flight() == 0:
                    self.refill(self.room())
                continue
            kind, info = self.pending.pop(ready[0])
            if kind == "chain":
                self.on_chain(info, ready[0], stopping=False)
            elif kind == "load":
                self.on_load(ready[0], *info)
            else:
                last = self.on_learn(learner_result(ready[0]), bar, t_start)
        bar.close()
        self.drain()
        return last

    def on_learn(self, m: dict[str, float], bar: Any, t_start: float) -> dict[str, float]:
        self.version = int(m["learner/policy_version"])
        self.mark("first_step")
        bar.update(1)
        sps = self.samples / (time.perf_counter() - t_start)
        bar.set_postfix(
            **self.builder.progress_fields(m), samples_s=f"{sps:.1f}", lag=f"{m.get('learner/policy_lag_mean', 0):.2f}"
        )
        self.events.log({"rollout/total_samples_per_s": sps}, step=self.version)
        if self.before_refs is None:  # queued on the workers behind their requests, ahead of any new weights
            self.before_refs = self.evaluate_start()
        if self.version % self.cfg.rollout.sync_interval == 0:
            self.sync()
        if self.version < self.cfg.run.total_steps:
            self.pending[self.train_request()] = ("learn", None)
        if self.idle and self.in_flight() == 0:
            self.refill(self.room())
        return m

    def on_load(self, ref: Any, worker: int, t0: float) -> None:
        try:
            out = ray.get(ref)
        except (RayActorError, RayTaskError) as e:
            self.events.event("weight_load_failed", f"rollout-{worker}: {type(e).__name__}")
            return
        self.events.log(
            {"weights/sync_s": time.perf_counter() - t0, "weights/load_s": out.get("weights/load_s", 0.0)},
            step=self.version,
        )

    def drain(self) -> None:
        """Finish in-flight requests, then give every worker the final weights."""
        for ref, (kind, info) in list(self.pending.items()):
            if kind == "chain":
                self.on_chain(info, ref, stopping=True)
            elif kind == "load":
                self.on_load(ref, *info)
        self.pending.clear()
        self.sync(wait=True)

    # -- evaluation and summary -------------------------------------------------------------
    def evaluate_start(self) -> list[Any]:
        """Launch the evaluation requests; returns their refs. Actor calls run in submission
        order, so requests launched now see the weights the workers hold now, whatever is sent
        after: the "before" evaluation is launched when the first learner step returns, before
        the first new weights go out, so it does not hold up the first batch."""
        requests = self.builder.eval_requests(len(self.workers))
        outputs = [self.workers[i].evaluate.remote(r) for i, r in enumerate(requests)]
        if self.scorers:
            outputs = [self.scorers[0].score.remote(o) for o in outputs]
        return outputs

    def evaluate_finish(self, refs: list[Any]) -> dict[str, float]:
        return self.builder.summarize_eval(ray.get(refs)) if refs else {}

    def evaluate(self) -> dict[str, float]:
        return self.evaluate_finish(self.evaluate_start())

    def counters(self, last: dict[str, float]) -> dict[str, Any]:
        stats = ray.get(self.buffer.stats.remote())
        rejected = sum(ray.get([s.rejected.remote() for s in (self.workers if self.colocated else self.scorers)]))
        dropped = sum(int(s.get("dropped_episodes", 0)) for s in ray.get([w.status.remote() for w in self.workers]))
        return {
            "learner_steps": self.version,
            self.builder.unit: self.samples,
            **self.builder.counters(stats, rejected, dropped),
            "worker_restarts": self.restarts,
            "first_step_s": self.startup.get("first_step"),
            "startup_s": dict(sorted({**self.startup, **self.actors_ready()}.items(), key=lambda kv: kv[1])),
            **self.builder.final_metrics(last),
        }

    def actors_ready(self) -> dict[str, float]:
        """When the last actor of each role, and of all (`actors_ready`), finished its
        constructor, in seconds since the command started."""
        roles = {"workers": self.workers, "scorers": self.scorers, "buffer": [self.buffer], "learner": [self.learner]}
        ready = {
            f"{role}_ready": round(max(ray.get([a.ready_time.remote() for a in actors])) - PROCESS_STARTED, 2)
            for role, actors in roles.items()
            if actors
        }
        return {**ready, "actors_ready": max(ready.values())}


def learner_result(ref: Any) -> dict[str, float]:
    """A train_step's metrics; a RunError raised in the learner reaches the user as itself."""
    try:
        return ray.get(ref)
    except RayTaskError as e:
        if isinstance(e.cause, RunError):
            raise e.cause from None
        raise


def run_ray(cfg: ShoalConfig, progress: bool = True, ctx: RunContext | None = None) -> dict[str, Any]:
    ctx = ctx or open_run(cfg)  # first: a metrics store that does not answer fails fast
    status, summary, started_ray = "failed", {}, None
    try:
        builder = make_builder(cfg)
        first_request = prefetch_request(builder)  # overlaps with Ray's start
        started_ray = init_ray(cfg)
        ray_up = round(time.time() - PROCESS_STARTED, 2)
        check_resources(cfg, scorer_placement(cfg, started_ray))
        print(
            f"[shoal] run {ctx.run_id}: {cfg.rollout.num_workers} rollout worker(s), metrics at {ctx.redis_url}",
            flush=True,
        )
        prog = RayProgram(cfg, ctx, started_ray, builder, first_request)
        prog.startup["ray_up"] = ray_up
        last = prog.run(progress)
        before = prog.evaluate_finish(prog.before_refs if prog.before_refs is not None else prog.evaluate_start())
        ray.get(prog.learner.checkpoint.remote(True))
        summary = build_summary(ctx, before, prog.evaluate(), prog.counters(last))
        status = "finished"
        return summary
    finally:
        close_run(ctx, status, summary)
        if started_ray:
            ray.shutdown()
