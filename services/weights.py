"""Weight broadcast: how the learner's VersionedWeights reach every rollout worker.

One interface (`WeightTransport` in services/core.py), versioned payloads, one publish per
sync (the lesson of OpenRLHF's per-parameter RPCs):

- `InProcessTransport`: the object itself (in-process runs and tests).
- `ObjectStoreTransport`: one `ray.put` of the whole VersionedWeights on the learner's node;
  the handle is `[ObjectRef]` (a list, so Ray does not resolve it on the way) and each worker
  `ray.get`s it. Runs everywhere Ray runs; right for CPU clusters and small models. With
  `RAY_ENABLE_ZERO_COPY_TORCH_TENSORS=1` (set for Shoal's actors) gets are zero-copy reads.

For multi-GPU clusters the same VersionedWeights can move GPU-to-GPU with Ray Direct
Transport (`@ray.method(tensor_transport="nccl")`) or as bucketed NCCL broadcasts; those plug
in here as further transports (not shipped yet: `rollout.weight_transport` lists what is).
"""

from __future__ import annotations

from typing import Any

from services.types import VersionedWeights


class InProcessTransport:
    name = "in_process"

    def publish(self, weights: VersionedWeights) -> Any:
        return weights

    def fetch(self, handle: Any) -> VersionedWeights:
        return handle


class ObjectStoreTransport:
    name = "object_store"

    def publish(self, weights: VersionedWeights) -> Any:
        import ray

        return [ray.put(weights)]

    def fetch(self, handle: Any) -> VersionedWeights:
        import ray

        weights = ray.get(handle[0])
        if not isinstance(weights, VersionedWeights):
            raise TypeError(f"weight handle resolved to {type(weights).__name__}, expected VersionedWeights")
        return weights


def make_transport(name: str) -> Any:
    transports = {"object_store": ObjectStoreTransport, "in_process": InProcessTransport}
    if name not in transports:
        raise ValueError(f"rollout.weight_transport: unknown transport {name!r} (have: {sorted(transports)})")
    return transports[name]()
