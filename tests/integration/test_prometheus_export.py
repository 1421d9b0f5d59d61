"""Prometheus export for real: a Ray actor logs through the actors' sink (Redis + Ray gauges);
the numbers appear in Redis and, as `ray_shoal_*` series, on Ray's metrics-agent scrape endpoint."""

from __future__ import annotations

import socket
import time
import urllib.request

import pytest
import ray

from shoal.services.metrics import MetricsReader, start_embedded_redis

pytestmark = pytest.mark.integration
RUN = "prom-20250101-120000-001"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster():
    mp = pytest.MonkeyPatch()
    mp.setenv("RAY_metrics_report_interval_ms", "500")  # export within a second, not ten
    port = _free_port()
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, _metrics_export_port=port)
    yield port
    ray.shutdown()
    mp.undo()


@ray.remote(num_cpus=0)
class _Component:
    def __init__(self, url: str, run_id: str, source: str) -> None:
        from shoal.services.actors import _sink

        self.sink = _sink(url, run_id, source)

    def log(self, metrics: dict, step: int) -> list[str]:
        from shoal.services import prometheus

        self.sink.log(metrics, step=step)
        return sorted(prometheus._GAUGES)


def _scrape(port: str, wanted: list[str], timeout: float = 60) -> dict[str, str]:
    """The scrape lines of each wanted series (waits for the agent's next export)."""
    deadline, text = time.monotonic() + timeout, ""
    while time.monotonic() < deadline:
        try:
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        except OSError:
            text = ""
        lines = {w: next((ln for ln in text.splitlines() if ln.startswith(w + "{")), None) for w in wanted}
        if all(lines.values()):
            return lines
        time.sleep(0.5)
    raise AssertionError(
        f"{wanted} not exported; shoal lines: {[ln for ln in text.splitlines() if 'shoal' in ln][:10]}"
    )


def test_actor_sink_writes_redis_and_ray_gauges(cluster, tmp_path):
    with start_embedded_redis(tmp_path / "shoal-metrics.rdb") as store:
        actor = _Component.remote(store.url, RUN, "rollout-0")
        gauges = ray.get(
            actor.log.remote(
                {"rollout/tokens_per_s": 812.5, "buffer/policy_lag/2": 7.0, "reward/mean": float("nan")}, 3
            )
        )
        assert gauges == ["shoal_buffer_policy_lag", "shoal_rollout_tokens_per_s"]  # NaN is not exported
        assert MetricsReader(store.url).latest(RUN)["rollout/tokens_per_s"]["v"] == 812.5

        lines = _scrape(cluster, ["ray_shoal_rollout_tokens_per_s", "ray_shoal_buffer_policy_lag"])
        tokens, lag = lines["ray_shoal_rollout_tokens_per_s"], lines["ray_shoal_buffer_policy_lag"]
        assert f'run_id="{RUN}"' in tokens and 'source="rollout-0"' in tokens and tokens.endswith(" 812.5")
        assert 'bucket="2"' in lag and lag.endswith(" 7.0")
