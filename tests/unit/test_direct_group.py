"""services.direct.DirectGroup's bookkeeping (who gets weights over the collective group, and
when a new group is formed), without Ray: forming is recorded instead of done."""

from __future__ import annotations

import time

import pytest

pytest.importorskip("ray")

from shoal.services import direct  # noqa: E402


@pytest.fixture
def group(monkeypatch):
    g = direct.DirectGroup(use_gpus=False, say=lambda kind, msg: None)
    g.formed_with: list[list[int]] = []

    def form(learner, workers):
        g.formed_with.append(sorted(workers))
        g.members, g.formed_at = set(workers), time.monotonic()

    monkeypatch.setattr(g, "form", form)
    return g


def test_backends():
    assert direct.backend_for(False) == ("gloo", "torch_gloo")
    assert direct.backend_for(True) == ("nccl", "nccl")


def test_only_healthy_members_get_direct_weights(group):
    group.members = {0, 1, 2}
    assert group.targets([0, 2, 3]) == [0, 2]  # 1 is dead, 3 joined after the group formed
    group.forget(2)  # restarted: a new process, not in the group
    assert group.targets([0, 1, 2, 3]) == [0, 1]


def test_a_worker_outside_the_group_forms_a_new_one_at_most_every_regroup_s(group, monkeypatch):
    monkeypatch.setattr(direct, "REGROUP_S", 30.0)
    group.members, group.formed_at = {0, 1}, time.monotonic()
    group.maybe_regroup("learner", {0: "w0", 1: "w1", 2: "w2"}, transfers_in_flight=False)
    assert group.formed_with == []  # formed a moment ago
    group.formed_at -= 31
    group.maybe_regroup("learner", {0: "w0", 1: "w1", 2: "w2"}, transfers_in_flight=True)
    assert group.formed_with == []  # a transfer over the old group is in flight
    group.maybe_regroup("learner", {0: "w0", 1: "w1", 2: "w2"}, transfers_in_flight=False)
    assert group.formed_with == [[0, 1, 2]]
    group.formed_at -= 31
    group.maybe_regroup("learner", {0: "w0", 1: "w1"}, transfers_in_flight=False)
    assert group.formed_with == [[0, 1, 2]]  # everyone healthy is in it: nothing to do


def test_after_a_failed_transfer_no_group_until_ray_has_killed_both_ends(group, monkeypatch):
    monkeypatch.setattr(direct, "REGROUP_S", 0.0)
    group.members = {0, 1}
    group.failed()
    assert group.targets([0, 1]) == []  # the object store serves everyone meanwhile
    group.maybe_regroup("learner", {0: "w0", 1: "w1"}, transfers_in_flight=False)
    assert group.formed_with == []
    group.formed_at -= direct.SETTLE_S + 0.1
    group.maybe_regroup("learner", {0: "w0", 1: "w1"}, transfers_in_flight=False)
    assert group.formed_with == [[0, 1]]


def test_a_lost_group_is_formed_again_at_the_next_sync_boundary(group, monkeypatch):
    monkeypatch.setattr(direct, "REGROUP_S", 30.0)
    group.members, group.formed_at = {0, 1}, time.monotonic()
    group.lost()  # the learner died: a new one takes over
    group.maybe_regroup("new learner", {0: "w0", 1: "w1"}, transfers_in_flight=False)
    assert group.formed_with == [[0, 1]]
