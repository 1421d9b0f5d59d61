"""Replay snapshot files: a replay's `snapshot()` (JSON-safe data, never pickle) on disk, so a
replay buffer killed mid-run comes back with its contents.

One file per run, `<run_dir>/replay/snapshot.json`, replaced atomically (written to a hidden
sibling, then renamed): a reader sees the previous snapshot or the new one, never half of
one. `SnapshotClock` says when the next one is due (at most one per `interval_s`): the
services' buffer actor writes one before an insert when due, so a restarted buffer loses at
most the inserts of the last interval, and counts them (`services/program.py`).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

SNAPSHOT_FILE = Path("replay") / "snapshot.json"
FORMAT = "shoal-replay-snapshot/1"


def snapshot_path(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / SNAPSHOT_FILE


def write_snapshot(run_dir: str | os.PathLike, replay: dict[str, Any], **meta: Any) -> Path:
    """Write `{"format", "time", **meta, "replay": replay}` atomically; returns the path."""
    final = snapshot_path(run_dir)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".tmp-{final.name}-{os.getpid()}")
    tmp.write_text(json.dumps({"format": FORMAT, "time": time.time(), **meta, "replay": replay}))
    os.replace(tmp, final)
    return final


def read_snapshot(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The run's newest replay snapshot, or None when it has none (ValueError naming the
    file when it is not one)."""
    path = snapshot_path(run_dir)
    if not path.exists():
        return None
    try:
        snap = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: not a readable replay snapshot ({e})") from None
    if not isinstance(snap, dict) or snap.get("format") != FORMAT or "replay" not in snap:
        raise ValueError(f"{path}: not a replay snapshot (format {FORMAT} expected)")
    return snap


MAX_SHARE = 0.05  # of the buffer's time spent writing snapshots


class SnapshotClock:
    """Due at most once per `interval_s` (0: never), counting from the last `mark()`, and
    never more often than keeps snapshot writing under MAX_SHARE of the time (a large replay's
    snapshots space out by themselves: a 100 ms write is due every 2 s at most)."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s, self.last, self.cost_s = interval_s, time.monotonic(), 0.0

    def due(self) -> bool:
        wait = max(self.interval_s, self.cost_s / MAX_SHARE)
        return self.interval_s > 0 and time.monotonic() - self.last >= wait

    def mark(self) -> None:
        self.last = time.monotonic()

    def took(self, seconds: float) -> None:
        """How long the snapshot written since `mark()` took."""
        self.cost_s = seconds
