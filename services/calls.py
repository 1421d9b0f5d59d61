"""Deadlines on the driver's actor calls: nothing waits forever.

Every `ray.get` the Ray program makes on an actor goes through `get_within`: past
run.actor_timeout_s it ends the run with one line naming the actor, the node it was last seen
on and what to do, instead of hanging. Rollout requests are not waited on with `ray.get` (the
driver polls them with `ray.wait`); `overdue` finds the ones past the deadline, and the
program restarts the stage that holds them (a hung engine is treated as a dead one).
`describe_error` makes any Ray error one line for the user. Light on purpose (no RLlib, no
torch): every actor process imports it.
"""

from __future__ import annotations

import re
import time
from typing import Any

import ray
from ray.exceptions import GetTimeoutError

from shoal.utils import RunError

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def describe_error(err: BaseException) -> str:
    """`Type: first line` of the error's cause (Ray wraps a dead actor's error in the error of
    every task downstream of it), without terminal colours."""
    cause = getattr(err, "cause", None) or err
    lines = ANSI.sub("", str(cause)).strip().splitlines()
    return f"{type(cause).__name__}: {lines[0][:160]}" if lines else type(cause).__name__


def timeout_message(who: str, what: str, timeout_s: float, node: str | None) -> str:
    on = f" on node {node}" if node else ""
    return (
        f"{who}{on} did not answer {what} within {timeout_s:g} s (run.actor_timeout_s): it is stuck or its node is "
        "overloaded; see `ray status` and the actor's log (/tmp/ray/session_latest/logs on that node), then continue "
        "with `shoal train CONFIG --resume RUN` (raise run.actor_timeout_s if such calls are expected to take longer)"
    )


def get_within(ref: Any, who: str, what: str, timeout_s: float, node: str | None = None) -> Any:
    """ray.get(ref) within `timeout_s` seconds, else a RunError saying who, where and what to do
    (`what`: the call, e.g. "`room`" or "`sample` from the learner")."""
    try:
        return ray.get(ref, timeout=timeout_s)
    except GetTimeoutError:
        raise RunError(timeout_message(who, what, timeout_s, node)) from None


def overdue(started: dict[Any, float], timeout_s: float, now: float | None = None) -> list[Any]:
    """Keys of `started` (key -> perf_counter at submission) older than `timeout_s`."""
    now = time.perf_counter() if now is None else now
    return [k for k, t0 in started.items() if now - t0 > timeout_s]


def dead_for_good(actor: Any) -> bool:
    """True when Ray will not restart `actor` (killed with `ray.kill`, restarts spent): the GCS
    says DEAD. Ray's public state API needs the dashboard; the GCS table does not."""
    from ray._private import state

    try:
        info = state.actors(actor_id=actor._actor_id.hex())
    except Exception:  # the GCS does not answer: assume a restart is under way
        return False
    return bool(info) and info.get("State") == "DEAD"
