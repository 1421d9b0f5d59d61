"""Weights over Ray Direct Transport (`rollout.weight_transport: rdt`; Ray's API is alpha).

The learner's `weights_direct` is called with `.options(tensor_transport="gloo" | "nccl")`:
its answer (the policy's tensors) stays in the learner's process, and only a reference goes
to the driver. Each worker in the learner's collective group gets it with
`load_weights_direct(ref)`: Ray moves the tensors learner -> worker over the group
(`__ray_send__` / `__ray_recv__`, on the actors' system threads, so a transfer overlaps the
worker's current generate call) before the call runs. No object store copy, no `ray.put`.

Membership. A collective group cannot grow, and a restarted process is not in it any more.
Workers outside it - joined by the elastic pool, restarted by Ray, replaced by their pool -
load through the object store (`RayProgram.sync` does both in one sync), and the group is
formed again when a healthy worker is outside it (at most every `REGROUP_S`). It forms at a
sync boundary, before the learner's next step is sent: every member's part of the rendezvous
runs on its calling thread, so a learner busy waiting for a batch would wait for workers that
wait for it. Forming takes about one rollout request (a worker joins once its current request
is done) plus 0.1-6 s.

Failures. Ray cannot abort a gloo or nccl transfer: when one fails (its worker died) Ray kills
both ends for good (`ray.kill`, no restart) and destroys the group. So workers known to be
dead are never sent to; a worker that dies unnoticed, mid-transfer, costs the learner: the
driver starts a fresh one from the run's newest checkpoint (`RayProgram.recover_learner`; the
steps since it are taken again) and the pool replaces the killed workers. The group is then
formed again with the new learner. A transfer that fails in the run's final sync is no
different: the driver waits for Ray's kill (`RayProgram.await_kill`), then does the same.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from shoal.services.calls import describe_error

REGROUP_S = 30.0  # at most one new group per this many seconds (forming one costs ~1-5 s of calls)
SETTLE_S = 5.0  # after a failed transfer: Ray's monitor kills both ends within ~1 s; then form anew


def uses_gpus(cfg: Any) -> bool:
    """nccl when the learner and the workers have GPUs, else gloo."""
    return cfg.rollout.num_gpus_per_worker > 0 and cfg.run.learner_num_gpus > 0


def backend_for(use_gpus: bool) -> tuple[str, str]:
    """(the tensor transport, the collective backend): nccl on GPUs, gloo on CPUs."""
    return ("nccl", "nccl") if use_gpus else ("gloo", "torch_gloo")


class DirectGroup:
    """Which rollout slots share the learner's collective group, and forming it again."""

    def __init__(self, use_gpus: bool, say: Callable[[str, str], None]) -> None:
        self.transport, self.backend = backend_for(use_gpus)
        self.say = say
        self.members: set[int] = set()
        self.group: Any = None  # Ray's CommunicatorHandle of the current group
        self.formed_at = 0.0
        self.formations = 0

    def targets(self, healthy: list[int]) -> list[int]:
        """The healthy slots that get the next weights over the group."""
        return [i for i in healthy if i in self.members]

    def forget(self, slot: int) -> None:
        """`slot` runs a new process (restarted, replaced) or left: not in the group any more."""
        self.members.discard(slot)

    def lost(self) -> None:
        """The group is gone (Ray destroyed it after a failed transfer, or the learner died):
        the next sync boundary forms a new one."""
        self.members.clear()
        self.group = None
        self.formed_at = 0.0

    def failed(self) -> None:
        """A transfer failed: Ray is about to kill the learner and that worker and destroy the
        group (its failure monitor polls every second). No new group until that is done."""
        self.lost()
        self.formed_at = time.monotonic() - REGROUP_S + SETTLE_S

    def maybe_regroup(self, learner: Any, workers: dict[int, Any], transfers_in_flight: bool) -> None:
        """At a sync boundary (the learner idle): a new group when a healthy worker is outside
        the current one and the last was formed at least REGROUP_S ago. Never while a transfer
        over the old group is in flight: destroying the group would fail it."""
        outside = set(workers) - self.members
        if outside and not transfers_in_flight and time.monotonic() - self.formed_at >= REGROUP_S:
            self.form(learner, workers)

    def form(self, learner: Any, workers: dict[int, Any]) -> None:
        """The learner and `workers` (slot -> handle) in one new group, now. On failure (a
        member died meanwhile) everyone loads from the object store until the next try."""
        import ray
        from ray.experimental.collective import create_collective_group

        t0 = time.perf_counter()
        self.close()
        self.formed_at = time.monotonic()
        slots = sorted(workers)
        actors = [learner, *(workers[i] for i in slots)]
        try:
            if self.backend == "torch_gloo":  # Ray's gloo groups are subgroups of a torch WORLD made
                ray.get([a.__ray_call__.remote(_reset_torch_world) for a in actors])  # once: a new one
            self.group = create_collective_group(actors, backend=self.backend)
        except Exception as e:
            self.say(
                "weights_object_store",
                f"Ray Direct Transport: forming the group failed ({describe_error(e)}); the object store serves "
                "every worker until the next try",
            )
            return
        self.members = set(slots)
        self.formations += 1
        self.say(
            "weights_direct",
            f"weights over Ray Direct Transport ({self.transport}): the learner + {len(slots)} rollout worker(s) in "
            f"one group (formed in {time.perf_counter() - t0:.1f} s)",
        )

    def close(self) -> None:
        """Destroy the group (Ray's registry of groups holds the members' handles)."""
        from ray.experimental.collective import destroy_collective_group

        group, self.group, self.members = self.group, None, set()
        if group is not None:
            try:
                destroy_collective_group(group)
            except Exception:  # destroyed by Ray already, or a member is gone
                pass


def _reset_torch_world(_actor: Any) -> None:
    """In a member process: drop the torch.distributed WORLD an earlier group made (Ray's
    torch_gloo groups are subgroups of a WORLD created once per process with that group's
    size, so a larger or re-ranked group could not form). Shoal's actors use torch.distributed
    for nothing else."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
