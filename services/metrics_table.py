"""Plain-text tables of a run's latest metrics and workers (what `shoal metrics RUN` prints)."""

from __future__ import annotations

import time
from typing import Any

from shoal.services.metrics_schema import NAMESPACES, WORKER_FIELDS, _num


def format_number(v: Any, none: str = "null") -> str:
    """A number for the table: 6 significant digits; None -> `none`; bools -> yes/no."""
    if v is None:
        return none
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def _ago(t: Any, now: float) -> str:
    return f"{max(0.0, now - t):.0f}s ago" if _num(t) else "-"


def _table(headers: list[str], rows: list[list[str]], right: tuple[int, ...] = ()) -> list[str]:
    """Aligned columns; columns in `right` are right-aligned (numbers)."""
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]
    lines = []
    for r in [headers, *rows]:
        cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))]
        lines.append("  ".join(cells).rstrip())
    return lines


def _namespace_order(name: str) -> tuple:
    ns = name.split("/", 1)[0]
    return (NAMESPACES.index(ns) if ns in NAMESPACES else len(NAMESPACES), ns, name)


def format_latest_table(
    latest: dict[str, dict], workers: dict[str, dict] | None = None, now: float | None = None
) -> str:
    """Plain-text table of the latest metrics grouped by namespace, then the workers."""
    now = time.time() if now is None else now
    rows, ns_seen = [], None
    for name in sorted(latest, key=_namespace_order):
        ns = name.split("/", 1)[0]
        if ns != ns_seen:
            rows.append([f"{ns}/", "", "", ""])
            ns_seen = ns
        d = latest[name]
        rows.append(
            [f"  {name}", format_number(d.get("v")), format_number(d.get("step"), "-"), str(d.get("source", ""))]
        )
    lines = _table(["metric", "value", "step", "source"], rows, right=(1, 2)) if rows else ["no metrics yet"]
    if workers:
        headers = ["worker", *WORKER_FIELDS]
        wrows = [
            [w, *[format_number(d.get(f), "-") for f in WORKER_FIELDS[:-1]], _ago(d.get("last_seen"), now)]
            for w, d in sorted(workers.items())
        ]
        lines += ["", "workers", *_table(headers, wrows, right=(3, 4, 5))]
    return "\n".join(lines)
