"""Metrics store schema, without Redis: value encoding, decoding of untrusted entries, the table."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from shoal.services.metrics import (
    RedisMetrics,
    check_run_id,
    clean_json_object,
    decode_entry,
    decode_event,
    decode_latest,
    decode_worker,
    encode_entry,
    encode_metrics,
)
from shoal.services.metrics_table import format_latest_table
from shoal.services.secrets import redact_url


def test_non_finite_values_become_null_and_never_raise():
    data = encode_metrics({"reward/mean": float("nan"), "reward/max": float("inf"), "reward/min": -float("inf")})
    assert data == {"reward/mean": None, "reward/max": None, "reward/min": None}
    assert json.loads(encode_entry("s", 1, data, 1.0)["data"]) == data


def test_numbers_keep_their_kind():
    data = encode_metrics(
        {
            "learner/step": 3,
            "learner/loss": 0.25,
            "buffer/full": True,
            "rollout/n": np.int64(7),
            "rollout/x": np.float32(0.5),
            "rollout/z": np.array(2.0),
        }
    )
    assert data == {
        "learner/step": 3,
        "learner/loss": 0.25,
        "buffer/full": 1,
        "rollout/n": 7,
        "rollout/x": 0.5,
        "rollout/z": 2.0,
    }
    assert type(data["learner/step"]) is int and type(data["rollout/n"]) is int


@pytest.mark.parametrize("value", [{"a": 1}, [1.0, 2.0], "fast", np.array([1.0, 2.0])])
def test_nested_or_non_numeric_values_are_rejected(value):
    with pytest.raises(ValueError, match="reward/mean"):
        encode_metrics({"reward/mean": value})


@pytest.mark.parametrize("name", ["loss", "/loss", "Learner/loss", "learner/", "learner/a b", 3])
def test_metric_names_must_be_namespaced(name):
    with pytest.raises(ValueError, match="namespace/name"):
        encode_metrics({name: 1.0})


def test_entry_round_trip_with_and_without_step():
    fields = encode_entry("rollout-0", 4, {"rollout/tokens_per_s": 812.5}, 1700000000.25)
    assert decode_entry("1-0", fields) == {
        "id": "1-0",
        "source": "rollout-0",
        "step": 4,
        "t": 1700000000.25,
        "data": {"rollout/tokens_per_s": 812.5},
    }
    fields = encode_entry("learner", None, {"learner/loss": None}, 1.0)
    assert "step" not in fields
    assert decode_entry("2-0", fields)["step"] is None


GOOD = {"source": "rollout-0", "step": "1", "t": "1.5", "data": '{"a/b": 1}'}


@pytest.mark.parametrize(
    "change",
    [
        {"data": None},
        {"data": "not json"},
        {"data": "[1, 2]"},
        {"data": '{"a/b": NaN}'},
        {"data": '{"a/b": "x"}'},
        {"data": '{"a/b": {"c": 1}}'},
        {"data": '{"a/b": true}'},
        {"step": "three"},
        {"t": "nan"},
        {"t": None},
        {"source": None},
        {"source": ""},
    ],
)
def test_malformed_entries_decode_to_none(change):
    assert decode_entry("1-0", GOOD) is not None
    assert decode_entry("1-0", {**GOOD, **change}) is None


def test_latest_worker_event_decoding():
    assert decode_latest('{"v": 1.5, "step": 2, "t": 3, "source": "s"}') == {
        "v": 1.5,
        "step": 2,
        "t": 3.0,
        "source": "s",
    }
    assert decode_latest('{"v": null, "step": null, "t": 3, "source": "s"}')["v"] is None
    for bad in [
        "",
        "{",
        "[]",
        '{"v": "x", "t": 1, "source": "s"}',
        '{"v": 1, "source": "s"}',
        '{"v": 1, "t": 1, "source": "s", "step": 1.5}',
        '{"v": Infinity, "t": 1, "source": "s"}',
    ]:
        assert decode_latest(bad) is None, bad
    w = decode_worker('{"node": "n1", "healthy": true}')
    assert w["node"] == "n1" and w["healthy"] is True and w["engine"] is None and "last_seen" in w
    assert decode_worker('{"node": {"x": 1}}') is None and decode_worker("7") is None
    assert decode_event("1-0", {"t": "1", "kind": "k", "source": "s", "message": "m"})["kind"] == "k"
    assert decode_event("1-0", {"t": "1", "kind": "", "source": "s", "message": "m"}) is None
    assert decode_event("1-0", {"kind": "k", "source": "s", "message": "m"}) is None


def test_summary_cleaning_keeps_structure():
    assert clean_json_object({"a": [1, float("nan")], "b": {"c": float("inf")}}, "summary") == {
        "a": [1, None],
        "b": {"c": None},
    }


def test_run_ids_and_url_redaction():
    assert check_run_id("demo-20250101-120000") == "demo-20250101-120000"
    for bad in ["", "a b", "a:b", "a/b"]:
        with pytest.raises(ValueError, match="run id"):
            check_run_id(bad)
    assert redact_url("redis://:secret@host:6379/0") == "redis://:***@host:6379/0"
    assert redact_url("redis://host:6379/0") == "redis://host:6379/0"


def test_writer_pickles_without_connecting():
    m = RedisMetrics("redis://127.0.0.1:1/0", "run-1", "rollout-0")
    m2 = pickle.loads(pickle.dumps(m))
    assert (m2.url, m2.run_id, m2.source, m2._client) == (m.url, "run-1", "rollout-0", None)


def test_table_groups_by_namespace_in_standard_order():
    latest = {
        "learner/loss": {"v": 0.123456789, "step": 7, "t": 1.0, "source": "learner"},
        "eval/gold": {"v": 0.5, "step": None, "t": 1.0, "source": "driver"},
        "rollout/tokens_per_s": {"v": 812.0, "step": 7, "t": 1.0, "source": "rollout-0"},
        "reward/mean": {"v": None, "step": 7, "t": 1.0, "source": "scorer-0"},
    }
    lines = format_latest_table(latest).splitlines()
    assert lines[0].split() == ["metric", "value", "step", "source"]
    groups = [ln for ln in lines if ln.endswith("/")]
    assert groups == ["rollout/", "reward/", "learner/", "eval/"]
    row = next(ln for ln in lines if "learner/loss" in ln)
    assert row.split() == ["learner/loss", "0.123457", "7", "learner"]
    assert next(ln for ln in lines if "reward/mean" in ln).split()[1] == "null"
    assert next(ln for ln in lines if "eval/gold" in ln).split()[2] == "-"
    assert len({len(ln.split("  learner")[0]) for ln in lines if ln.rstrip().endswith("learner")}) == 1


def test_table_with_workers_and_empty():
    workers = {
        "rollout-1": {
            "node": "n2",
            "engine": "vllm",
            "policy_version": 3,
            "tokens_per_s": 900.5,
            "samples_per_s": 12.0,
            "healthy": False,
            "last_seen": 95.0,
        },
        "rollout-0": {"node": "n1", "engine": None, "healthy": True, "last_seen": None},
    }
    text = format_latest_table({}, workers, now=100.0)
    lines = text.splitlines()
    assert lines[0] == "no metrics yet" and "workers" in lines
    assert lines[-2].split() == ["rollout-0", "n1", "-", "-", "-", "-", "yes", "-", "-"]
    assert lines[-1].split() == ["rollout-1", "n2", "vllm", "3", "900.5", "12", "no", "-", "5s", "ago"]
