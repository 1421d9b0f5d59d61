"""`shoal metrics RUN --follow`: print each new metrics entry of a run as it arrives.

One line per entry (`12:00:03  learner  step 5  learner/policy_loss=0.0123  ...`), then the
run's final status once it is no longer running; Ctrl-C stops it any time. Reads the same
stream as the web dashboard, incrementally (malformed entries skipped and counted).

    shoal metrics latest --follow [--interval 1] [--only reward/,learner/kl_ref]
"""

from __future__ import annotations

import time
from collections.abc import Callable

from shoal.services.dashboard.api import read_stream
from shoal.services.metrics import MetricsReader, decode_entry, metrics_key
from shoal.services.metrics_table import format_number


def format_entry(entry: dict, only: list[str] | None = None) -> str | None:
    """One terminal line for a metrics entry; None when `only` filters every name out."""
    data = {k: v for k, v in entry["data"].items() if not only or any(k.startswith(p) for p in only)}
    if not data:
        return None
    clock = time.strftime("%H:%M:%S", time.localtime(entry["t"]))
    step = f"step {entry['step']}" if entry.get("step") is not None else "-"
    values = "  ".join(f"{k}={format_number(v)}" for k, v in sorted(data.items()))
    return f"{clock}  {entry['source']:<10} {step:<9} {values}"


def last_id(reader: MetricsReader, run_id: str) -> str:
    """The id of the newest metrics entry ("-" when there is none)."""
    last = reader.client.xrevrange(metrics_key(run_id), count=1)
    return last[0][0] if last else "-"


def run_status(reader: MetricsReader, run_id: str) -> str:
    try:
        return reader.run_info(run_id)["status"]
    except ValueError:
        return "unknown"


def follow(
    reader: MetricsReader,
    run_id: str,
    since: str = "-",
    interval_s: float = 1.0,
    only: list[str] | None = None,
    out: Callable[[str], None] = print,
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    """Print entries after `since` until the run is no longer running; returns its status.

    A run with no readable record (status "unknown") is followed until interrupted.
    """
    cursor, skipped = since, 0
    while True:
        status = run_status(reader, run_id)  # before reading: entries written before the end are printed
        more = True
        while more:
            batch = read_stream(reader.client, metrics_key(run_id), cursor, 1000, decode_entry)
            cursor, more, skipped = batch["cursor"], batch["more"], skipped + batch["skipped"]
            for e in batch["entries"]:
                line = format_entry(e, only)
                if line is not None:
                    out(line)
        if status not in ("running", "unknown"):
            note = f" ({skipped} malformed entries skipped)" if skipped else ""
            out(f"run {run_id} {status}{note}")
            return status
        sleep(interval_s)
