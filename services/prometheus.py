"""Prometheus export: every number a component logs, mirrored into `ray.util.metrics` gauges.

`PrometheusMetrics(run_id, source)` is a MetricsSink: `log({"rollout/tokens_per_s": 812.0})`
sets the gauge `shoal_rollout_tokens_per_s{run_id, source}`. Ray's metrics agent on each
node serves it to Prometheus with Ray's `ray_` prefix (`ray_shoal_rollout_tokens_per_s`),
and Ray's own dashboard shows it too. A trailing integer path segment becomes a `bucket`
label: `buffer/policy_lag/2` -> `shoal_buffer_policy_lag{bucket="2"}` (the lag histogram).
Outside a Ray worker or driver (`ray.is_initialized()` false) the sink does nothing.

`TeeMetrics(*sinks)` fans `log`, `event` and `worker_status` out to several sinks; the Ray
actors use `TeeMetrics(RedisMetrics(...), PrometheusMetrics(...))` (services/actors.py).
deploy/grafana/shoal-dashboard.json charts the series named in EXPORTED_METRICS.
Tests: `pytest tests/unit/test_prometheus.py` and `-m integration tests/integration/test_prometheus_export.py`.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

from shoal.services.metrics import finite_float

log = logging.getLogger(__name__)

PREFIX = "shoal"
RAY_PREFIX = "ray_"  # what Ray's metrics agent puts in front of every custom metric
TAG_KEYS = ("run_id", "source")
BUCKET_TAG_KEYS = (*TAG_KEYS, "bucket")

# The names the dashboards chart (the Grafana JSON may reference only these); the sink
# mirrors every other logged name too.
EXPORTED_METRICS = (
    "rollout/tokens_per_s",
    "rollout/samples_per_s",
    "rollout/total_samples_per_s",
    "rollout/policy_version",
    "rollout/weight_sync_s",
    "reward/mean",
    "reward/std",
    "reward/gold_mean",
    "reward/gold_std",
    "reward/reward_model_mean",
    "reward/reward_model_std",
    "reward/rejected_nonfinite",
    "learner/policy_loss",
    "learner/value_loss",
    "learner/entropy",
    "learner/approx_kl",
    "learner/clip_fraction",
    "learner/kl_ref",
    "learner/kl_coef",
    "learner/lr",
    "learner/steps_per_s",
    "learner/trained_tokens",
    "learner/step_s",
    "learner/policy_version",
    "learner/logprob_mismatch",
    "learner/policy_lag_mean",
    "buffer/size",
    "buffer/fill",
    "buffer/sampled",
    "buffer/added",
    "buffer/dropped_stale",
    "buffer/policy_lag_mean",
    "buffer/policy_lag_max",
    "buffer/policy_lag/0",
    "weights/sync_s",
    "weights/load_s",
)

_BAD = re.compile(r"[^a-zA-Z0-9_]+")


def split_bucket(name: str) -> tuple[str, str | None]:
    """`buffer/policy_lag/2` -> ("buffer/policy_lag", "2"); other names -> (name, None)."""
    head, _, last = name.rpartition("/")
    if head and "/" in head and last.isdigit():
        return head, last
    return name, None


def prometheus_name(name: str) -> str:
    """The gauge name for a metric: `rollout/tokens_per_s` -> `shoal_rollout_tokens_per_s`."""
    base, _ = split_bucket(name)
    return f"{PREFIX}_{_BAD.sub('_', base).strip('_').lower()}"


def exported_series() -> set[str]:
    """Series names as Prometheus sees them (with Ray's prefix), for EXPORTED_METRICS."""
    return {RAY_PREFIX + prometheus_name(n) for n in EXPORTED_METRICS}


_GAUGES: dict[str, Any] = {}  # one Gauge per name per process


def _gauge(pname: str, bucketed: bool) -> Any:
    if pname not in _GAUGES:
        from ray.util.metrics import Gauge

        _GAUGES[pname] = Gauge(
            pname,
            description=f"Shoal metric {pname} (last logged value)",
            tag_keys=BUCKET_TAG_KEYS if bucketed else TAG_KEYS,
        )
    return _GAUGES[pname]


class PrometheusMetrics:
    """MetricsSink that sets one Ray gauge per metric name, tagged run_id and source.

    Never raises on export problems (counted in `errors`, one warning): the metrics
    store stays the source of truth.
    """

    def __init__(self, run_id: str, source: str) -> None:
        self.tags = {"run_id": str(run_id), "source": str(source)}
        self.errors = 0

    def _active(self) -> bool:
        ray = sys.modules.get("ray")  # not imported: certainly not initialized (local runs stay Ray-free)
        return ray is not None and ray.is_initialized()

    def log(self, metrics: dict[str, float], step: int | None = None) -> None:
        if not self._active():
            return
        for name, value in metrics.items():
            v = finite_float(value)
            if v is not None:
                self._set(name, v)

    def _set(self, name: str, value: float) -> None:
        base, bucket = split_bucket(name)
        tags = self.tags if bucket is None else {**self.tags, "bucket": bucket}
        try:
            _gauge(prometheus_name(name), bucket is not None).set(value, tags=tags)
        except Exception as e:  # export must never break a component
            self.errors += 1
            if self.errors == 1:
                log.warning("prometheus export of %s failed: %s", name, e)


class TeeMetrics:
    """A sink that forwards to every sink given; events and worker status to those that have them."""

    def __init__(self, *sinks: Any) -> None:
        self.sinks = sinks

    def log(self, metrics: dict[str, float], step: int | None = None) -> None:
        for s in self.sinks:
            s.log(metrics, step=step)

    def event(self, kind: str, message: str) -> None:
        for s in self.sinks:
            if hasattr(s, "event"):
                s.event(kind, message)

    def worker_status(self, worker_id: str, **fields: Any) -> None:
        for s in self.sinks:
            if hasattr(s, "worker_status"):
                s.worker_status(worker_id, **fields)

    @property
    def dropped(self) -> int:
        return sum(getattr(s, "dropped", 0) for s in self.sinks)
