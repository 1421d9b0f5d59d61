"""Pools of restartable actors of one kind (rollout workers, reward scorers) for the Ray program.

Per slot (`rollout-1` stays `rollout-1` across replacements) the pool keeps the actor's handle
and a healthy flag, the state RLlib's `FaultTolerantActorManager` keeps (what its
EnvRunnerGroup stands on), on Ray's own primitives: importing RLlib costs the driver ~2.7 s of
CPU (torch, Ray Tune, gymnasium) while the actors start beside it on a small machine
(benchmarks/startup.py), and the pool used only its flags and a ping. On top of that:

- a death is counted once, when a healthy actor's request fails - not once per re-send;
- the dead slot is probed with a `ping` (`recover`, `ray.wait` with a timeout) with
  exponential backoff (1, 2, 4 ... 30 s), so a crash loop costs a few pings, not a storm of
  re-sent requests; an answer marks it healthy again;
- Ray restarts the process in place (`max_restarts`); after that many deaths the slot gets a
  fresh actor (`replace`), and after `give_up_after` deaths it is retired: the run carries on
  with the healthy ones, and stops (`PoolExhausted`) only when none is left.

The driver submits the request chains itself (worker -> scorer -> buffer, object refs only)
and tells the pool of a failure with `mark_dead`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import ray

from shoal.services.calls import describe_error
from shoal.utils import RunError


class PoolExhausted(RunError):
    """Every actor of a pool is dead for good: the run cannot go on."""


def backoff_s(deaths: int, base: float = 1.0, cap: float = 30.0) -> float:
    """Seconds before probing a slot after its `deaths`-th death: 1, 2, 4, ... capped."""
    return min(cap, base * 2 ** max(deaths - 1, 0))


@dataclass
class _Slot:
    handle: Any  # the slot's current actor
    healthy: bool = True
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
        self.slots = [_Slot(make(i)) for i in range(size)]

    # -- who is there --------------------------------------------------------------------
    def name(self, slot: int) -> str:
        return f"{self.kind}-{slot}"

    def handle(self, slot: int) -> Any:
        return self.slots[slot].handle

    def healthy(self, slot: int) -> bool:
        s = self.slots[slot]
        return not s.retired and s.healthy

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
        if s.retired or not s.healthy:
            return False
        s.healthy = False
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
            self.slots.append(_Slot(self.make(slot), healthy=False, joining=True, died_at=time.monotonic()))
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
        s.healthy = False
        self.say("worker_left", f"{self.name(slot)} left: {why}; {len(self.active())} {self.kind} actor(s) now")
        if not self.active():
            raise PoolExhausted(f"every {self.kind} actor is gone ({why}); add nodes or lower the resources asked")

    def recover(self, timeout_s: float = 0.05) -> list[int]:
        """Probe the dead slots that are due with a `ping`: returns the slots healthy again
        (Ray restarted the process, or a fresh actor took the slot). A ping that fails means
        the actor is gone for good (Ray's restarts spent): the slot gets a fresh actor. The
        caller re-sends them their state (weights) before giving them work."""
        now = time.monotonic()
        due = [i for i, s in enumerate(self.slots) if not s.retired and not s.healthy and now >= s.next_probe]
        if not due:
            return []
        failed = self._ping(due, timeout_s)
        restored = []
        for i in due:
            s = self.slots[i]
            if s.healthy:
                restored.append(i)
                if s.joining:
                    s.joining = False
                    self.say("worker_joined", f"{self.name(i)} joined; {len(self.active())} {self.kind} actor(s) now")
                else:
                    self.say("actor_restored", f"{self.name(i)} is back after {now - s.died_at:.1f} s")
                continue
            if not s.joining and (i in failed or s.deaths_since_replace > self.max_restarts):
                self.replace(i)
            s.next_probe = now + min(backoff_s(s.deaths_since_replace), 5.0)  # a restart takes seconds
        return restored

    def _ping(self, slots: list[int], timeout_s: float) -> set[int]:
        """Ping `slots` and wait up to `timeout_s`: a slot that answers is healthy again; returns
        the slots whose ping failed (the actor is dead for good). No answer yet: still down,
        probed again later."""
        calls = {self.slots[i].handle.ping.remote(): i for i in slots}
        answered, _ = ray.wait(list(calls), num_returns=len(calls), timeout=timeout_s)
        failed = set()
        for ref in answered:
            try:
                ray.get(ref)
            except Exception:  # RayActorError: Ray will not bring it back
                failed.add(calls[ref])
            else:
                self.slots[calls[ref]].healthy = True
        return failed

    def replace(self, slot: int) -> None:
        """A fresh actor for `slot` (Ray's restarts of the old one are spent)."""
        s = self.slots[slot]
        try:
            ray.kill(self.handle(slot), no_restart=True)
        except Exception:  # already gone
            pass
        s.handle, s.healthy = self.make(slot), False  # healthy once its ping answers
        s.deaths_since_replace = 0
        self.say("actor_replaced", f"{self.name(slot)}: Ray's restarts spent; started a fresh actor")
