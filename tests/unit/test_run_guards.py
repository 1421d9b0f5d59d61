"""Guards that keep a broken run from spinning silently: the per-kind event rate limit and the
"nothing can be trained" check (pure parts; the runs themselves in tests/integration)."""

from __future__ import annotations

from shoal.services.metrics import EventLimiter
from shoal.services.run import UNTRAINABLE_AFTER_REQUESTS, untrainable_reason


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_event_limiter_admits_a_few_per_window_and_reports_the_rest():
    clock = FakeClock()
    lim = EventLimiter(per_window=3, window_s=10.0, clock=clock)
    got = [lim.admit("reward_rejected") for _ in range(10)]
    assert got == [(True, 0)] * 3 + [(False, 0)] * 7
    assert lim.admit("worker_restarted") == (True, 0)  # kinds are limited separately
    clock.t = 9.9
    assert lim.admit("reward_rejected") == (False, 0)  # the same window: 8 suppressed now
    clock.t = 10.0
    assert lim.admit("reward_rejected") == (True, 8)  # a new window reports the last one's count
    assert lim.admit("reward_rejected") == (True, 0)
    clock.t = 100.0
    assert lim.admit("reward_rejected") == (True, 0)  # nothing was suppressed in the closed window


def test_event_limiter_counts_match_a_slow_loop():
    """Over a long random stream, admitted + reported-suppressed = every event but the open window's suppressions."""
    import random

    rng, clock = random.Random(0), FakeClock()
    lim = EventLimiter(per_window=5, window_s=10.0, clock=clock)
    admitted = reported = 0
    for _ in range(5000):
        clock.t += rng.expovariate(20.0)
        ok, closed = lim.admit("k")
        admitted += ok
        reported += closed
    open_window_suppressed = int(lim._windows["k"][2])
    assert admitted + reported + open_window_suppressed == 5000
    assert admitted <= 5 * (clock.t // 10 + 1)


def test_untrainable_reason_only_when_nothing_was_accepted_and_something_rejected():
    n = UNTRAINABLE_AFTER_REQUESTS
    assert untrainable_reason(n - 1, 0, 500) is None  # too early to tell
    assert untrainable_reason(n, 1, 500) is None  # the replay accepted something
    assert untrainable_reason(n, 0, 0) is None  # nothing rejected: not the reward's fault
    reason = untrainable_reason(n, 0, 512)
    assert (
        reason is not None
        and "rejected every rollout scored so far (512" in reason
        and "reward.rule_functions" in reason
    )


def test_lag_buckets_match_a_slow_loop_and_stay_few():
    from shoal.services.stages import LAG_BUCKETS, lag_bucket

    for lag in range(0, 500):
        expected = 0
        for b in LAG_BUCKETS:  # the last bucket whose lower bound is <= lag
            if b <= lag:
                expected = b
        assert lag_bucket(lag) == expected
    assert {lag_bucket(lag) for lag in range(10_000)} == set(LAG_BUCKETS)


def test_buffer_stage_logs_at_most_the_fixed_buckets():
    """1,000 steps whose samples are ever older: 9 lag fields, counts summing to every item."""
    from shoal.services.stages import LAG_BUCKETS, BufferStage

    class AgingBuffer:
        def __init__(self):
            self.step = 0

        def sample(self, batch_size, learner_version):
            self.step = learner_version
            return object()

        def last_policy_lags(self):
            return [self.step, self.step // 2, 0, 1]

        def stats(self):
            return {"buffer/size": 4.0}

    logged: list[dict] = []

    class Sink:
        def log(self, metrics, step=None):
            logged.append(dict(metrics))

    stage = BufferStage(AgingBuffer(), Sink())
    for v in range(1000):
        stage.sample(4, v)
    last = logged[-1]
    fields = {k for k in last if k.startswith("buffer/policy_lag/")}
    assert fields == {f"buffer/policy_lag/{b}" for b in LAG_BUCKETS}
    assert sum(last[k] for k in fields) == 4 * 1000
    assert last["buffer/policy_lag_max"] == 999.0


def test_overdue_requests_are_those_past_the_deadline():
    from shoal.services.calls import overdue

    started = {"a": 100.0, "b": 95.0, "c": 89.0}
    assert overdue(started, 10.0, now=100.0) == ["c"]
    assert overdue(started, 4.0, now=100.0) == ["b", "c"]
    assert overdue({}, 1.0) == []
