"""Shuts the embedded Redis down when the process that started it dies without closing it
(SIGKILL, OOM): `python -m shoal.services.redis_watchdog PID PORT`.

Started by `EmbeddedRedis` in its own session, so a Ctrl-C of the driver's process group
does not reach it. Every second: the server gone -> exit; PID gone -> if no other Shoal
process is attached (clients named `shoal-embedded:...`), SAVE and SHUTDOWN, then exit. The
data stays in the .rdb file; the next run or `shoal dashboard` starts the server again.
"""

from __future__ import annotations

import os
import sys
import time

import redis

EMBEDDED_CLIENT = "shoal-embedded:"  # as services.redis_server._EMBEDDED_CLIENT (no import: stay light)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (dead, not yet reaped) counts as gone
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def watch(pid: int, port: int, interval_s: float = 1.0) -> str:
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=5, client_name="shoal-watchdog")
    while True:
        time.sleep(interval_s)
        try:
            client.ping()
        except redis.RedisError:
            return "server gone"
        if pid_alive(pid):
            continue
        try:
            others = [c for c in client.client_list() if str(c.get("name", "")).startswith(EMBEDDED_CLIENT)]
            if others:
                return "driver gone; another Shoal process still attached"
            client.shutdown(save=True)
        except redis.ConnectionError:
            pass  # SHUTDOWN closes the connection: done
        except redis.RedisError:
            return "shutdown refused"
        return "driver gone; server shut down"


if __name__ == "__main__":
    sys.exit(0 if watch(int(sys.argv[1]), int(sys.argv[2])) else 1)
