"""Secrets masking (services/secrets.py) and where it is applied: config dumps, the run record."""

from __future__ import annotations

import json

import pytest

from shoal.services.config import ConfigError, dump_config, load_config, public_config
from shoal.services.secrets import redact_config, redact_url


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("redis://:s3cret@host:6379/0", "redis://:***@host:6379/0"),
        ("redis://host:6379/0", "redis://host:6379/0"),
        ("rediss://user:p%40ss@h:6380/0?ssl_ca_certs=/a/ca.pem", "rediss://user:***@h:6380/0?ssl_ca_certs=/a/ca.pem"),
        ("redis://h/0?password=abc&db=1", "redis://h/0?password=***&db=1"),
        ("unix:///tmp/r.sock?password=zz", "unix:///tmp/r.sock?password=***"),
        ("redis://:a@b@h:1/0", "redis://:***@h:1/0"),
    ],
)
def test_redact_url(url, masked):
    assert redact_url(url) == masked


def test_redact_config_masks_keys_and_urls_at_any_depth():
    cfg = {"run": {"redis_url": "redis://:pw@h/0"}, "x": [{"api_token": "t"}, "plain"], "secret": None}
    assert redact_config(cfg) == {
        "run": {"redis_url": "redis://:***@h/0"},
        "x": [{"api_token": "***"}, "plain"],
        "secret": None,
    }


def test_counts_named_after_tokens_are_not_secrets():
    cfg = {
        "rollout": {"max_new_tokens": 8},
        "r2d2": {"candidate_max_new_tokens": 6},
        "auth": {"access_token": "t", "db_password": "p"},
    }
    assert redact_config(cfg) == {
        "rollout": {"max_new_tokens": 8},
        "r2d2": {"candidate_max_new_tokens": 6},
        "auth": {"access_token": "***", "db_password": "***"},
    }
    assert "max_new_tokens: 8" in dump_config(load_config(None, ["rollout.max_new_tokens=8"]))


def test_config_dumps_never_hold_the_password(monkeypatch):
    cfg = load_config(None, ["run.redis_url=rediss://:hunter2hunter2@db.example:6380/0?ssl_ca_certs=/ca.pem"])
    assert cfg.run.redis_url.startswith("rediss://:hunter2hunter2@")  # the actors get the real one
    assert "hunter2" not in dump_config(cfg)
    assert "hunter2" not in json.dumps(public_config(cfg))
    assert "rediss://:***@db.example:6380/0?ssl_ca_certs=/ca.pem" in dump_config(cfg)


def test_redis_url_from_environment_and_bad_scheme(monkeypatch):
    monkeypatch.setenv("SHOAL_REDIS_URL", "redis://:envpw@h:1/0")
    assert load_config(None, []).run.redis_url == "redis://:envpw@h:1/0"
    monkeypatch.delenv("SHOAL_REDIS_URL")
    assert load_config(None, []).run.redis_url is None
    with pytest.raises(ConfigError, match="run.redis_url"):
        load_config(None, ["run.redis_url=http://h:1"])


def test_error_log_masks_urls_and_is_private(tmp_path):
    from shoal.services.run import log_error
    from shoal.services.secrets import redact_text

    assert redact_text("connect rediss://:hunter2@h:6380/0?ssl=1 failed; see http://x/y") == (
        "connect rediss://:***@h:6380/0?ssl=1 failed; see http://x/y"
    )
    log = log_error(tmp_path, "rollout-0", "Traceback ...\nValueError: redis://user:hunter2@host:6379/0 refused")
    log_error(tmp_path, "learner", "second")
    text = log.read_text()
    assert "hunter2" not in text and "redis://user:***@host:6379/0" in text and "--- " in text and "second" in text
    assert log.stat().st_mode & 0o777 == 0o600
