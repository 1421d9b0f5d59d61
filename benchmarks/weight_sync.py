"""Weight sync: seconds to broadcast the policy from the learner to N rollout workers, against
model size and N, through both of Shoal's transports (`rollout.weight_transport`), set against
an in-process state-dict copy.

What is measured (one sync = what `RayProgram.sync(wait=True)` does):
1. object_store: a learner-like Ray actor takes the snapshot with the real
   `PPOLearner.get_weights` code (detached CPU clones of the policy state_dict ->
   VersionedWeights) and publishes it with `services.weights.ObjectStoreTransport.publish`
   (one `ray.put` of the whole object); publish_s = snapshot_s + put_s, timed inside that
   actor. The driver passes the handle ([ObjectRef]) to the first N of a pool of
   rollout-worker-like actors; each `ObjectStoreTransport.fetch`es it (`ray.get`, zero-copy
   torch tensors with RAY_ENABLE_ZERO_COPY_TORCH_TENSORS=1 from services.actors.ACTOR_ENV)
   and loads it in place with `rollout.hf_engine.HFEngine.load_weights`, as the worker actor
   does.
2. rdt (Ray Direct Transport, gloo): the learner-like actor's `weights_direct` (the same
   snapshot) is called with `tensor_transport="gloo"`; each of the N workers gets the tensors
   over one collective group (the learner and all workers, formed once) and loads them in
   place. No object store copy.
3. sync_s: the driver's wall time from asking for the weights to every worker having loaded
   (the number `weights/sync_s` reports in a run). Every worker must then serve the published
   version (checked).
4. copy_s: the in-process baseline - the same snapshot loaded into a second copy of the model
   in the learner's own process (what the in-process loop pays; no transport at all).
MB is the payload (`VersionedWeights.num_bytes()`); GB/s = MB x N / sync_s (bytes delivered
into workers per second). Each (size, N, transport) is synced `--repeats` times, alternating
transports and N within a round (object_store, rdt, copy for N=1, then N=2, ...); the table
shows medians and the fastest sync (sync min s, the cost with the least interference).

All actors live on this one node and are created with `enable_tensor_transport=True` (as the
Ray program's actors are with `rdt`; both transports go through the same actors), so the
object store "broadcast" is shared memory (plasma) and gloo goes over loopback TCP; on a
cluster each other node pulls the object over the network once, and gloo/nccl send to each
worker. Ray is started with num_cpus=8 (more logical CPUs than the 2 physical ones, as in the
Ray program on this machine) and an object store sized for the largest model. Models are
random-init Llamas from shoal.models.build_model_dir; one torch thread per process.

Run (from the repository root):
    .venv/bin/python benchmarks/weight_sync.py           # full: 0.4M..100M params, 1/2/4 workers, ~5 min
    .venv/bin/python benchmarks/weight_sync.py --quick   # smoke: 0.4M and 5M, 1/2 workers, 1 repeat
Options: --sizes (presets below), --workers 1,2,4, --transports object_store,rdt, --repeats, --out PATH.
Writes benchmarks/results/weight_sync.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import _common as C

NAME = "weight_sync"
# name -> (hidden_size, num_layers, num_heads); params ~ 10 h^2 L + 2 x 512 h.
SIZES = {
    "0.4M": (128, 2, 4),
    "5M": (256, 8, 4),
    "25M": (512, 9, 8),
    "100M": (1024, 9, 16),
}


def actor_classes() -> tuple[Any, Any]:
    """The two Ray actor classes (defined lazily so that --help does not import Ray)."""
    import ray

    @ray.remote(enable_tensor_transport=True)
    class PublisherActor:
        """LearnerActor-like: owns the policy, publishes VersionedWeights via the transport."""

        def __init__(self) -> None:
            C.single_thread_env()
            from shoal.services.weights import ObjectStoreTransport

            self.model, self.copy, self.transport = None, None, ObjectStoreTransport()

        def setup(self, model_dir: str) -> None:
            from shoal.models import load_policy

            self.model = self.copy = None
            self.model, _ = load_policy(model_dir)
            self.copy, _ = load_policy(model_dir)  # the in-process baseline's target
            self.policy_version = 0

        def publish(self) -> tuple[Any, dict[str, float]]:
            from shoal.learner.ppo.learning import PPOLearner

            self.policy_version += 1
            weights, snap_s = C.timed(lambda: PPOLearner.get_weights(self))  # the learner's own snapshot code
            handle, put_s = C.timed(lambda: self.transport.publish(weights))
            info = {"version": weights.version, "bytes": weights.num_bytes(), "snapshot_s": snap_s, "put_s": put_s}
            return handle, {**info, "publish_s": snap_s + put_s}

        def weights_direct(self) -> Any:
            """Called with tensor_transport="gloo": the tensors stay here until a worker pulls them."""
            from shoal.learner.ppo.learning import PPOLearner

            self.policy_version += 1
            return PPOLearner.get_weights(self)

        def version(self) -> int:
            return self.policy_version

        def inprocess_copy(self) -> float:
            """The baseline: snapshot + load_state_dict into a second model, in this process."""
            from shoal.learner.ppo.learning import PPOLearner

            t0 = time.perf_counter()
            self.copy.load_state_dict(PPOLearner.get_weights(self).tensors)
            return time.perf_counter() - t0

    @ray.remote(enable_tensor_transport=True)
    class LoaderActor:
        """RolloutActor-like: an HFEngine that fetches a handle and loads it in place."""

        def __init__(self) -> None:
            C.single_thread_env()
            from shoal.services.weights import ObjectStoreTransport

            self.engine, self.transport = None, ObjectStoreTransport()

        def setup(self, model_dir: str) -> None:
            from shoal.rollout.hf_engine import HFEngine

            self.engine = None
            self.engine = HFEngine(model_dir, max_new_tokens=1)

        def load_weights(self, handle: Any) -> dict[str, float]:
            weights, fetch_s = C.timed(lambda: self.transport.fetch(handle))
            _, load_s = C.timed(lambda: self.engine.load_weights(weights))
            return {"fetch_s": fetch_s, "load_s": load_s, "version": self.engine.policy_version}

        def load_direct(self, weights: Any) -> dict[str, float]:
            _, load_s = C.timed(lambda: self.engine.load_weights(weights))
            return {"fetch_s": 0.0, "load_s": load_s, "version": self.engine.policy_version}

    return PublisherActor, LoaderActor


def init_ray(largest_bytes: int) -> float:
    """Start a local Ray with an object store big enough for a few copies of the largest model."""
    import ray

    os.environ["RAY_ENABLE_ZERO_COPY_TORCH_TENSORS"] = "1"
    store = max(512 << 20, 4 * largest_bytes)
    _, secs = C.timed(
        lambda: ray.init(num_cpus=8, object_store_memory=store, include_dashboard=False, log_to_driver=False)
    )
    return secs


def one_sync(publisher: Any, workers: list[Any], transport: str) -> dict[str, Any]:
    """One sync through `transport`; the driver's wall time and the actors' timings."""
    import ray

    t0 = time.perf_counter()
    if transport == "object_store":
        handle, pub = ray.get(publisher.publish.remote())
        loads = ray.get([w.load_weights.remote(handle) for w in workers])
    else:
        ref = publisher.weights_direct.options(tensor_transport="gloo").remote()
        loads = ray.get([w.load_direct.remote(ref) for w in workers])
        pub = {"version": ray.get(publisher.version.remote()), "snapshot_s": 0.0, "put_s": 0.0, "publish_s": 0.0}
    sync_s = time.perf_counter() - t0
    bad = [x["version"] for x in loads if x["version"] != pub["version"]]
    if bad:
        raise RuntimeError(f"{transport}: workers serve versions {bad}, published {pub['version']}")
    return {**pub, "sync_s": sync_s, "fetch": [x["fetch_s"] for x in loads], "load": [x["load_s"] for x in loads]}


def summarize(
    size: str, params: int, mb: float, n: int, transport: str, syncs: list[dict[str, Any]], copy_s: float
) -> dict[str, Any]:
    """Medians over the repeats (per-worker numbers: median and max over workers first)."""
    med = lambda key: C.median([s[key] for s in syncs])
    per = lambda key, f: C.median([f(s[key]) for s in syncs])
    sync_s = med("sync_s")
    row = {
        "size": size,
        "params_m": params / 1e6,
        "mb": mb,
        "workers": n,
        "transport": transport,
        "copy_s": copy_s,
        "x_copy": sync_s / copy_s,
        "snapshot_s": med("snapshot_s"),
        "put_s": med("put_s"),
        "publish_s": med("publish_s"),
        "fetch_s": per("fetch", C.median),
        "fetch_max_s": per("fetch", max),
        "load_s": per("load", C.median),
        "load_max_s": per("load", max),
        "sync_s": sync_s,
        "sync_min_s": min(s["sync_s"] for s in syncs),
        "gb_per_s": mb * n / 1e3 / sync_s,
        "sync_s_all": [round(s["sync_s"], 4) for s in syncs],
    }
    if transport == "rdt":  # snapshot, send and receive happen inside sync_s, untimed apart
        row.update(snapshot_s=None, put_s=None, publish_s=None, fetch_s=None, fetch_max_s=None)
    return row


def start_actors(n_workers: int, transports: list[str]) -> tuple[Any, list[Any]]:
    """One publisher and n_workers loaders, reused for every size (setup() swaps the model);
    with rdt, one gloo collective group of all of them (formed once)."""
    from shoal.services.actors import ACTOR_ENV

    Publisher, Loader = actor_classes()
    opts = {"num_cpus": 1, "runtime_env": {"env_vars": ACTOR_ENV}}
    publisher, pool = Publisher.options(**opts).remote(), [Loader.options(**opts).remote() for _ in range(n_workers)]
    if "rdt" in transports:
        from ray.experimental.collective import create_collective_group

        _, secs = C.timed(lambda: create_collective_group([publisher, *pool], backend="torch_gloo"))
        print(f"[{NAME}] gloo collective group of 1 + {n_workers} actors formed in {secs:.1f} s", flush=True)
    return publisher, pool


def bench_size(
    size: str, model_dir: Path, publisher: Any, pool: list[Any], args: argparse.Namespace
) -> list[dict[str, Any]]:
    """Load this size everywhere, warm up, then sync with each (N, transport), alternating."""
    import ray

    ray.get([a.setup.remote(str(model_dir)) for a in [publisher, *pool]])
    for t in args.transports:  # warm-up: first put/get/send of this size paid
        one_sync(publisher, pool, t)
    ray.get(publisher.inprocess_copy.remote())
    syncs: dict[tuple[int, str], list] = {(n, t): [] for n in args.workers for t in args.transports}
    copies = []
    for _ in range(args.repeats):
        for n in args.workers:
            for t in args.transports:
                syncs[n, t].append(one_sync(publisher, pool[:n], t))
            copies.append(ray.get(publisher.inprocess_copy.remote()))
    params, copy_s = C.count_params(model_dir), C.median(copies)
    mb = params * 4 / 1e6
    return [summarize(size, params, mb, n, t, syncs[n, t], copy_s) for n in args.workers for t in args.transports]


COLUMNS = [
    ("size", "size", "s"),
    ("params_m", "params (M)", ".2f"),
    ("mb", "MB", ".1f"),
    ("workers", "workers", "d"),
    ("transport", "transport", "s"),
    ("publish_s", "publish s", ".3f"),
    ("fetch_s", "fetch s", ".4f"),
    ("load_s", "load s", ".3f"),
    ("sync_s", "sync s", ".3f"),
    ("sync_min_s", "sync min s", ".3f"),
    ("copy_s", "in-process copy s", ".3f"),
    ("x_copy", "sync / copy", ".2f"),
    ("gb_per_s", "GB/s", ".2f"),
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke mode: 0.4M and 5M params, 1 and 2 workers, 1 repeat")
    p.add_argument("--sizes", default=None, help=f"comma-separated presets from {list(SIZES)} (default all)")
    p.add_argument("--workers", default=None, help="comma-separated worker counts (default 1,2,4)")
    p.add_argument("--transports", default="object_store,rdt", help="comma-separated: object_store, rdt")
    p.add_argument("--repeats", type=int, default=None, help="syncs per (size, workers) (default 9)")
    p.add_argument("--out", default=None, help="JSON path (default benchmarks/results/weight_sync.json)")
    a = p.parse_args(argv)
    q = a.quick
    a.sizes = (a.sizes or ("0.4M,5M" if q else ",".join(SIZES))).split(",")
    a.workers = [int(x) for x in (a.workers or ("1,2" if q else "1,2,4")).split(",")]
    a.repeats = a.repeats or (1 if q else 9)
    a.transports = a.transports.split(",")
    for t in a.transports:
        if t not in ("object_store", "rdt"):
            p.error(f"--transports: unknown transport {t!r} (have object_store, rdt)")
    for s in a.sizes:
        if s not in SIZES:
            p.error(f"--sizes: unknown size {s!r} (have {list(SIZES)})")
    return a


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    C.single_thread_env()
    import ray

    t0, rows = time.perf_counter(), []
    with tempfile.TemporaryDirectory(prefix="shoal-bench-") as tmp:
        dirs = {s: C.build_random_model(Path(tmp) / s, *SIZES[s]) for s in args.sizes}
        largest = max(C.count_params(d) for d in dirs.values()) * 4
        ray_init_s = init_ray(largest)
        try:
            publisher, pool = start_actors(max(args.workers), args.transports)
            for size, d in dirs.items():
                print(f"[{NAME}] {size}: {C.count_params(d) / 1e6:.2f}M params, workers {args.workers} ...", flush=True)
                rows += bench_size(size, d, publisher, pool, args)
        finally:
            ray.shutdown()
    settings = {
        "workers": args.workers,
        "repeats": args.repeats,
        "ray_init_s": ray_init_s,
        "transports": args.transports,
    }
    payload = {"settings": settings, "rows": rows, "total_s": time.perf_counter() - t0}
    path = C.write_results(NAME, payload, args.quick, args.out)
    title = (
        f"Weight sync (one node): medians of {args.repeats} syncs per transport, alternated; fetch/load = median over "
        "workers; in-process copy = snapshot + load_state_dict in the learner's process"
    )
    C.report(title, C.format_table(rows, COLUMNS), path)
    return {"rows": rows, "path": str(path)}


if __name__ == "__main__":
    main()
