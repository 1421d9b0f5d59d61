"""The dashboard's JSON API: what the page asks for, read from the Redis metrics store.

Read-only. Every Redis value is untrusted: malformed entries are skipped and counted
(`skipped` in each reply), never raised. Stream reads are incremental: the page passes the
last stream id it has (`since`) and gets what came after, at most `limit` entries, plus the
new cursor (the last id *read*, malformed or not, so a bad entry is counted once).

    /api/info                     poll interval, store URL (password redacted)
    /api/runs                     every run, newest first, with status
    /api/runs/RUN                 one run: status, times, summary, resolved config (secrets redacted)
    /api/runs/RUN/update          new metrics + events since cursors, workers, run status
    /api/runs/RUN/latest          the last value of every metric name
RUN is a run id, a unique prefix, or `latest`. The HTTP side is services/dashboard/server.py.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

from shoal.services.metrics import (
    MetricsReader,
    connect,
    decode_entry,
    decode_event,
    events_key,
    metrics_key,
)
from shoal.services.secrets import redact_config, redact_url

STREAM_ID = re.compile(r"^\d{1,20}-\d{1,20}$")
STALE_AFTER_S = 60.0  # a running run's worker silent this long is shown as stale
STALLED_AFTER_S = 600.0  # a "running" run with no metrics this long is shown as stalled
MAX_LIMIT = 20_000


class BadRequest(ValueError):
    """A query parameter the API cannot use (HTTP 400)."""


class NotFound(LookupError):
    """No such run (HTTP 404)."""


# ---------------------------------------------------------------- pure helpers


def stream_start(since: str | None) -> str:
    """The XRANGE start after cursor `since` ("-" or absent: from the beginning)."""
    if since in (None, "", "-"):
        return "-"
    if not STREAM_ID.match(since):
        raise BadRequest(f"since={since!r} is not a stream id like 1700000000000-0")
    return f"({since}"


def parse_limit(text: str | None, default: int = 5000) -> int:
    try:
        n = int(text) if text not in (None, "") else default
    except ValueError:
        raise BadRequest(f"limit={text!r} is not an integer") from None
    return max(1, min(n, MAX_LIMIT))


def worker_health(w: dict, running: bool, now: float, stale_after_s: float = STALE_AFTER_S) -> str:
    """ok | left (the elastic pool let it go with its node) | unhealthy | stale (running run,
    silent too long) | stopped (run over)."""
    if w.get("left"):
        return "left"
    if w.get("healthy") is False:
        return "unhealthy"
    if not running:
        return "stopped"
    seen = w.get("last_seen")
    if not isinstance(seen, (int, float)) or now - seen > stale_after_s:
        return "stale"
    return "ok"


def worker_rows(workers: dict[str, dict], running: bool, now: float) -> list[dict]:
    """The worker table: one row per worker with its health and seconds since last report."""
    rows = []
    for wid, w in sorted(workers.items()):
        seen = w.get("last_seen")
        age = round(now - seen, 1) if isinstance(seen, (int, float)) else None
        rows.append({"worker": wid, **w, "health": worker_health(w, running, now), "age_s": age})
    return rows


def with_stalled(record: dict, now: float) -> dict:
    last = record.get("last_update") or record.get("started_at") or now
    return {**record, "stalled": record.get("status") == "running" and now - last > STALLED_AFTER_S}


def read_stream(
    client: Any, key: str, since: str | None, limit: int, decode: Callable[[str, dict], dict | None]
) -> dict:
    """Entries of stream `key` after `since`: {entries, cursor, more, skipped}."""
    raw = client.xrange(key, stream_start(since), "+", count=limit)
    entries = [decode(entry_id, fields) for entry_id, fields in raw]
    good = [e for e in entries if e is not None]
    cursor = raw[-1][0] if raw else (since or "-")
    return {"entries": good, "cursor": cursor, "more": len(raw) >= limit, "skipped": len(entries) - len(good)}


FULL_LOAD_MAX = 3000  # a first load of a longer stream is thinned (`read_stream_thinned`)
THIN_WINDOWS = 160  # ... to this many time windows of the older part,
THIN_PER_WINDOW = 8  # ... this many entries each (about one learner step of every source),
RECENT_ENTRIES = 480  # ... plus the newest entries at full resolution


def _stream_id(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def window_bounds(first_ms: int, last_ms: int, windows: int) -> list[tuple[str, str]]:
    """`windows` consecutive XRANGE bounds (ms stream ids) covering [first_ms, last_ms]."""
    span = max(last_ms - first_ms + 1, 1)
    edges = [first_ms + span * i // windows for i in range(windows + 1)]
    return [(f"{lo}-0", f"{hi - 1}-18446744073709551615") for lo, hi in zip(edges, edges[1:]) if hi > lo]


def read_stream_thinned(client: Any, key: str, decode: Callable[[str, dict], dict | None]) -> dict | None:
    """A first load of a long stream, in bounded size and time: the newest RECENT_ENTRIES
    at full resolution, and before them THIN_PER_WINDOW entries from each of THIN_WINDOWS
    equal time windows (one pipelined round trip). None when the stream is short enough to
    send whole. The cursor is the newest entry, so polling goes on from there unthinned."""
    total = client.xlen(key)
    if total <= FULL_LOAD_MAX:
        return None
    recent = list(reversed(client.xrevrange(key, "+", "-", count=RECENT_ENTRIES)))
    first = client.xrange(key, "-", "+", count=1)
    if not recent or not first:
        return None
    first_ms, split_ms = int(first[0][0].split("-")[0]), int(recent[0][0].split("-")[0])
    pipe = client.pipeline(transaction=False)
    for lo, hi in window_bounds(first_ms, split_ms, THIN_WINDOWS):
        pipe.xrange(key, lo, hi, count=THIN_PER_WINDOW)
    split = _stream_id(recent[0][0])
    older = [e for batch in pipe.execute() for e in batch if _stream_id(e[0]) < split]
    raw = older + recent
    entries = [decode(entry_id, fields) for entry_id, fields in raw]
    good = [e for e in entries if e is not None]
    return {
        "entries": good,
        "cursor": recent[-1][0],
        "more": False,
        "skipped": len(entries) - len(good),
        "thinned": {"total": total, "sent": len(raw)},
    }


# ---------------------------------------------------------------- the API


class DashboardAPI:
    """JSON-ready replies for the dashboard page; one shared Redis client (thread-safe)."""

    def __init__(self, redis_url: str, poll_interval_s: float = 2.0) -> None:
        self.url, self.poll_interval_s = redis_url, poll_interval_s
        self.client = connect(redis_url)

    def _reader(self) -> MetricsReader:
        reader = MetricsReader(self.url)
        reader._client = self.client  # share the pool; readers are cheap per request
        return reader

    def _resolve(self, reader: MetricsReader, ref: str) -> str:
        try:
            return reader.resolve_run(ref)
        except ValueError as e:
            raise NotFound(str(e)) from None

    def info(self) -> dict:
        return {"poll_interval_s": self.poll_interval_s, "redis": redact_url(self.url), "read_only": True}

    def runs(self) -> dict:
        reader = self._reader()
        now = time.time()
        runs = [with_stalled(r, now) for r in reader.list_runs()]
        return {"runs": runs, "skipped": reader.skipped}

    def _record(self, reader: MetricsReader, rid: str) -> dict:
        try:
            info = reader.run_info(rid)
        except ValueError:  # metrics without a (readable) run record
            reader.skipped += 1
            info = {
                "run_id": rid,
                "status": "unknown",
                "algorithm": "",
                "started_at": None,
                "ended_at": None,
                "summary": {},
                "last_update": None,
                "config": {},
            }
        info["config"] = redact_config(info.get("config") or {})
        info["summary"] = redact_config(info.get("summary") or {})
        return with_stalled(info, time.time())

    def run(self, ref: str) -> dict:
        reader = self._reader()
        rec = self._record(reader, self._resolve(reader, ref))
        return {"run": rec, "skipped": reader.skipped}

    def latest(self, ref: str) -> dict:
        reader = self._reader()
        latest = reader.latest(self._resolve(reader, ref))
        return {"latest": latest, "skipped": reader.skipped}

    def update(self, ref: str, since: str | None = None, events_since: str | None = None, limit: int = 5000) -> dict:
        """New metrics and events after the cursors, the workers and the run's status."""
        reader = self._reader()
        rid = self._resolve(reader, ref)
        rec = self._record(reader, rid)
        rec.pop("config", None)
        first_load = since in (None, "", "-")
        thinned = read_stream_thinned(self.client, metrics_key(rid), decode_entry) if first_load else None
        metrics = thinned or read_stream(self.client, metrics_key(rid), since, limit, decode_entry)
        events = read_stream(self.client, events_key(rid), events_since, 500, decode_event)
        now = time.time()
        workers = worker_rows(reader.workers(rid), rec["status"] == "running", now)
        return {
            "run": rec,
            "metrics": metrics["entries"],
            "cursor": metrics["cursor"],
            "more": metrics["more"],
            "thinned": metrics.get("thinned"),
            "events": events["entries"],
            "events_cursor": events["cursor"],
            "workers": workers,
            "skipped": {"stream": metrics["skipped"] + events["skipped"], "current": reader.skipped},
            "server_time": now,
        }
