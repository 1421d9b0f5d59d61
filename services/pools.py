"""Pools of restartable actors of one kind (rollout workers, reward scorers) for the Ray program.

Health is kept by RLlib's `FaultTolerantActorManager` (`ray.rllib.utils.actor_manager`, what
RLlib's EnvRunnerGroup stands on): a healthy flag per actor, `probe_unhealthy_actors` (a
`ping` that marks an actor healthy again once Ray has restarted it), `add_actors` /
`remove_actor` to replace one. On top of it, per slot (`rollout-1` stays `rollout-1` across
replacements):

- a death is counted once, when a healthy actor's request fails - not once per re-send;
- the dead slot is probed with exponential backoff (1, 2, 4 ... 30 s), so a crash loop costs
  a few pings, not a storm of re-sent requests;
- Ray restarts the process in place (`max_restarts`); after that many deaths the slot gets a
  fresh actor (`replace`), and after `give_up_after` deaths it is retired: the run carries on
  with the healthy ones, and stops (`PoolExhausted`) only when none is left.

Deviation from RLlib: the driver submits the request chains itself (worker -> scorer ->
buffer, object refs only) instead of through `foreach_actor_async`, whose results are fetched
to the driver (`fetch_local`) or, with `return_obj_refs`, no longer checked for failures; the
pool is told of a failure with `mark_dead`.
"""

from __future__ import annotations

import importlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import ray

from shoal.services.calls import describe_error
from shoal.utils import RunError

# The pool says what happens to its actors in its own words (deaths, restarts, joins); RLlib's
# manager would add a warning line of its own for every actor back in service.
logging.getLogger("ray.rllib.utils.actor_manager").setLevel(logging.ERROR)


def warm_imports() -> threading.Thread:
    """Import RLlib's actor manager (~0.7 s of CPU) in a thread, beside `ray.init`: the driver
    imports this module before Ray starts, and the pools need RLlib only once it is up."""
    t = threading.Thread(
        target=importlib.import_module, args=("ray.rllib.utils.actor_manager",), name="shoal-imports", daemon=True
    )
    t.start()
    return t


class PoolExhausted(RunError):
    """Every actor of a pool is dead for good: the run cannot go on."""


def backoff_s(deaths: int, base: float = 1.0, cap: float = 30.0) -> float:
    """Seconds before probing a slot after its `deaths`-th death: 1, 2, 4, ... capped."""
    return min(cap, base * 2 ** max(deaths - 1, 0))


@dataclass
class _Slot:
    actor_id: int  # the manager's id of the slot's current actor
    deaths: int = 0
    deaths_since_replace: int = 0
    retired: bool = False
    died_at: float = 0.0
    next_probe: float = 0.0
    joining: bool = False  # added by `grow`, not yet answering
    node: str | None = None  # the Ray node id it was last seen on (`placed`)


class ActorPool:
    """`size` actors made by `make(slot)`, with health, backoff and replacement (module doc)."""

    def __init__(
        self,
        kind: str,
        make: Callable[[int], Any],
        size: int,
        max_restarts: int = 3,
        give_up_after: int = 10,
        say: Callable[[str, str], None] | None = None,
    ) -> None:
        self.kind, self.make, self.max_restarts, self.give_up_after = kind, make, max_restarts, give_up_after
        self.say = say or (lambda kind, msg: print(f"[shoal] {msg}", flush=True))
        actors = [make(i) for i in range(size)]  # starting before RLlib's import (~0.7 s, `warm_imports`)
        from ray.rllib.utils.actor_manager import FaultTolerantActorManager

        self.manager = FaultTolerantActorManager(actors)
        self.slots = [_Slot(actor_id) for actor_id in self.manager.actor_ids()]

    # -- who is there --------------------------------------------------------------------
    def name(self, slot: int) -> str:
        return f"{self.kind}-{slot}"

    def handle(self, slot: int) -> Any:
        return self.manager.actors()[self.slots[slot].actor_id]

    def healthy(self, slot: int) -> bool:
        s = self.slots[slot]
        return not s.retired and self.manager.is_actor_healthy(s.actor_id)

    def healthy_slots(self) -> list[int]:
        return [i for i in range(len(self.slots)) if self.healthy(i)]

    def handles(self) -> list[Any]:
        """The healthy actors' handles, in slot order."""
        return [self.handle(i) for i in self.healthy_slots()]

    def owner_of(self, err: BaseException) -> int | None:
        """The slot whose actor `err` (a RayActorError) is about, if it is one of this pool's."""
        actor_id = getattr(err, "actor_id", None)
        if not actor_id:
            return None
        for i in range(len(self.slots)):
            if self.handle(i)._actor_id.hex() == actor_id:
                return i
        return None

    def deaths(self) -> int:
        return sum(s.deaths for s in self.slots)

    # -- failures ------------------------------------------------------------------------
    def mark_dead(self, slot: int, err: BaseException) -> bool:
        """A request to `slot` failed with an actor error. Counts a death the first time (the
        slot was healthy); True if so. Raises PoolExhausted when no slot is left."""
        s = self.slots[slot]
        if s.retired or not self.manager.is_actor_healthy(s.actor_id):
            return False
        self.manager.set_actor_state(s.actor_id, healthy=False)
        s.deaths += 1
        s.deaths_since_replace += 1
        s.died_at = time.monotonic()
        s.next_probe = s.died_at + backoff_s(s.deaths_since_replace)
        reason = describe_error(err)
        if s.deaths >= self.give_up_after:
            s.retired = True
            self.say(
                "actor_retired",
                f"{self.name(slot)} died {s.deaths} times; carrying on with {len(self.healthy_slots())} "
                f"healthy {self.kind} actor(s) (last: {reason})",
            )
        else:
            self.say(
                "actor_died",
                f"{self.name(slot)} died ({reason}); death {s.deaths}, probing it in "
                f"{backoff_s(s.deaths_since_replace):.0f} s",
            )
        if not any(not x.retired for x in self.slots):
            raise PoolExhausted(
                f"every {self.kind} actor is dead ({len(self.slots)} slots, {self.deaths()} deaths; last: "
                f"{reason}); see the run's log for their tracebacks"
            )
        return True

    # -- growing and shrinking (the elastic pool) -----------------------------------------
    def active(self) -> list[int]:
        """Slots not retired (healthy or being brought back)."""
        return [i for i, s in enumerate(self.slots) if not s.retired]

    def grow(self, n: int) -> list[int]:
        """`n` new slots with fresh actors; they join (`recover` says so) once they answer a ping."""
        new = []
        for _ in range(n):
            slot = len(self.slots)
            self.manager.add_actors([self.make(slot)])
            self.slots.append(_Slot(self.manager.actor_ids()[-1], joining=True, died_at=time.monotonic()))
            self.manager.set_actor_state(self.slots[slot].actor_id, healthy=False)
            new.append(slot)
        return new

    def placed(self, slot: int, node: str) -> None:
        self.slots[slot].node = node

    def retire(self, slot: int, why: str) -> None:
        """Take `slot` out of the pool for good (its node left): one path with a death, whose
        request was re-queued already; the actor is killed so Ray does not restart it elsewhere."""
        s = self.slots[slot]
        s.retired = True
        try:
            ray.kill(self.handle(slot), no_restart=True)
        except Exception:  # already gone with its node
            pass
        self.manager.set_actor_state(s.actor_id, healthy=False)
        self.say("worker_left", f"{self.name(slot)} left: {why}; {len(self.active())} {self.kind} actor(s) now")
        if not self.active():
            raise PoolExhausted(f"every {self.kind} actor is gone ({why}); add nodes or lower the resources asked")

    def recover(self, timeout_s: float = 0.05) -> list[int]:
        """Probe the dead slots that are due with a `ping`: returns the slots healthy again
        (Ray restarted the process, or a fresh actor took the slot). A ping that fails means
        the actor is gone for good (Ray's restarts spent): the slot gets a fresh actor. The
        caller re-sends them their state (weights) before giving them work."""
        now = time.monotonic()
        due = [
            i
            for i, s in enumerate(self.slots)
            if not s.retired and not self.manager.is_actor_healthy(s.actor_id) and now >= s.next_probe
        ]
        if not due:
            return []
        results = self.manager.foreach_actor(
            "ping",
            remote_actor_ids=[self.slots[i].actor_id for i in due],
            healthy_only=False,
            timeout_seconds=timeout_s,
            mark_healthy=True,
        )
        failed = {r.actor_id for r in results if not r.ok}
        restored = []
        for i in due:
            s = self.slots[i]
            if self.manager.is_actor_healthy(s.actor_id):
                restored.append(i)
                if s.joining:
                    s.joining = False
                    self.say("worker_joined", f"{self.name(i)} joined; {len(self.active())} {self.kind} actor(s) now")
                else:
                    self.say("actor_restored", f"{self.name(i)} is back after {now - s.died_at:.1f} s")
                continue
            if not s.joining and (s.actor_id in failed or s.deaths_since_replace > self.max_restarts):
                self.replace(i)
            s.next_probe = now + min(backoff_s(s.deaths_since_replace), 5.0)  # a restart takes seconds
        return restored

    def replace(self, slot: int) -> None:
        """A fresh actor for `slot` (Ray's restarts of the old one are spent)."""
        s = self.slots[slot]
        try:
            ray.kill(self.handle(slot), no_restart=True)
        except Exception:  # already gone
            pass
        self.manager.remove_actor(s.actor_id)
        self.manager.add_actors([self.make(slot)])
        s.actor_id = self.manager.actor_ids()[-1]
        self.manager.set_actor_state(s.actor_id, healthy=False)  # healthy once its ping answers
        s.deaths_since_replace = 0
        self.say("actor_replaced", f"{self.name(slot)}: Ray's restarts spent; started a fresh actor")
