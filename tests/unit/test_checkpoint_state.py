"""The driver's side of a checkpoint (learner/checkpoint.py, rollout/tasks.py, buffer/fifo.py):
JSON round trips that a resumed run depends on, pruning, and the one-line checkpoint check."""

from __future__ import annotations

import json

import pytest

from shoal.buffer.fifo import FIFOQueue
from shoal.learner.checkpoint import (
    DRIVER_STATE_FILE,
    META_FILE,
    check_checkpoint,
    checkpoint_dir,
    prune_checkpoints,
    read_driver_state,
    write_driver_state,
)
from shoal.rollout.tasks import KeywordsTask, TaskPromptSource
from shoal.types import Prompt, RewardTerms, Rollout, ScoredRollout


class CharTokenizer:
    bos_token_id = 1

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [ord(c) % 50 + 2 for c in text]}


def test_prompt_stream_resumes_where_it_stopped():
    a = TaskPromptSource(KeywordsTask(), CharTokenizer(), seed=3)
    a.next_batch(5)
    state = json.loads(json.dumps(a.state_dict()))
    b = TaskPromptSource(KeywordsTask(), CharTokenizer(), seed=999)
    b.load_state_dict(state)
    assert [p.prompt_id for p in b.next_batch(4)] == [p.prompt_id for p in a.next_batch(4)]
    assert [p.text for p in b.next_batch(7)] == [p.text for p in a.next_batch(7)]


def _scored(i: int, version: int) -> ScoredRollout:
    prompt = Prompt(f"keywords-p{i}", "write about ko :", [1, 5, 6], {"topic": "ko", "n": i})
    rollout = Rollout(prompt, [7, 8, 2], "kofa", [-0.5, -1.25, -0.125], version, "rollout-0", "stop")
    return ScoredRollout(rollout, RewardTerms({"reward_model": 0.5 + i}, [-0.4, -1.0, -0.2], {"gold": 0.25}), 0.5 + i)


def test_fifo_snapshot_round_trips_through_json():
    q = FIFOQueue(capacity=8, max_policy_lag=1)
    q.add([_scored(i, 0) for i in range(6)])
    q.sample(2, learner_version=0)
    q.add([_scored(i, 1) for i in range(6, 11)])  # one refused: full
    snap = json.loads(json.dumps(q.snapshot(), allow_nan=False))
    r = FIFOQueue(capacity=8, max_policy_lag=1)
    r.restore(snap)
    assert r.stats() | {"buffer/queue_wait_s": 0} == q.stats() | {"buffer/queue_wait_s": 0}
    a, b = q.sample(6, learner_version=2), r.sample(6, learner_version=2)  # both drop the stale ones alike
    assert a is None and b is None and r.dropped_stale == q.dropped_stale
    assert [x for _, x in r._items] == [x for _, x in q._items]  # equal dataclasses, all fields


def test_driver_state_file_and_checkpoint_check(tmp_path):
    ckpt = checkpoint_dir(tmp_path, 4)
    ckpt.mkdir(parents=True)
    assert read_driver_state(ckpt) == {}  # a checkpoint saved by the learner alone
    write_driver_state(ckpt, {"builder": {"prompts": {"count": 3}}, "samples": 12})
    assert read_driver_state(ckpt)["samples"] == 12
    with pytest.raises(ValueError, match="not valid JSON"):
        (ckpt / DRIVER_STATE_FILE).write_text("{")
        read_driver_state(ckpt)
    with pytest.raises(ValueError, match="no meta.json: empty or incomplete"):
        check_checkpoint(ckpt)
    (ckpt / META_FILE).write_text("{oops")
    with pytest.raises(ValueError, match="meta.json is corrupt"):
        check_checkpoint(ckpt)
    (ckpt / META_FILE).write_text(json.dumps({"format": "shoal-checkpoint/1", "policy_version": 4}))
    with pytest.raises(ValueError, match="incomplete: no extra_state.safetensors"):
        check_checkpoint(ckpt)
    with pytest.raises(ValueError, match="does not exist"):
        check_checkpoint(tmp_path / "nope")


def test_prune_keeps_the_newest_complete_checkpoints(tmp_path):
    for step in (5, 10, 15, 20):
        d = checkpoint_dir(tmp_path, step)
        d.mkdir(parents=True)
        (d / META_FILE).write_text("{}")
    partial = checkpoint_dir(tmp_path, 25)
    partial.mkdir()  # being written: no meta.json yet
    removed = prune_checkpoints(tmp_path, keep=2)
    assert sorted(p.name for p in removed) == ["step_00000005", "step_00000010"]
    left = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert left == ["step_00000015", "step_00000020", "step_00000025"]
    assert prune_checkpoints(tmp_path, keep=0) == []
