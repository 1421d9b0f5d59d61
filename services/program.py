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
from shoal.services.actors import (
    ACTOR_ENV,
    BufferActor,
    DirectLearnerActor,
    DirectWorkerActor,
    LearnerActor,
    ScorerActor,
    WorkerActor,
)
from shoal.services.calls import dead_for_good, describe_error, get_within, overdue, timeout_message
from shoal.services.config import ConfigError, ShoalConfig
from shoal.services.direct import DirectGroup, uses_gpus
from shoal.services.pools import ActorPool
from shoal.services.run import (
    Interrupted,
    RunContext,
    build_summary,
    close_run,
    log_error,
    open_run,
    resumed,
    stop_on_signals,
    uninterruptible,
    untrainable_reason,
)
from shoal.services.secrets import redact_url
from shoal.services.weights import pack_dir
from shoal.utils import RunError


def required_resources(cfg: ShoalConfig, placement: str = "actors") -> dict[str, float]:
    """CPUs and GPUs the run's actors reserve (scorer actors only for algorithms that have
    them, and only when they are placed in their own actors)."""
    r = cfg.rollout
    scorers = make_builder(cfg).num_scorers() if placement == "actors" else 0
    cpus = r.num_workers * r.num_cpus_per_worker + scorers * cfg.reward.num_cpus_per_scorer + cfg.run.learner_num_cpus
    gpus = r.num_workers * r.num_gpus_per_worker + scorers * cfg.reward.num_gpus_per_scorer + cfg.run.learner_num_gpus
    return {"CPU": cpus, "GPU": gpus, **{k: v * r.num_workers for k, v in r.worker_resources.items()}}


def worker_need(cfg: ShoalConfig) -> dict[str, float]:
    """What one rollout worker reserves (the resources it asks Ray for)."""
    r = cfg.rollout
    return {
        k: v
        for k, v in {"CPU": r.num_cpus_per_worker, "GPU": r.num_gpus_per_worker, **r.worker_resources}.items()
        if v > 0
    }


def workers_that_fit(available: dict[str, float], need: dict[str, float], cap: int) -> int:
    """How many more workers the free resources hold (at most `cap`; a worker that asks for
    nothing fits `cap` times)."""
    fits = [int((available.get(k, 0.0) + 1e-9) // v) for k, v in need.items()]
    return max(0, min([cap, *fits]))


JOIN_TIMEOUT_S = 300.0  # a worker the elastic pool started that Ray cannot place in this long is dropped
STARTUP_TIMEOUT_S = 600.0  # the deadline of calls that wait for the actors' constructors (model loading)
MAX_RESTARTS = 3  # Ray restarts a dead worker or scorer in place this often, then the pool replaces it
LOCAL_ACTORS_PER_CORE = 4  # a local Ray's CPU slots per core (module note in `local_cpus`)


def describe_need(cfg: ShoalConfig, placement: str, res: str = "CPU") -> str:
    """What the CPUs (GPUs) are for, e.g. '64 rollout worker(s) x 1 + learner 1'."""
    r, scorers, kind = cfg.rollout, make_builder(cfg).num_scorers() if placement == "actors" else 0, res.lower()
    if res not in ("CPU", "GPU"):
        return f"{r.num_workers} rollout worker(s) x {r.worker_resources[res]:g} (rollout.worker_resources)"
    parts = [f"{r.num_workers} rollout worker(s) x {getattr(r, f'num_{kind}s_per_worker'):g}"]
    if scorers:
        parts.append(f"{scorers} scorer(s) x {getattr(cfg.reward, f'num_{kind}s_per_scorer'):g}")
    return " + ".join([*parts, f"learner {getattr(cfg.run, f'learner_num_{kind}s'):g}"])


def local_cpus(cfg: ShoalConfig, placement: str) -> int:
    """CPU slots for a local Ray: the machine's cores, raised to what the actors reserve up to
    LOCAL_ACTORS_PER_CORE per core. The actors are single-threaded torch processes that take
    turns (workers generate while the learner trains), so the demo's 3-4 actors on 2 cores
    overlap usefully; 64 on 2 cores (measured: 11.5 GiB, load 65, no learner step in 180 s)
    cannot, and fails here at once, naming the shortfall."""
    cores, need = os.cpu_count() or 1, required_resources(cfg, placement)["CPU"]
    if need > LOCAL_ACTORS_PER_CORE * cores:
        raise ConfigError(
            f"rollout.num_workers: the run's actors reserve {need:g} CPUs ({describe_need(cfg, placement)}) but this "
            f"machine has {cores} cores (a local Ray runs at most {LOCAL_ACTORS_PER_CORE} actors per core): lower "
            "rollout.num_workers or the num_cpus_per_* settings, or join a cluster with run.ray_address"
        )
    return max(cores, int(need + 1))


def check_ray_address(address: str, timeout_s: float = 5.0) -> None:
    """A Ray address (host:port, ray://host:port) that does not accept a TCP connection fails
    here in one line; ray.init would retry it forever. 'auto' / 'local' are left to Ray."""
    import socket

    hostport = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as e:
        raise ConfigError(
            f"run.ray_address: Ray at {address} does not answer ({e.strerror or type(e).__name__}); start it "
            "(`ray start --head`) or unset run.ray_address / RAY_ADDRESS to start a local Ray"
        ) from None


WORKER_NICENESS = 0  # the niceness of a local Ray's worker processes (Ray's default: 15)


def init_ray(cfg: ShoalConfig) -> str | None:
    """Join RAY_ADDRESS / run.ray_address if given (as under `ray job submit`), else start a
    local Ray sized for the run. Returns None when Ray was already up, "joined" or "local".

    A local Ray is started with the actors' environment (`ACTOR_ENV`) in its own, so that every
    worker process inherits it and actors can take the workers Ray prestarts: a per-actor
    `runtime_env` makes Ray start a fresh process for each actor instead (measured: ~3 s more to
    the first step on 2 cores, benchmarks/startup.py). A cluster's nodes were started without
    it, so there the actors carry it as their runtime_env (`actor_env_options`).

    Its workers run at the driver's priority (`WORKER_NICENESS`): Ray's default, nice 15, lets any
    other busy process on the machine take the CPU from them (measured with two busy loops on 2
    cores: three actors importing torch were ready in 48.9 s at nice 15, 3.9 s at nice 0)."""
    if ray.is_initialized():
        return None
    address = cfg.run.ray_address or os.environ.get("RAY_ADDRESS")
    if address:
        check_ray_address(address)
        ray.init(address=address, log_to_driver=True)
        return "joined"
    num_cpus = local_cpus(cfg, scorer_placement(cfg, "local"))
    saved = {k: os.environ.get(k) for k in ACTOR_ENV}
    os.environ.update(ACTOR_ENV)  # the raylet, and through it every worker, inherits this
    try:
        ray.init(
            address="local",  # a new Ray, even where a `ray start` cluster runs on this machine
            num_cpus=num_cpus,
            include_dashboard=False,
            log_to_driver=True,
            _system_config={"worker_niceness": WORKER_NICENESS},
        )
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


def check_resources(cfg: ShoalConfig, placement: str = "actors", timeout_s: float = 0.0) -> None:
    """Fail with a clear message instead of waiting forever for resources that do not exist;
    on a cluster wait up to `timeout_s` for them (an autoscaler adding nodes), saying so once."""
    need, deadline, said = required_resources(cfg, placement), time.monotonic() + timeout_s, False
    while True:
        have = ray.cluster_resources()
        short = {res: amount for res, amount in need.items() if amount > have.get(res, 0.0) + 1e-9}
        if not short:
            return
        res, amount = next(iter(short.items()))
        msg = f"the run needs {amount:g} {res} ({describe_need(cfg, placement, res)}) but the Ray cluster has {have.get(res, 0.0):g}"
        if time.monotonic() >= deadline:
            raise ConfigError(f"{msg}: add nodes, or lower rollout.num_workers / the num_{res.lower()}s_per_* settings")
        if not said:
            print(f"[shoal] {msg}; waiting up to {timeout_s:g} s for nodes (run.resource_timeout_s)", flush=True)
            said = True
        time.sleep(2.0)


def on_this_node() -> Any:
    """Prefer the driver's node (soft): the replay buffer writes its snapshots to the run
    directory, and a node that leaves the cluster should not take it along."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)


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
    scorer: int | None = None
    started: float = field(default_factory=time.perf_counter)
    act_ref: Any = None  # the worker's part (to tell which stage of an overdue request is stuck)
    score_ref: Any = None
    overdue: bool = False


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
        # A resumed run: the data position first, before any request is drawn.
        self.resume_state = None
        if cfg.run.resume_from:
            from shoal.learner.checkpoint import read_driver_state  # torch: only a resumed run needs it here

            self.resume_state = read_driver_state(cfg.run.resume_from)
        if self.resume_state is not None:
            b.load_state_dict(self.resume_state.get("builder") or {})
        # The first request: a prompt builder loads the policy's tokenizer (importing
        # transformers: ~3 s of a 2-core machine) on first use; run_ray starts it before Ray.
        self.first_request = first_request or prefetch_request(b)
        self.env_opts = actor_env_options(started_ray)
        self.colocated = scorer_placement(cfg, started_ray) == "workers" and b.num_scorers() > 0
        self.events = ctx.sink("driver")
        self.version, self.samples, self.learner_deaths = 0, 0, 0
        self.requests_done, self.accepted_any = 0, False  # until the replay accepts something (check_trainable)
        self.last_step_t = time.perf_counter()  # the stall watchdog's clock (run.stall_timeout_s)
        # start-up timeline, seconds since the command started (summary `startup_s`, benchmarks/startup.py)
        self.startup: dict[str, float] = {"run_open": round(ctx.started - PROCESS_STARTED, 2)}
        self.handle: Any = None
        self.direct: DirectGroup | None = None  # rollout.weight_transport `rdt` (services.direct)
        self.before_refs: list[Any] | None = None  # the "before" evaluation, launched at the first step
        self.pending: dict[Any, tuple[str, Any]] = {}
        self.doomed: BaseException | None = None  # a failed direct transfer: Ray kills the learner
        self.idle: dict[int, float] = {}  # worker -> when it came back; the longest idle goes first
        b.preflight()
        model_dirs = b.prepare_models(str(ctx.run_dir))
        self.bundle = (
            ray.put({role: pack_dir(d) for role, d in model_dirs.items()}) if model_dirs else None
        )  # held: restarted actors unpack it again
        cj, url, rid = cfg.model_dump_json(), ctx.redis_url, ctx.run_id
        self.rollout = ActorPool("rollout", self._worker, cfg.rollout.num_workers, MAX_RESTARTS, say=self.say)
        self.scoring = ActorPool(
            "reward", self._scorer, 0 if self.colocated else b.num_scorers(), MAX_RESTARTS, say=self.say
        )
        self.requeued: list[Any] = []  # payloads of requests lost with a dead actor, sent again first
        self.requeued_units = 0
        # restarted from its snapshots (`recover_buffer`) when it takes them
        buffer_restarts = MAX_RESTARTS if cfg.run.replay_snapshot_interval_s else 0
        self.buffer = BufferActor.options(
            num_cpus=0, max_restarts=buffer_restarts, scheduling_strategy=on_this_node(), **self.env_opts
        ).remote(cj, url, rid, str(ctx.run_dir))
        self.learner = self.new_learner()
        self.next_scorer = 0
        self.served: dict[int, int] = {}  # rollout slot -> requests it completed (balance, join times)
        self.next_scale = time.perf_counter() + cfg.rollout.scale_interval_s  # the elastic pool's next look
        self.drawn = 0  # units the builder handed out (accounting: trained, dropped or counted)
        self.nodes: dict[str, str] = {}  # actor -> the node it was last seen on (timeout messages)
        self.deadline_s = max(cfg.run.actor_timeout_s, STARTUP_TIMEOUT_S)  # until the actors are up
        initial = b.initial_items()
        if initial:
            self.call(self.buffer.preload.remote(initial), "the replay buffer", "`preload`")
            print(f"[shoal] replay holds the data set: {len(initial)} items", flush=True)
        # Replay restarts (`recover_buffer`): each incarnation of the buffer actor is known by
        # its start time; the items the driver saw it acknowledge are set against what its
        # successor restored.
        self.buffer_incarnation = self.call(self.buffer.ready_time.remote(), "the replay buffer", "`ready_time`")
        self.offered_seen: dict[float, int] = {}  # incarnation -> items offered, as its last add said
        self.buffer_comebacks: list[tuple[float, int]] = []  # (the incarnation that died, items restored)
        self.buffer_deaths = 0
        self.before: dict[str, float] | None = None  # the evaluation at the start (kept across a resume)
        if self.resume_state is not None:
            self.restore(self.resume_state)
        if cfg.rollout.weight_transport == "rdt":
            self.direct = DirectGroup(uses_gpus(cfg), self.say)
            self.direct.form(self.learner, {i: self.rollout.handle(i) for i in self.rollout.healthy_slots()})
        self.sync(wait=True)
        self.mark("first_sync")
        self.nodes = self.locate()
        self.deadline_s = cfg.run.actor_timeout_s

    def mark(self, phase: str) -> None:
        """Record the first time `phase` is reached, in seconds since the command started."""
        self.startup.setdefault(phase, round(time.time() - PROCESS_STARTED, 2))

    def _worker(self, i: int) -> Any:
        worker_class = DirectWorkerActor if self.cfg.rollout.weight_transport == "rdt" else WorkerActor
        return worker_class.options(**self.worker_options()).remote(
            self.cfg.model_dump_json(), self.ctx.redis_url, self.ctx.run_id, i, self.bundle, self.colocated
        )

    def _scorer(self, i: int) -> Any:
        r = self.cfg.reward
        return ScorerActor.options(
            num_cpus=r.num_cpus_per_scorer, num_gpus=r.num_gpus_per_scorer, max_restarts=MAX_RESTARTS, **self.env_opts
        ).remote(self.cfg.model_dump_json(), self.ctx.redis_url, self.ctx.run_id, i)

    def call(self, ref: Any, who: str, what: str) -> Any:
        """An actor's answer within run.actor_timeout_s (`services.calls`; STARTUP_TIMEOUT_S at
        least while the actors start)."""
        return get_within(ref, who, what, self.deadline_s, self.nodes.get(who))

    def locate(self) -> dict[str, str]:
        """Where every actor runs, as far as it answers now."""
        named = {
            **{self.rollout.name(i): self.rollout.handle(i) for i in self.rollout.healthy_slots()},
            **{self.scoring.name(i): self.scoring.handle(i) for i in self.scoring.healthy_slots()},
            "the replay buffer": self.buffer,
            "the learner": self.learner,
        }
        ips = self.call([h.node_ip.remote() for h in named.values()], "the run's actors", "`node_ip`")
        for i in self.rollout.healthy_slots():
            self.place(i)
        return dict(zip(named, ips, strict=True))

    def place(self, slot: int) -> None:
        """Note the node a rollout worker runs on (the elastic pool drops those of nodes that left)."""
        node = self.call(self.rollout.handle(slot).node_id.remote(), self.rollout.name(slot), "`node_id`")
        self.rollout.placed(slot, node)

    def say(self, kind: str, message: str) -> None:
        """A line on the console and an event on the dashboard."""
        print(f"[shoal] {message}", flush=True)
        self.events.event(kind, message)

    def worker_options(self) -> dict[str, Any]:
        r = self.cfg.rollout
        return {
            "num_cpus": r.num_cpus_per_worker,
            "num_gpus": r.num_gpus_per_worker,
            "max_restarts": MAX_RESTARTS,
            **({"resources": dict(r.worker_resources)} if r.worker_resources else {}),
            **self.env_opts,
        }

    def new_learner(self, replacing: bool = False) -> Any:
        """The learner actor (`replacing`: in place of one Ray killed for good; it starts from
        the run's newest checkpoint, as a restarted one does)."""
        direct = self.cfg.rollout.weight_transport == "rdt"
        return (
            (DirectLearnerActor if direct else LearnerActor)
            .options(**self.learner_options())
            .remote(
                self.cfg.model_dump_json(),
                self.ctx.redis_url,
                self.ctx.run_id,
                str(self.ctx.run_dir),
                self.bundle,
                replacing,
            )
        )

    def learner_options(self) -> dict[str, Any]:
        run = self.cfg.run
        return {
            "num_cpus": run.learner_num_cpus,
            "num_gpus": run.learner_num_gpus,
            "max_restarts": MAX_RESTARTS,  # back from its newest checkpoint (recover_learner)
            **self.env_opts,
        }

    # -- weights ---------------------------------------------------------------------------
    def sync(self, wait: bool = False) -> None:
        """The learner's weights to every healthy worker: over the collective group to its
        members (rollout.weight_transport `rdt`, `services.direct`), through the object store
        to the others (and to everyone on the default transport)."""
        t0, healthy = time.perf_counter(), self.rollout.healthy_slots()
        loads: dict[int, tuple[Any, bool]] = {}
        if self.direct is not None:
            self.direct.maybe_regroup(
                self.learner,
                {i: self.rollout.handle(i) for i in healthy},
                transfers_in_flight=any(kind == "load" and info[2] for kind, info in self.pending.values()),
            )
            loads = self.send_direct(self.direct.targets(healthy))
        if len(loads) < len(healthy) or self.handle is None:
            handle = self.publish(fresh=True)
            loads |= {i: (self.rollout.handle(i).load_weights.remote(handle), False) for i in healthy if i not in loads}
        if wait:
            for i, (ref, direct) in loads.items():
                self.on_load(ref, i, t0, direct)
            return
        for i, (ref, direct) in loads.items():
            self.pending[ref] = ("load", (i, t0, direct))

    def send_direct(self, slots: list[int]) -> dict[int, tuple[Any, bool]]:
        """The learner's tensors to `slots` over the collective group (one reference, each
        worker receives them from the learner). Ray refuses the calls when it has destroyed
        the group (a failed transfer): then the object store serves everyone."""
        if not slots:
            return {}
        ref = self.learner.weights_direct.options(tensor_transport=self.direct.transport).remote()
        loads = {}
        try:
            for i in slots:
                loads[i] = (self.rollout.handle(i).load_weights_direct.remote(ref), True)
        except ValueError as e:  # "No communicators found": the group is gone
            self.say("weights_object_store", f"Ray Direct Transport: the group is gone ({describe_error(e)})")
            self.direct.lost()
        return loads

    def publish(self, fresh: bool = False) -> Any:
        """The weights in the object store: the handle every worker outside the collective
        group loads from. A sync puts the current ones (`fresh`: the learner is idle then);
        a worker that comes back between syncs (`heal`) gets the last ones put - asking the
        learner now would queue behind its step, which waits for the rollouts of the very
        workers waiting for these weights - and the current ones at the next sync."""
        if fresh or self.handle is None:
            self.handle = self.call(self.learner.publish_weights.remote(), "the learner", "`publish_weights`")
        return self.handle

    # -- requests ----------------------------------------------------------------------------
    def request(self, chain: _Chain) -> Any:
        """The chain of one request; resolves to the buffer's (room, offered, incarnation)."""
        items = chain.act_ref = self.rollout.handle(chain.worker).act.remote(chain.payload)
        if chain.scorer is not None:
            items = chain.score_ref = self.scoring.handle(chain.scorer).score.remote(items)
        return self.buffer.add.remote(items)

    def added(self, answer: tuple[int, int, float]) -> int:
        """Book a buffer's answer to an add; returns its room."""
        free, offered, incarnation = answer
        self.offered_seen[incarnation] = max(self.offered_seen.get(incarnation, 0), offered)
        return free

    def next_scorer_slot(self) -> int | None:
        """A healthy scorer, round robin (None when the algorithm has none)."""
        healthy = self.scoring.healthy_slots()
        if not healthy:
            return None
        self.next_scorer += 1
        return healthy[self.next_scorer % len(healthy)]

    def new_request(self) -> Any:
        """A request lost with a dead actor, else the builder's next (the first one was built
        while the actors started)."""
        if self.requeued:
            return self.requeued.pop(0)
        if self.first_request is not None:
            first, self.first_request = self.first_request, None
            payload = first.result()
        else:
            payload = self.builder.new_request()
        self.drawn += self.builder.request_units(payload)
        return payload

    def launch(self, i: int, payload: Any = None) -> None:
        payload = payload if payload is not None else self.new_request()
        chain = _Chain(i, payload, self.next_scorer_slot())
        self.pending[self.request(chain)] = ("chain", chain)
        self.idle.pop(i, None)

    def in_flight(self) -> int:
        return sum(1 for kind, _ in self.pending.values() if kind == "chain")

    def room(self) -> int:
        """The buffer's room, in units of a request."""
        return self.ask_buffer("room")

    def refill(self, free: int) -> None:
        """Launch idle workers while the buffer has room for their requests."""
        if not self.builder.collecting() or (self.scoring.slots and not self.scoring.healthy_slots()):
            return  # nothing to collect, or every scorer is being restarted
        per = self.builder.request_size()
        room = free - self.in_flight() * per
        for i in sorted(self.idle, key=self.idle.__getitem__):  # oldest first: requests follow each worker's speed
            if not self.rollout.healthy(i):
                continue
            if room < per and not (self.builder.partial_requests and room > 0 and self.in_flight() == 0):
                break
            self.launch(i)
            room -= per

    def on_chain(self, chain: _Chain, ref: Any, stopping: bool) -> None:
        try:
            free = self.added(self.call(ref, self.rollout.name(chain.worker), "a rollout request"))
        except RayActorError as e:
            return self.recover(chain, e, stopping)
        except RayTaskError as e:
            raise self.actor_failure(e, chain) from None
        self.samples += self.builder.request_units(chain.payload)
        self.requests_done += 1
        self.served[chain.worker] = self.served.get(chain.worker, 0) + 1
        self.mark("first_rollouts")
        if not self.accepted_any:
            self.check_trainable()
        self.idle[chain.worker] = time.perf_counter()
        if not stopping:
            self.refill(free)

    def recover(self, chain: _Chain, err: RayActorError, stopping: bool) -> None:
        """An actor of the request's chain died: count the death once, re-queue the request
        (it is sent again, first, to a healthy worker), and let the pool probe and restart
        the dead one (`heal`)."""
        slot, pool = self.rollout.owner_of(err), self.rollout
        if slot is None and chain.scorer is not None:
            slot, pool = self.scoring.owner_of(err), self.scoring
        if slot is None and self.is_buffer(err):
            self.recover_buffer(err)  # the worker is fine: it goes back to work
        elif slot is None:
            raise self.actor_failure(err, chain) from None
        else:
            pool.mark_dead(slot, err)
        if pool is not self.rollout or slot is None:
            if self.rollout.healthy(chain.worker):
                self.idle[chain.worker] = time.perf_counter()
        self.requeued.append(chain.payload)
        self.requeued_units += self.builder.request_units(chain.payload)
        if stopping:  # the final drain: finish the lost request now, on any healthy worker
            self.finish_requeued()

    def finish_requeued(self) -> None:
        """At the end: the requests lost with a dead actor, on a healthy worker (and scorer)."""
        while (
            self.requeued and self.rollout.healthy_slots() and (self.scoring.healthy_slots() or not self.scoring.slots)
        ):
            chain = _Chain(self.rollout.healthy_slots()[0], self.requeued.pop(0), self.next_scorer_slot())
            try:
                self.added(self.call(self.request(chain), self.rollout.name(chain.worker), "a rollout request"))
                self.samples += self.builder.request_units(chain.payload)
            except RayActorError as e:
                self.recover(chain, e, stopping=False)

    def heal(self) -> None:
        """Dead actors that are due are probed; the ones back get the current weights (queued
        ahead of their next request) and go back to work."""
        for i in self.rollout.recover():
            if self.direct is not None:
                self.direct.forget(i)  # a new process: not in the collective group any more
            self.pending[self.rollout.handle(i).load_weights.remote(self.publish())] = (
                "load",
                (i, time.perf_counter(), False),
            )
            self.idle[i] = 0.0
            if self.cfg.rollout.elastic():
                self.place(i)
        self.scoring.recover()

    def scale(self) -> None:
        """The elastic pool (rollout.max_workers), every rollout.scale_interval_s: a dead worker
        whose node left the cluster leaves the pool (its request was re-queued when it died:
        one path with any death); while every worker serves and the cluster has free resources
        for more, new ones start (they get the current weights before their first request,
        `heal`). Ray sends no node events: the driver looks."""
        now = time.perf_counter()
        if not self.cfg.rollout.elastic() or now < self.next_scale:
            return
        self.next_scale = now + self.cfg.rollout.scale_interval_s
        pool, alive = self.rollout, {n["NodeID"] for n in ray.nodes() if n.get("Alive")}
        for i in pool.active():
            s = pool.slots[i]
            if s.joining and time.monotonic() - s.died_at > JOIN_TIMEOUT_S:
                pool.retire(i, f"Ray could not place it in {JOIN_TIMEOUT_S:g} s")
            elif not pool.healthy(i) and not s.joining and s.node is not None and s.node not in alive:
                pool.retire(i, f"its node {s.node[:12]} left the cluster")
                self.idle.pop(i, None)
                self.events.worker_status(pool.name(i), healthy=False, left=True)  # the dashboard's table
        if any(not pool.healthy(i) for i in pool.active()):
            return  # joining or restarting workers take their resources first
        more = workers_that_fit(
            ray.available_resources(), worker_need(self.cfg), self.cfg.rollout.max_workers - len(pool.active())
        )
        if more > 0:
            slots = pool.grow(more)
            self.say(
                "worker_starting",
                f"the cluster has room for {more} more rollout worker(s): starting "
                f"{', '.join(pool.name(i) for i in slots)} (rollout.max_workers={self.cfg.rollout.max_workers})",
            )

    def recover_learner(self, err: RayActorError, bar: Any) -> None:
        """The learner died: Ray restarts it and it loads the run's newest checkpoint. Wait
        for it, take its step as the run's, send its weights to the workers, and go on; the
        steps since that checkpoint are taken again (the driver's data position is unaffected)."""
        self.learner_deaths += 1
        self.doomed = None
        lost_at = self.version
        if self.learner_deaths > MAX_RESTARTS:
            raise RunError(
                f"the learner died {self.learner_deaths} times (last: {describe_error(err)}); its checkpoints are in "
                f"{self.ctx.run_dir / 'checkpoints'}: continue with `shoal train CONFIG --resume {self.ctx.run_id}`"
            ) from None
        t0 = time.perf_counter()
        if self.direct is not None:
            self.direct.lost()  # formed again with the learner that takes over (`sync`)
        if dead_for_good(self.learner):  # Ray killed it after a failed direct transfer (services.direct)
            self.say(
                "actor_died",
                f"learner died at step {lost_at} and Ray will not restart it ({describe_error(err)}); starting a new "
                "learner from the run's newest checkpoint",
            )
            self.learner = self.new_learner(replacing=True)
            self.nodes.pop("the learner", None)
        else:
            self.say("actor_died", f"learner died at step {lost_at} ({describe_error(err)}); Ray restarts it")
        self.wait_back(self.learner, "the learner")
        self.version = self.call(self.learner.policy_version.remote(), "the learner", "`policy_version`")
        source = (
            self.call(self.learner.restored.remote(), "the learner", "`restored`") or "the start (no checkpoint yet)"
        )
        # A checkpoint can be newer than the driver's step: the learner saved one and died
        # before the driver heard of that step.
        again = retaken(self.version, lost_at)
        self.say(
            "actor_restored",
            f"learner is back at step {self.version} from {source} after {time.perf_counter() - t0:.1f} s; {again}",
        )
        bar.n = self.version
        bar.refresh()
        self.last_step_t = time.perf_counter()
        self.handle = None  # the old weights' objects died with the old learner
        self.sync(wait=True)
        if self.version < self.cfg.run.total_steps:
            self.pending[self.train_request()] = ("learn", None)

    def wait_back(self, actor: Any, who: str) -> None:
        """Until a restarting actor answers a ping (RunError past max(stall_timeout_s, 60 s))."""
        deadline = time.perf_counter() + max(self.cfg.run.stall_timeout_s, 60.0)
        while True:
            try:
                ray.get(actor.ping.remote(), timeout=30)
                return
            except (RayActorError, ray.exceptions.GetTimeoutError) as e:
                if time.perf_counter() > deadline:
                    raise RunError(f"{who} did not come back ({describe_error(e)})") from None
                time.sleep(1.0)

    # -- the replay buffer -----------------------------------------------------------------
    def is_buffer(self, err: BaseException) -> bool:
        return getattr(err, "actor_id", None) == self.buffer._actor_id.hex()

    def is_learner(self, err: BaseException) -> bool:
        return getattr(err, "actor_id", None) == self.learner._actor_id.hex()

    def ask_buffer(self, method: str, *args: Any) -> Any:
        """The replay buffer's answer to `method(*args)`; a buffer that died meanwhile is
        brought back first (`recover_buffer`) and asked again."""
        for _ in range(MAX_RESTARTS + 2):
            try:
                return self.call(getattr(self.buffer, method).remote(*args), "the replay buffer", f"`{method}`")
            except RayActorError as e:
                if not self.is_buffer(e):
                    raise
                self.recover_buffer(e)
        raise RunError(f"the replay buffer keeps failing `{method}`; see the run's errors.log")

    def recover_buffer(self, err: BaseException) -> None:
        """The replay buffer died: Ray restarts it and it comes back from its newest snapshot
        (BufferActor). Whichever call meets the death first handles it, once (an incarnation
        is known by its start time); the items acknowledged after that snapshot are counted
        as lost (`replay_lost`). Requests in flight to it are re-queued by their callers."""
        if not self.cfg.run.replay_snapshot_interval_s or self.buffer_deaths >= MAX_RESTARTS:
            raise self.actor_failure(err) from None  # not restartable: one line naming --resume
        t0, died = time.perf_counter(), f"replay buffer died ({describe_error(err)})"
        try:  # down now: a new death, said at once; up: maybe one handled already (same incarnation)
            ray.get(self.buffer.ping.remote(), timeout=0.5)
            said = False
        except (RayActorError, ray.exceptions.GetTimeoutError):
            self.say("actor_died", f"{died}; Ray restarts it")
            said = True
        self.wait_back(self.buffer, "the replay buffer")
        incarnation = self.call(self.buffer.ready_time.remote(), "the replay buffer", "`ready_time`")
        if incarnation == self.buffer_incarnation:
            return  # this death was handled already
        if not said:
            self.say("actor_died", f"{died}; Ray restarted it")
        dead, self.buffer_incarnation = self.buffer_incarnation, incarnation
        self.buffer_deaths += 1
        back = self.call(self.buffer.came_back_from.remote(), "the replay buffer", "`came_back_from`") or {}
        self.buffer_comebacks.append((dead, int(back.get("offered", 0))))
        source = (
            f"a snapshot taken {back['age_s']:.1f} s before its restart ({back['size']} items)"
            if back.get("snapshot")
            else f"nothing (no snapshot yet; {back.get('size', 0)} items of the data set)"
        )
        self.say(
            "actor_restored",
            f"replay buffer is back after {time.perf_counter() - t0:.1f} s from {source}; "
            f"{self.replay_lost()} item(s) added since are lost (summary: replay_lost)",
        )
        self.last_step_t = time.perf_counter()

    def replay_lost(self) -> int:
        """Items (rollouts or episodes) the buffer acknowledged after the snapshot it came back
        from: trained on by no one. Items sampled after that snapshot come back with it and
        may be trained on twice (at least once, never lost silently)."""
        return sum(max(0, self.offered_seen.get(dead, restored) - restored) for dead, restored in self.buffer_comebacks)

    def actor_failure(self, err: Exception, chain: _Chain | None = None) -> RunError:
        """An error raised inside an actor (or an actor lost that no pool owns): one line
        naming the actor and the cause for the user; the traceback goes to the run's log."""
        cause = getattr(err, "cause", None) or err
        if isinstance(cause, RunError):
            return cause
        fn = getattr(err, "function_name", "") or ""
        if self.is_buffer(err):
            return RunError(
                f"the replay buffer died ({describe_error(err)}); the learner's checkpoints are in "
                f"{self.ctx.run_dir / 'checkpoints'}: continue with `shoal train CONFIG --resume {self.ctx.run_id}`"
            )
        if "WorkerActor" in fn:
            who = f"rollout-{chain.worker}" if chain is not None else "a rollout worker"
        elif "ScorerActor" in fn:
            who = f"reward-{chain.scorer}" if chain is not None and chain.scorer is not None else "a reward scorer"
        elif "BufferActor" in fn:
            who = "the replay buffer"
        elif "LearnerActor" in fn:
            who = "the learner"
        else:
            who = fn or "an actor"
        log = log_error(self.ctx.run_dir, who, err)
        lines = str(cause).strip().splitlines()
        return RunError(
            f"{who} failed: {type(cause).__name__}: {lines[-1][:300] if lines else ''} (traceback in {log})"
        )

    # -- watchdogs ---------------------------------------------------------------------------
    def rejected(self) -> int:
        """Rollouts the scoring stages rejected so far (non-finite scores; a restarted
        actor's count starts again at 0)."""
        return sum(self.gather(self.rollout if self.colocated else self.scoring, "rejected"))

    def gather(self, pool: ActorPool, method: str) -> list[Any]:
        """`method()` of every healthy actor of `pool`; one that dies meanwhile is left out."""
        out = []
        for i in pool.healthy_slots():
            try:
                out.append(self.call(getattr(pool.handle(i), method).remote(), pool.name(i), f"`{method}`"))
            except RayActorError as e:
                pool.mark_dead(i, e)
        return out

    def check_trainable(self) -> None:
        """Until the replay first accepts something: stop, saying why, when it never will."""
        added = self.ask_buffer("stats").get("buffer/added", 1.0)
        if added > 0 or self.version > 0:
            self.accepted_any = True
            return
        reason = untrainable_reason(self.requests_done, added, self.rejected())
        if reason:
            raise RunError(reason)

    def check_overdue(self) -> None:
        """Rollout requests past run.actor_timeout_s: the stage still working on them is
        restarted, so they fail and are re-queued (`recover`); a hung engine is treated as a
        dead one. Ray runs an actor's calls in submission order, so one stuck worker holds up
        the scorer and buffer calls queued behind its output: the most upstream stuck stage is
        restarted (workers, else scorers), and every other request gets a fresh deadline. A
        request stuck in the buffer's add ends the run."""
        limit, now = self.cfg.run.actor_timeout_s, time.perf_counter()
        pending = [info for kind, info in self.pending.values() if kind == "chain"]
        chains = {id(c): c for c in pending if not c.overdue}
        if len(chains) < len(pending):  # a restarted stage's requests have not failed yet: the
            for c in chains.values():  # others' deadlines start when they have
                c.started = now
            return
        late = [chains[k] for k in overdue({k: c.started for k, c in chains.items()}, limit, now)]
        if not late:
            return
        stuck = {(self.rollout, c.worker) for c in late if not ray.wait([c.act_ref], timeout=0)[0]}
        if not stuck:
            stuck = {
                (self.scoring, c.scorer)
                for c in late
                if c.score_ref is not None and not ray.wait([c.score_ref], timeout=0)[0]
            }
        if not stuck:
            raise RunError(timeout_message("the replay buffer", "`add`", limit, self.nodes.get("the replay buffer")))
        for pool, slot in sorted(stuck, key=lambda ps: (ps[0].kind, ps[1])):
            node = self.nodes.get(pool.name(slot))
            self.say(
                "actor_timeout",
                f"{pool.name(slot)}{f' on node {node}' if node else ''} has not finished a request in {limit:g} s "
                "(run.actor_timeout_s): restarting it; its requests are sent again",
            )
            ray.kill(pool.handle(slot), no_restart=False)
        for c in chains.values():
            if (self.rollout, c.worker) in stuck or (self.scoring, c.scorer) in stuck:
                c.overdue = True  # fails with its actor
            else:
                c.started = now  # may have been queued behind a stuck one

    def check_stalled(self) -> None:
        """No learner step for run.stall_timeout_s: stop with what the run knows instead of hanging."""
        limit, idle = self.cfg.run.stall_timeout_s, time.perf_counter() - self.last_step_t
        if not limit or idle < limit:
            return
        stats = self.ask_buffer("stats")
        raise RunError(
            f"no learner step for {idle:.0f} s (run.stall_timeout_s={limit:g}) at policy_version {self.version}: "
            f"{self.requests_done} requests came back, the replay holds {stats.get('buffer/size', 0):g} "
            f"(dropped stale {stats.get('buffer/dropped_stale', 0):g}), {self.rejected()} rollouts rejected, "
            f"{self.in_flight()} requests in flight; see `shoal metrics --follow` and the run's events"
        )

    # -- main loop --------------------------------------------------------------------------
    def train_request(self) -> Any:
        """The next learner step; the step that ends with a periodic checkpoint carries the
        driver's state (the learner adds the replay's snapshot)."""
        every = self.cfg.run.checkpoint_interval
        state = self.driver_state() if every and (self.version + 1) % every == 0 else None
        return self.learner.train_step.remote(self.buffer, self.builder.collecting(), state)

    # -- checkpoints -------------------------------------------------------------------------
    def driver_state(self) -> dict[str, Any]:
        """The driver's side of a checkpoint: data position and counters. Requests in flight
        when it is taken are not in it: a resumed run draws new prompts instead."""
        return {
            "builder": self.builder.state_dict(),
            "samples": self.samples,
            "drawn": self.drawn,
            "before": self.before,
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint's driver state (the learner restored itself from
        run.resume_from): the replay's snapshot, the counters, the start evaluation."""
        lost = ["the requests in flight when the checkpoint was taken"] if state else ["the data position"]
        if state.get("buffer") is not None:
            self.call(self.buffer.restore.remote(state["buffer"]), "the replay buffer", "`restore`")
        elif state:
            lost.append("the replay's contents (this replay takes no snapshot)")
        self.version = self.call(self.learner.policy_version.remote(), "the learner", "`policy_version`")
        self.samples, self.drawn = int(state.get("samples", 0)), int(state.get("drawn", 0))
        self.before = state.get("before")
        resumed(self.ctx, self.version, str(self.cfg.run.resume_from), lost)

    def save(self) -> str | None:
        """A checkpoint now (the end of the run, or an interrupt): learner, driver, replay."""
        state = {**self.driver_state(), "buffer": self.ask_buffer("snapshot")}
        path = self.call(self.learner.checkpoint.remote(True, state), "the learner", "`checkpoint`")
        self.version = self.call(self.learner.policy_version.remote(), "the learner", "`policy_version`")
        return path

    def finish(self, last: dict[str, float], progress: bool = True, stop: Any = None) -> dict[str, float]:
        """The run's end after `run`: the start evaluation if it is still out, then the final
        checkpoint. A learner that dies meanwhile (the checkpoint call meets it dead, or Ray
        restarted it unnoticed and it answers from an older step) comes back from its newest
        checkpoint - the final one, if it got written - and the steps it lost are taken again
        (`run`) before the checkpoint is taken again. Returns the last step's metrics."""
        if self.before is None:
            self.finish_start_evaluation(self.before_refs if self.before_refs is not None else self.evaluate_start())
        while True:
            reached = self.version
            try:
                self.save()
            except RayActorError as e:
                if not self.is_learner(e):
                    raise
                err: BaseException = e
            else:
                if self.version >= reached:
                    return last
                err = RuntimeError(f"it came back unnoticed, at step {self.version}")
                self.version = reached  # the step the run had reached: what recover_learner reports as lost
            with tqdm(total=self.cfg.run.total_steps, initial=self.version, disable=True) as bar:
                self.recover_learner(err, bar)
            if self.version < self.cfg.run.total_steps:
                last = self.run(progress, stop) or last

    def run(self, progress: bool = True, stop: Any = None) -> dict[str, float]:
        total = self.cfg.run.total_steps
        bar = tqdm(total=total, initial=self.version, desc="learner steps", disable=not progress)
        busy = {info.worker for kind, info in self.pending.values() if kind == "chain"}
        self.idle.update({i: 0.0 for i in self.rollout.healthy_slots() if i not in busy and i not in self.idle})
        self.refill(self.room())
        if self.version < total and all(kind != "learn" for kind, _ in self.pending.values()):
            self.pending[self.train_request()] = ("learn", None)
        last: dict[str, float] = {}
        t_start = time.perf_counter()
        self.last_step_t = time.perf_counter()
        try:
            while True:
                last = self.steps(total, bar, stop, t_start) or last
                if not self.drain(bar):  # the learner died in the final sync: the lost steps again
                    break
        finally:
            bar.close()  # an error line starts on a line of its own
        if self.direct is not None:
            self.direct.close()
        return last

    def steps(self, total: int, bar: Any, stop: Any, t_start: float) -> dict[str, float]:
        """The event loop until the learner has taken step `total`; the last step's metrics."""
        last: dict[str, float] = {}
        while self.version < total:
            if stop is not None:
                stop.check()  # between events: the learner's step in flight finishes in its actor
            self.check_stalled()
            self.check_overdue()
            self.heal()
            self.scale()
            self.ctx.tick()
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
                try:
                    m = learner_result(ready[0])
                except RayActorError as e:
                    if self.is_buffer(e):  # the replay buffer died under the learner: its step again
                        self.recover_buffer(e)
                        self.pending[self.train_request()] = ("learn", None)
                    elif self.is_learner(e):
                        self.recover_learner(e, bar)
                    else:
                        raise self.actor_failure(e) from None
                    continue
                last = self.on_learn(m, bar, t_start)
        return last

    def on_learn(self, m: dict[str, float], bar: Any, t_start: float) -> dict[str, float]:
        self.version, self.last_step_t = int(m["learner/policy_version"]), time.perf_counter()
        self.mark("first_step")
        bar.update(1)
        sps = self.samples / (time.perf_counter() - t_start)
        bar.set_postfix(
            **self.builder.progress_fields(m), samples_s=f"{sps:.1f}", lag=f"{m.get('learner/policy_lag_mean', 0):.2f}"
        )
        self.events.log({"rollout/total_samples_per_s": sps}, step=self.version)
        if self.before_refs is None and self.before is None:  # queued on the workers behind their
            self.before_refs = self.evaluate_start()  # requests, ahead of any new weights
        elif (
            self.before is None
            and self.before_refs
            and not ray.wait(self.before_refs, num_returns=len(self.before_refs), timeout=0)[1]
        ):
            self.finish_start_evaluation(self.before_refs)  # ready: kept in checkpoints from now on
        if self.version % self.cfg.rollout.sync_interval == 0:
            try:
                self.sync()
            except RayActorError as e:  # the learner died right after this step
                if not self.is_learner(e):
                    raise
                self.recover_learner(e, bar)  # it sends the next step itself
                return m
        if self.version < self.cfg.run.total_steps:
            self.pending[self.train_request()] = ("learn", None)
        if self.idle and self.in_flight() == 0:
            self.refill(self.room())
        return m

    def on_load(self, ref: Any, worker: int, t0: float, direct: bool = False) -> None:
        try:
            out = self.call(ref, self.rollout.name(worker), "`load_weights`")
        except RayActorError as e:
            if self.rollout.owner_of(e) is None:  # the learner whose weights it waited for died:
                return  # its successor sends new ones (recover_learner)
            self.rollout.mark_dead(worker, e)  # its next request fails too; it gets weights when back
            return
        except RayTaskError as e:
            if isinstance(e.cause, ray.exceptions.ObjectLostError):  # the weights' owner (a learner) died:
                return  # the restarted learner sends new ones
            if direct:  # Ray kills both ends of a failed collective transfer (services.direct)
                self.direct.failed()
                self.doomed = e
                self.say(
                    "weights_object_store",
                    f"{self.rollout.name(worker)}: a weight transfer over Ray Direct Transport failed "
                    f"({describe_error(e)}); Ray kills the learner and this worker for it: both are replaced, the "
                    "group is formed again",
                )
                return
            raise self.actor_failure(e) from None
        self.events.log(
            {
                "weights/sync_s": time.perf_counter() - t0,
                "weights/load_s": out.get("weights/load_s", 0.0),
                "weights/direct": float(direct),
            },
            step=self.version,
        )

    def drain(self, bar: Any) -> bool:
        """Finish in-flight requests, then give every worker the final weights. True when the
        learner died meanwhile (a crash: Ray restarts it; a failed direct transfer: Ray kills it
        for good) and came back from a checkpoint before the last step: the run goes on to take
        the lost steps again."""
        for ref, (kind, info) in list(self.pending.items()):
            if kind == "chain":
                self.on_chain(info, ref, stopping=True)
            elif kind == "load":
                self.on_load(ref, *info)
        self.pending.clear()
        self.finish_requeued()
        try:
            self.sync(wait=True)
            at = self.call(self.learner.policy_version.remote(), "the learner", "`policy_version`")
        except RayActorError as e:  # the learner died (Ray restarts it, or killed it: doomed)
            if not self.is_learner(e):
                raise
            err: BaseException = e
        else:
            if self.doomed is not None and self.await_kill():
                err = self.doomed
            elif at < self.version:  # Ray restarted it after its last step: it holds a checkpoint's weights
                err = RuntimeError(f"it came back unnoticed, at step {at}")
            else:
                return False
        self.recover_learner(err, bar)  # back, with the final weights synced (or the lost steps to take)
        return self.version < self.cfg.run.total_steps or self.drain(bar)

    def await_kill(self, timeout_s: float = 60.0) -> bool:
        """After a failed direct transfer Ray kills the learner asynchronously (its failure
        monitor polls every second): wait for that before the run's last calls to it. False
        if it still lives after `timeout_s` (the transfer failed without costing it)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if dead_for_good(self.learner):
                return True
            try:
                ray.get(self.learner.ping.remote(), timeout=1.0)
            except RayActorError:
                return True
            except ray.exceptions.GetTimeoutError:
                pass
            time.sleep(0.2)
        self.say("actor_alive", f"the learner lives {timeout_s:g} s after a failed direct transfer: the run ends")
        self.doomed = None
        return False

    # -- evaluation and summary -------------------------------------------------------------
    def evaluate_start(self) -> list[Any]:
        """Launch the evaluation requests; returns their refs. Actor calls run in submission
        order, so requests launched now see the weights the workers hold now, whatever is sent
        after: the "before" evaluation is launched when the first learner step returns, before
        the first new weights go out, so it does not hold up the first batch."""
        workers, scorers = self.rollout.handles(), self.scoring.handles()
        requests = self.builder.eval_requests(len(workers))
        outputs = [workers[i].evaluate.remote(r) for i, r in enumerate(requests)]
        if self.scoring.slots:
            outputs = [scorers[0].score.remote(o) for o in outputs]
        return outputs

    def evaluate_finish(self, refs: list[Any]) -> dict[str, float]:
        return self.builder.summarize_eval(self.call(refs, "the rollout workers", "the evaluation")) if refs else {}

    def finish_start_evaluation(self, refs: list[Any]) -> None:
        """`before` from the start evaluation's answers. A worker or scorer that died in it took
        its part along: the workers hold newer weights by now, so it is not run again; the
        summary has the start values of the parts that came back, or none."""
        outputs: list[Any] = []
        for ref in refs:
            try:
                outputs.append(self.call(ref, "the rollout workers", "the start evaluation"))
            except RayActorError as e:  # an old answer, maybe: the pool saw the death (its chain failed)
                who = self.evaluator(e, mark_dead=False)
                if who is None:
                    raise
                self.say(
                    "evaluation_lost",
                    f"{who} died in the start evaluation ({describe_error(e)}); the workers hold newer weights now, so "
                    f"it is not run again: the summary's start values come from {len(outputs)} of {len(refs)} parts",
                )
        self.before = self.builder.summarize_eval(outputs) if outputs else {}

    def evaluate(self) -> dict[str, float]:
        """The final evaluation. A worker or scorer that dies in it is brought back (`heal`,
        the final weights first) and the evaluation runs again."""
        while True:
            try:
                return self.evaluate_finish(self.evaluate_start())
            except RayActorError as e:
                who = self.evaluator(e)
                if who is None:
                    raise
                self.say(
                    "actor_died",
                    f"{who} died in the final evaluation ({describe_error(e)}); it runs again once a worker is back",
                )
            self.await_evaluators()

    def evaluator(self, err: RayActorError, mark_dead: bool = True) -> str | None:
        """The rollout worker or scorer `err` is about, marked dead if `mark_dead` (the pool
        probes it and brings it back); None if it is neither."""
        for pool in (self.rollout, self.scoring):
            slot = pool.owner_of(err)
            if slot is not None:
                if mark_dead:
                    pool.mark_dead(slot, err)
                return pool.name(slot)
        return None

    def await_evaluators(self) -> None:
        """Until a rollout worker (and a scorer, where the run has them) is healthy and holds
        the newest weights; RunError past max(stall_timeout_s, 60 s)."""
        deadline = time.monotonic() + max(self.cfg.run.stall_timeout_s, 60.0)
        while True:
            for ref, (kind, info) in list(self.pending.items()):
                if kind == "load":  # the weights heal sent the workers that came back (one that fails is dead again)
                    del self.pending[ref]
                    self.on_load(ref, *info)
            if self.rollout.healthy_slots() and (not self.scoring.slots or self.scoring.healthy_slots()):
                return
            if time.monotonic() > deadline:
                raise RunError("no rollout worker came back for the final evaluation; see the run's log")
            time.sleep(0.5)
            self.heal()

    def counters(self, last: dict[str, float]) -> dict[str, Any]:
        stats = self.ask_buffer("stats")
        rejected = self.rejected()
        dropped = sum(int(s.get("dropped_episodes", 0)) for s in self.gather(self.rollout, "status"))
        return {
            "learner_steps": self.version,
            self.builder.unit: self.samples,
            **self.builder.counters(stats, rejected, dropped),
            "actor_deaths": {
                "rollout": self.rollout.deaths(),
                "reward": self.scoring.deaths(),
                "learner": self.learner_deaths,
                "buffer": self.buffer_deaths,
            },
            "replay_lost": self.replay_lost(),
            "replay_snapshot_s": stats.get("buffer/snapshot_s"),
            "requeued": self.requeued_units,
            "drawn": self.drawn,
            "replay_added": stats.get("buffer/added"),
            "replay_refused": stats.get("buffer/rejected_full"),
            "first_step_s": self.startup.get("first_step"),
            "startup_s": dict(sorted({**self.startup, **self.actors_ready()}.items(), key=lambda kv: kv[1])),
            **self.builder.final_metrics(last),
        }

    def actors_ready(self) -> dict[str, float]:
        """When the last actor of each role, and of all (`actors_ready`), finished its
        constructor, in seconds since the command started."""
        roles = {
            "workers": self.rollout.handles(),
            "scorers": self.scoring.handles(),
            "buffer": [self.buffer],
            "learner": [self.learner],
        }
        ready = {
            f"{role}_ready": round(
                max(self.call([a.ready_time.remote() for a in actors], f"the {role}", "`ready_time`"))
                - PROCESS_STARTED,
                2,
            )
            for role, actors in roles.items()
            if actors
        }
        return {**ready, "actors_ready": max(ready.values())}


def retaken(back_at: int, lost_at: int) -> str:
    """What a learner back at step `back_at` after dying at `lost_at` costs the run."""
    if back_at >= lost_at:
        return "no step is lost"
    return (
        f"step {lost_at} is taken again" if back_at + 1 == lost_at else f"steps {back_at + 1}-{lost_at} are taken again"
    )


def start_failure(ctx: RunContext, err: Exception) -> RunError:
    """An actor that failed in its constructor: one line, the traceback in the run's log."""
    log = log_error(ctx.run_dir, "actor start-up", err)
    return RunError(f"the run's actors did not start: {describe_error(err)} (traceback in {log})")


def learner_result(ref: Any) -> dict[str, float]:
    """A train_step's metrics; a RunError raised in the learner reaches the user as itself."""
    try:
        return ray.get(ref)
    except RayTaskError as e:
        if isinstance(e.cause, RunError):
            raise e.cause from None
        raise


def precheck_ray(cfg: ShoalConfig) -> None:
    """The Ray checks that need no Ray: the cluster address answers, a local Ray fits the
    machine (one line in a second or two, before the run is registered)."""
    address = cfg.run.ray_address or os.environ.get("RAY_ADDRESS")
    if address:
        check_ray_address(address)
    elif not ray.is_initialized():
        local_cpus(cfg, scorer_placement(cfg, "local"))


def run_ray(cfg: ShoalConfig, progress: bool = True, ctx: RunContext | None = None) -> dict[str, Any]:
    precheck_ray(cfg)
    ctx = ctx or open_run(cfg)  # first: a metrics store that does not answer fails fast
    status, summary, started_ray = "failed", {}, None
    try:
        builder = make_builder(cfg)
        first_request = None if cfg.run.resume_from else prefetch_request(builder)  # overlaps with Ray's start
        started_ray = init_ray(cfg)
        ray_up = round(time.time() - PROCESS_STARTED, 2)
        check_resources(
            cfg, scorer_placement(cfg, started_ray), cfg.run.resource_timeout_s if started_ray == "joined" else 0.0
        )
        print(
            f"[shoal] run {ctx.run_id}: {cfg.rollout.num_workers} rollout worker(s), metrics at {redact_url(ctx.redis_url)}",
            flush=True,
        )
        try:
            prog = RayProgram(cfg, ctx, started_ray, builder, first_request)
        except (RayActorError, RayTaskError) as e:
            raise start_failure(ctx, e) from None
        prog.startup["ray_up"] = ray_up
        try:
            try:
                with stop_on_signals() as stop:
                    last = prog.finish(prog.run(progress, stop), progress, stop)
            except KeyboardInterrupt:
                status = "interrupted"
                path = uninterruptible(prog.save)
                summary = {"interrupted_at": prog.version, "checkpoint": path}
                raise Interrupted(ctx.run_id, prog.version, cfg.run.total_steps, path) from None
            summary = build_summary(ctx, prog.before, prog.evaluate(), prog.counters(last))
        except (RayActorError, RayTaskError) as e:  # whichever call met the failure first: one line
            raise prog.actor_failure(e) from None
        status = "finished"
        return summary
    finally:
        close_run(ctx, status, summary)
        if started_ray:
            ray.shutdown()
