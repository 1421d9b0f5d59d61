"""Weight broadcast: how the learner's VersionedWeights reach every rollout worker.

One interface (`WeightTransport` in shoal/core.py), versioned payloads, one publish per
sync (the lesson of OpenRLHF's per-parameter RPCs):

- `InProcessTransport`: the object itself (in-process runs and tests).
- `ObjectStoreTransport`: one `ray.put` of the whole VersionedWeights on the learner's node;
  the handle is `[ObjectRef]` (a list, so Ray does not resolve it on the way) and each worker
  `ray.get`s it. Runs everywhere Ray runs; right for CPU clusters and small models. With
  `RAY_ENABLE_ZERO_COPY_TORCH_TENSORS=1` (set for Shoal's actors) gets are zero-copy reads.

With `rollout.weight_transport: rdt` the same VersionedWeights move learner -> worker over a
collective group with Ray Direct Transport (gloo on CPU, nccl on GPUs): the Ray program does
that itself (`services/direct.py`, `LearnerActor.weights_direct`), because the tensors travel
as a call's argument, not through a handle; workers outside the group load through the object
store, so `rdt` publishes here too.
"""

from __future__ import annotations

import os
from typing import Any

from shoal.types import VersionedWeights


class InProcessTransport:
    name = "in_process"

    def publish(self, weights: VersionedWeights) -> Any:
        return weights

    def fetch(self, handle: Any) -> VersionedWeights:
        return handle


class ObjectStoreTransport:
    name = "object_store"

    def publish(self, weights: VersionedWeights) -> Any:
        import warnings

        import ray

        with warnings.catch_warnings():
            # Ray warns on every first zero-copy put that modifiable tensors may be corrupted:
            # these are detached, contiguous CPU copies the learner never writes (get_weights).
            warnings.filterwarnings("ignore", message="Zero-copy tensor serialization")
            return [ray.put(weights)]

    def fetch(self, handle: Any) -> VersionedWeights:
        import ray

        weights = ray.get(handle[0])
        if not isinstance(weights, VersionedWeights):
            raise TypeError(f"weight handle resolved to {type(weights).__name__}, expected VersionedWeights")
        return weights


def make_transport(name: str) -> Any:
    """The transport of `publish_weights` / `load_weights`. With `rdt` the Ray program moves
    the tensors over the collective group itself (`LearnerActor.weights_direct`); workers not
    in the group (joined or restarted since it was formed) get them through the object store."""
    transports = {"object_store": ObjectStoreTransport, "in_process": InProcessTransport, "rdt": ObjectStoreTransport}
    if name not in transports:
        raise ValueError(f"rollout.weight_transport: unknown transport {name!r} (have: {sorted(transports)})")
    return transports[name]()


# ---- model directories by value (frozen encoders, built tiny models) -----------------------

MAX_BUNDLE_BYTES = 2 << 30


def pack_dir(path: str) -> dict[str, bytes]:
    """A model directory's files as {relative path: bytes}, to ray.put once and unpack on any
    node (the built tiny models live only on the driver's disk)."""
    from pathlib import Path

    root = Path(path)
    files = {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
    total = sum(len(b) for b in files.values())
    if total > MAX_BUNDLE_BYTES:
        raise ValueError(
            f"{path}: {total / 2**30:.1f} GiB is too large to ship by value; put it on storage every node can read and pass its path"
        )
    return files


def unpack_cached(bundle: dict[str, bytes], role: str, cache_root: str | None = None) -> str:
    """Unpack a `pack_dir` bundle once per node and content: into `<cache_root>/<role>-<sha256
    of its paths and bytes>` (cache_root: `shoal-models` under the system temporary directory),
    reused by every actor on the node that gets the same bundle - a restarted actor, the
    workers and the learner alike - so a node keeps one copy per model, not one per actor start
    (up to MAX_BUNDLE_BYTES each). Written to a private directory first and renamed into
    place, so the cached directory is complete whenever it exists, whoever wins a race."""
    import hashlib
    import shutil
    import tempfile
    from pathlib import Path

    digest = hashlib.sha256()
    for rel in sorted(bundle):
        digest.update(len(rel).to_bytes(8, "little") + rel.encode() + len(bundle[rel]).to_bytes(8, "little"))
        digest.update(bundle[rel])
    root = Path(cache_root or Path(tempfile.gettempdir()) / "shoal-models")
    final = root / f"{role}-{digest.hexdigest()[:32]}"
    if final.is_dir():
        return str(final)
    root.mkdir(parents=True, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{role}-", dir=root)
    try:
        unpack_dir(bundle, staging)
        os.rename(staging, final)
    except OSError:
        if not final.is_dir():  # not a lost race: a real failure (disk full, permissions)
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return str(final)


def unpack_dir(bundle: dict[str, bytes], dest: str) -> str:
    """Write a `pack_dir` bundle under `dest`; returns dest. Refuses paths that leave dest."""
    from pathlib import Path

    root = Path(dest).resolve()
    for rel, data in bundle.items():
        target = (root / rel).resolve()
        if root not in target.parents:
            raise ValueError(f"bundle path {rel!r} leaves the destination directory")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return str(root)
