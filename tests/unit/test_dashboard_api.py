"""The dashboard's pure parts: auth, Host check, routing helpers, redaction, worker health, config rules.

The JSON API against a real Redis is tests/integration/test_dashboard_server.py; the page in
a real browser is tests/integration/test_dashboard_browser.py.
"""

from __future__ import annotations

import pytest

from shoal.services.config import ConfigError, dump_config, is_loopback, load_config
from shoal.services.dashboard.api import (
    BadRequest,
    parse_limit,
    read_stream,
    redact_config,
    stream_start,
    worker_health,
    worker_rows,
)
from shoal.services.dashboard.follow import format_entry
from shoal.services.dashboard.server import authorized, host_allowed, load_static, static_name

TOKEN = "s3cret-token"


@pytest.mark.parametrize(
    "headers, query, ok",
    [
        ({}, {}, False),
        ({"Authorization": f"Bearer {TOKEN}"}, {}, True),
        ({"Authorization": "Bearer wrong-token"}, {}, False),
        ({"X-Shoal-Token": TOKEN}, {}, True),
        ({}, {"token": [TOKEN]}, True),
        ({}, {"token": ["nope"]}, False),
    ],
)
def test_token_is_required_when_configured(headers, query, ok):
    assert authorized(TOKEN, headers, query) is ok
    assert authorized(None, headers, query) is True


@pytest.mark.parametrize(
    "host, ok",
    [
        ("127.0.0.1:8420", True),
        ("localhost:8420", True),
        ("[::1]:8420", True),
        ("localhost", True),
        ("evil.example:8420", False),
        ("10.0.0.5:8420", False),
        (None, False),
    ],
)
def test_only_loopback_host_names_without_a_token(host, ok):
    assert host_allowed(host, None) is ok
    assert host_allowed(host, TOKEN) is True


def test_loopback_addresses():
    assert all(is_loopback(h) for h in ["127.0.0.1", "127.1.2.3", "::1", "localhost", "[::1]"])
    assert not any(is_loopback(h) for h in ["0.0.0.0", "::", "10.1.2.3", "example.com", ""])


def test_static_files_ship_in_the_package_and_nothing_else_is_served():
    static = load_static()
    assert {"index.html", "app.js", "charts.js", "series.js", "style.css"} <= set(static)
    assert static["index.html"][1].startswith("text/html")
    assert b"http://" not in static["index.html"][0] and b"https://" not in static["index.html"][0]  # no CDN
    assert static_name("/") == "index.html" and static_name("/static/app.js") == "app.js"
    assert static_name("/static/../api.py") is None and static_name("/etc/passwd") is None


def test_stream_cursors_and_limits():
    assert stream_start(None) == "-" and stream_start("-") == "-"
    assert stream_start("1700000000000-3") == "(1700000000000-3"
    with pytest.raises(BadRequest):
        stream_start("0; FLUSHALL")
    assert parse_limit(None) == 5000 and parse_limit("10") == 10 and parse_limit("0") == 1
    assert parse_limit("999999999") == 20_000
    with pytest.raises(BadRequest):
        parse_limit("ten")


class _FakeStream:
    def __init__(self, raw):
        self.raw = raw

    def xrange(self, key, start, end, count):
        return self.raw[:count]


def test_read_stream_counts_malformed_entries_and_moves_past_them():
    raw = [
        ("1-0", {"source": "learner", "t": "1.0", "data": '{"learner/loss": 0.5}'}),
        ("2-0", {"source": "learner", "t": "x", "data": "{"}),
        ("3-0", {"source": "rollout-0", "t": "3.0", "step": "2", "data": '{"rollout/tokens_per_s": null}'}),
    ]
    out = read_stream(_FakeStream(raw), "k", "-", 10, __import__("shoal.services.metrics", fromlist=["x"]).decode_entry)
    assert [e["id"] for e in out["entries"]] == ["1-0", "3-0"]
    assert (out["cursor"], out["skipped"], out["more"]) == ("3-0", 1, False)
    assert read_stream(_FakeStream(raw), "k", "-", 2, lambda i, f: None)["more"] is True
    assert read_stream(_FakeStream([]), "k", "5-0", 2, lambda i, f: None)["cursor"] == "5-0"


def test_redaction_hides_tokens_and_url_passwords():
    cfg = {
        "dashboard": {"token": "abc", "host": "0.0.0.0"},
        "run": {"redis_url": "redis://:pw@h:6379/0"},
        "x": {"password": None, "list": ["redis://u:pw@h/0"]},
    }
    out = redact_config(cfg)
    assert out["dashboard"] == {"token": "***", "host": "0.0.0.0"}
    assert out["run"]["redis_url"] == "redis://:***@h:6379/0"
    assert out["x"] == {"password": None, "list": ["redis://u:***@h/0"]}


def test_worker_health():
    now = 1000.0
    assert worker_health({"healthy": True, "last_seen": 990.0}, True, now) == "ok"
    assert worker_health({"healthy": True, "last_seen": 100.0}, True, now) == "stale"
    assert worker_health({"healthy": False, "last_seen": 999.0}, True, now) == "unhealthy"
    assert worker_health({"healthy": True, "last_seen": 999.0}, False, now) == "stopped"
    assert worker_health({"healthy": False, "left": True, "last_seen": 999.0}, True, now) == "left"
    rows = worker_rows({"rollout-1": {"last_seen": 990.0}, "rollout-0": {"last_seen": None}}, True, now)
    assert [(r["worker"], r["health"], r["age_s"]) for r in rows] == [
        ("rollout-0", "stale", None),
        ("rollout-1", "ok", 10.0),
    ]


def test_dashboard_config_rules(monkeypatch):
    monkeypatch.delenv("SHOAL_DASHBOARD_TOKEN", raising=False)
    cfg = load_config(None, [])
    assert (cfg.dashboard.enabled, cfg.dashboard.host, cfg.dashboard.port, cfg.dashboard.token) == (
        True,
        "127.0.0.1",
        8420,
        None,
    )
    with pytest.raises(ConfigError) as e:
        load_config(None, ["dashboard.host=0.0.0.0"])
    assert str(e.value).startswith("dashboard.token:") and "SHOAL_DASHBOARD_TOKEN" in str(e.value)
    with pytest.raises(ConfigError, match="^dashboard.token: must be at least 8"):
        load_config(None, ["dashboard.host=0.0.0.0", "dashboard.token=short"])
    cfg = load_config(None, ["dashboard.host=0.0.0.0", f"dashboard.token={TOKEN}"])
    assert cfg.dashboard.token == TOKEN and TOKEN not in dump_config(cfg)  # never written out
    monkeypatch.setenv("SHOAL_DASHBOARD_TOKEN", TOKEN)
    assert load_config(None, ["dashboard.host=0.0.0.0"]).dashboard.token == TOKEN


def test_follow_line_format():
    e = {"t": 0.0, "source": "learner", "step": 3, "data": {"learner/loss": 0.123456789, "reward/mean": None}}
    line = format_entry(e)
    assert "learner" in line and "step 3" in line and "learner/loss=0.123457" in line and "reward/mean=null" in line
    assert format_entry(e, only=["reward/"]).endswith("reward/mean=null")
    assert format_entry(e, only=["buffer/"]) is None


def test_window_bounds_tile_the_range_without_overlap():
    from shoal.services.dashboard.api import window_bounds

    for first, last, n in [(1000, 1000, 5), (1000, 1009, 3), (1_700_000_000_000, 1_700_010_000_000, 160)]:
        bounds = window_bounds(first, last, n)
        los = [int(lo.split("-")[0]) for lo, _ in bounds]
        his = [int(hi.split("-")[0]) for _, hi in bounds]
        assert los[0] == first and his[-1] == last and len(bounds) <= n
        assert all(h + 1 == lo for h, lo in zip(his, los[1:]))  # contiguous, disjoint, in order
        for ms in range(first, min(last, first + 50) + 1):  # every millisecond falls in exactly one window
            assert sum(lo <= ms <= hi for lo, hi in zip(los, his)) == 1
