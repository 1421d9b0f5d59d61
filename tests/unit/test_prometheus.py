"""Prometheus export: sanitized gauge names, the tee sink, and the shipped Grafana dashboard.

The gauges inside a real Ray cluster, scraped from Ray's metrics agent, are checked in
tests/integration/test_prometheus_export.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from shoal.core import ListMetrics
from shoal.services import prometheus
from shoal.services.prometheus import (
    EXPORTED_METRICS,
    PrometheusMetrics,
    TeeMetrics,
    exported_series,
    prometheus_name,
    split_bucket,
)

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "deploy" / "grafana" / "shoal-dashboard.json"


@pytest.mark.parametrize(
    "name, expected",
    [
        ("rollout/tokens_per_s", "shoal_rollout_tokens_per_s"),
        ("reward/my.rules:score_mean", "shoal_reward_my_rules_score_mean"),
        ("buffer/policy_lag/3", "shoal_buffer_policy_lag"),
        ("learner/KL-Ref", "shoal_learner_kl_ref"),
    ],
)
def test_names_are_sanitized_for_prometheus(name, expected):
    assert prometheus_name(name) == expected
    assert re.match(r"^[a-zA-Z_][a-zA-Z0-9_]*$", prometheus_name(name))


def test_lag_buckets_become_a_label():
    assert split_bucket("buffer/policy_lag/2") == ("buffer/policy_lag", "2")
    assert split_bucket("buffer/policy_lag_mean") == ("buffer/policy_lag_mean", None)
    assert split_bucket("rollout/3") == ("rollout/3", None)


class _Gauge:
    def __init__(self, name, description="", tag_keys=()):
        self.name, self.tag_keys, self.values = name, tag_keys, []

    def set(self, value, tags=None):
        assert set(tags) == set(self.tag_keys)
        self.values.append((value, tags))


def test_sink_sets_one_gauge_per_name_with_run_and_source_tags(monkeypatch):
    import ray.util.metrics

    monkeypatch.setattr(ray.util.metrics, "Gauge", _Gauge)
    monkeypatch.setattr(prometheus, "_GAUGES", {})
    sink = PrometheusMetrics("demo-1", "rollout-0")
    monkeypatch.setattr(sink, "_active", lambda: True)
    sink.log({"rollout/tokens_per_s": 812.0, "reward/mean": float("nan"), "buffer/policy_lag/2": 5, "x/y": None})
    sink.log({"rollout/tokens_per_s": 900.0})
    g = prometheus._GAUGES
    assert set(g) == {"shoal_rollout_tokens_per_s", "shoal_buffer_policy_lag"}
    assert g["shoal_rollout_tokens_per_s"].values == [
        (812.0, {"run_id": "demo-1", "source": "rollout-0"}),
        (900.0, {"run_id": "demo-1", "source": "rollout-0"}),
    ]
    assert g["shoal_buffer_policy_lag"].values == [(5.0, {"run_id": "demo-1", "source": "rollout-0", "bucket": "2"})]


def test_sink_is_a_no_op_without_ray_and_never_raises(monkeypatch):
    monkeypatch.setattr(prometheus, "_GAUGES", {})
    sink = PrometheusMetrics("demo-1", "learner")
    monkeypatch.setattr(sink, "_active", lambda: False)
    sink.log({"learner/loss": 1.0})
    assert prometheus._GAUGES == {}

    def broken(*a, **k):
        raise RuntimeError("agent down")

    monkeypatch.setattr(sink, "_active", lambda: True)
    monkeypatch.setattr(prometheus, "_gauge", broken)
    sink.log({"learner/loss": 1.0, "learner/kl": 2.0})
    assert sink.errors == 2


class _Store(ListMetrics):
    def __init__(self):
        super().__init__()
        self.events, self.workers, self.dropped = [], [], 2

    def event(self, kind, message):
        self.events.append((kind, message))

    def worker_status(self, worker_id, **fields):
        self.workers.append((worker_id, fields))


def test_tee_forwards_logs_events_and_worker_status():
    a, b = _Store(), ListMetrics()
    tee = TeeMetrics(a, b)
    tee.log({"learner/loss": 1.0}, step=3)
    tee.event("checkpoint_saved", "step 3")
    tee.worker_status("rollout-0", healthy=True)
    assert a.records == b.records == [(3, {"learner/loss": 1.0})]
    assert a.events == [("checkpoint_saved", "step 3")] and a.workers == [("rollout-0", {"healthy": True})]
    assert tee.dropped == 2


def _logged_in_code(name: str) -> bool:
    """True when some library/service module logs `name` (literally, or via its f-string)."""
    sources = "\n".join(
        p.read_text() for d in ("rollout", "reward", "buffer", "learner", "services") for p in (ROOT / d).rglob("*.py")
    )
    if f'"{name}"' in sources:
        return True
    head, bucket = split_bucket(name)
    if bucket is not None:
        return f'f"{head}/{{' in sources
    m = re.match(r"^reward/(\w+)_(mean|std)$", name)  # reward/<scorer>_mean from ScoringStage
    return bool(m) and f'name: str = "{m.group(1)}"' in sources and 'f"reward/{name}_mean"' in sources


def test_exported_names_are_logged_by_the_code():
    missing = [n for n in EXPORTED_METRICS if not _logged_in_code(n)]
    assert not missing, f"EXPORTED_METRICS names nothing logs: {missing}"


def test_grafana_dashboard_is_valid_and_uses_only_exported_series():
    dash = json.loads(GRAFANA.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 14 and dash["uid"] == "shoal-run"
    used = {m for e in exprs for m in re.findall(r"\bray_shoal_[a-z0-9_]+", e)}
    used |= set(re.findall(r"\bray_shoal_[a-z0-9_]+", json.dumps(dash["templating"])))
    assert used and used <= exported_series(), sorted(used - exported_series())
    for want in [
        "ray_shoal_rollout_tokens_per_s",
        "ray_shoal_reward_gold_mean",
        "ray_shoal_learner_kl_ref",
        "ray_shoal_buffer_policy_lag",
        "ray_shoal_weights_sync_s",
        "ray_shoal_learner_steps_per_s",
    ]:
        assert want in used
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
