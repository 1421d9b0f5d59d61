"""EpisodeWorker: guarded environments, seeds, evaluation merge; EpisodeReplay: pending
inserts under the rate limiter lose nothing; model bundles."""

from __future__ import annotations

import math

import numpy as np
import pytest

from shoal.buffer.episode_replay import EpisodeReplay
from shoal.buffer.prioritized import PrioritizedSequenceReplay
from shoal.core import ListMetrics
from shoal.rollout.envs.base import RandomPolicy
from shoal.rollout.envs.cue_recall import ACTIONS, CueRecallEnv
from shoal.rollout.envs.faults import FaultyEnv
from shoal.rollout.episode_worker import EnvFailure, EpisodeWorker, GuardedEnv, eval_seed, summarize_eval, train_seed
from shoal.types import Episode, Turn, VersionedWeights


class ScriptedAgent:
    """A scripted policy as an EpisodeAgent (random legal actions), states = turn index."""

    engine = "scripted"

    def __init__(self) -> None:
        self.policy_version = 0

    def play(self, env, episode_id, seed, max_turns, greedy):
        pol = RandomPolicy(ACTIONS)
        pol.reset(seed)
        obs, turns = env.reset(seed=seed), []
        for _ in range(max_turns):
            a = pol.act(obs)
            nxt, r, done, info = env.step(a)
            turns.append(Turn(obs, a, r, done, info))
            obs = nxt
            if done:
                break
        return Episode(episode_id, env.name, turns, self.policy_version, final_observation=obs), np.zeros(
            (len(turns), 2, 3), np.float32
        )

    def load_weights(self, weights):
        self.policy_version = weights.version


def test_guarded_env_turns_contract_violations_into_env_failure():
    env = GuardedEnv(FaultyEnv(fault="nan", inner="cue_recall", every=1, at_turn=2))
    assert env.name == "faulty_cue_recall"
    env.reset(seed=3)
    env.step("go")
    with pytest.raises(EnvFailure) as e:
        env.step("go")
    assert e.value.turn == 1 and "non-finite reward" in e.value.reason
    raising = GuardedEnv(FaultyEnv(fault="raise", every=1, at_turn=0))
    with pytest.raises(EnvFailure, match="reset"):
        raising.reset(seed=0)


def test_worker_drops_bad_episodes_names_them_and_plays_on():
    sink = ListMetrics()
    w = EpisodeWorker(
        FaultyEnv(fault="nonstring", every=2, at_turn=1), ScriptedAgent(), "rollout-7", 7, 50, seed=1, metrics=sink
    )
    batch = w.run(6)
    seeds = [train_seed(1, 7, j) for j in range(6)]
    assert len(batch.dropped) == sum(s % 2 == 0 for s in seeds) > 0
    assert len(batch.episodes) + len(batch.dropped) == 6 and len(batch.states) == len(batch.episodes)
    d = batch.dropped[0]
    assert (
        d.task == "faulty_cue_recall" and d.episode_id.startswith("rollout-7-") and "non-string observation" in d.reason
    )
    assert [e for e in sink.events if e[0] == "episode_dropped"] and w.status()["dropped_episodes"] == len(
        batch.dropped
    )
    assert all(ep.worker_id == "rollout-7" for ep in batch.episodes)
    logged = {k for _, m in sink.records for k in m}
    assert {"rollout/episodes", "rollout/dropped_episodes", "rollout/turns_per_s", "rollout/success_rate"} <= logged
    # episode ids continue across calls; the next call uses the next seeds
    assert w.run(1).policy_version == 0 and w.attempts == 7


def test_weights_stamp_policy_version_and_eval_is_reproducible():
    w = EpisodeWorker(CueRecallEnv(corridor_length=3), ScriptedAgent(), "rollout-0", 0, 50, seed=0)
    w.load_weights(VersionedWeights(version=4, tensors={}))
    assert all(ep.policy_version == 4 for ep in w.run(2).episodes)
    a, b = w.evaluate(range(5)), w.evaluate(range(5))
    assert a == b and len(a["returns"]) == 5
    merged = summarize_eval([w.evaluate(range(0, 5, 2)), w.evaluate(range(1, 5, 2))])
    assert merged["episodes"] == 5 and math.isclose(merged["return_mean"], float(np.mean(a["returns"])))
    assert eval_seed(0, 0) != train_seed(0, 0, 0)


def _episode(i: int, version: int = 0) -> tuple[Episode, None]:
    return Episode(f"e{i}", "t", [Turn("o", "a", 1.0, True)], version), None


def test_episode_replay_holds_back_what_the_rate_limiter_refuses_and_loses_nothing():
    replay = PrioritizedSequenceReplay(capacity=100, samples_per_insert=1.0, min_size_to_sample=4, error_buffer=4)
    er = EpisodeReplay(replay, cut=None)
    er.add([_episode(i) for i in range(20)])
    held_first = len(er)
    assert held_first < 20 and len(er.pending) == 20 - held_first and er.free() == 0
    seen = 0
    for _ in range(200):
        if er.sample(4, 0) is not None:
            seen += 4
        if not er.pending:
            break
    assert not er.pending and len(er) == 20 and replay.inserts == 20
    assert er.stats()["buffer/pending"] == 0 and er.stats()["buffer/episodes_added"] == 20


def test_rate_limited_inserts_count_each_refused_item_once():
    # The pending queue is re-offered on every add and sample; an item refused again while it
    # waits is one refusal, not one per re-offer.
    replay = PrioritizedSequenceReplay(capacity=100, samples_per_insert=1.0, min_size_to_sample=4, error_buffer=4)
    er = EpisodeReplay(replay, cut=None)
    er.add([_episode(i) for i in range(20)])
    refused_first = len(er.pending)
    assert refused_first > 0 and er.stats()["buffer/rate_limited_inserts"] == refused_first
    for _ in range(5):  # re-offers that take nothing: the learner has not sampled
        er.flush()
    er.add([_episode(20)])  # one more item, refused too
    assert len(er.pending) == refused_first + 1
    assert er.stats()["buffer/rate_limited_inserts"] == refused_first + 1
    for _ in range(200):  # drain; every item was refused at most once
        er.sample(4, 0)
        if not er.pending:
            break
    assert not er.pending and replay.inserts == 21
    assert er.stats()["buffer/rate_limited_inserts"] == refused_first + 1


def test_episode_replay_cuts_items_and_keeps_recent_episodes():
    calls = []

    def cut(ep, states):
        calls.append(ep.episode_id)
        return [ep, ep]

    er = EpisodeReplay(PrioritizedSequenceReplay(capacity=50), cut=cut, recent=2)
    n = er.add([(_episode(i)[0], np.zeros((1, 2, 3))) for i in range(3)])
    assert n == 6 and len(er) == 6 and calls == ["e0", "e1", "e2"]
    assert [ep.episode_id for ep, _ in er.recent_episodes(5)] == ["e1", "e2"]


def test_model_bundle_round_trip_and_refuses_escaping_paths(tmp_path):
    from shoal.services.weights import pack_dir, unpack_dir

    (tmp_path / "src" / "sub").mkdir(parents=True)
    (tmp_path / "src" / "config.json").write_text("{}")
    (tmp_path / "src" / "sub" / "w.bin").write_bytes(b"\x00\x01")
    out = unpack_dir(pack_dir(str(tmp_path / "src")), str(tmp_path / "dst"))
    assert (tmp_path / "dst" / "sub" / "w.bin").read_bytes() == b"\x00\x01"
    assert out.endswith("dst")
    with pytest.raises(ValueError, match="leaves"):
        unpack_dir({"../evil": b"x"}, str(tmp_path / "dst2"))


def test_model_bundles_unpack_once_per_node_and_content(tmp_path):
    """Every actor start used to unpack its bundles into a fresh temporary directory that was
    never removed (up to 2 GiB a restart); now a node keeps one copy per content."""
    from shoal.services.weights import pack_dir, unpack_cached

    (tmp_path / "src" / "sub").mkdir(parents=True)
    (tmp_path / "src" / "config.json").write_text("{}")
    (tmp_path / "src" / "sub" / "w.bin").write_bytes(b"\x00\x01")
    bundle, cache = pack_dir(str(tmp_path / "src")), tmp_path / "cache"
    first = unpack_cached(bundle, "policy", str(cache))
    assert unpack_cached(dict(bundle), "policy", str(cache)) == first  # a restart: the same copy
    assert (tmp_path / "cache").joinpath(first, "sub", "w.bin").read_bytes() == b"\x00\x01"
    other = unpack_cached({**bundle, "sub/w.bin": b"\x00\x02"}, "policy", str(cache))
    assert other != first and (cache / other / "sub" / "w.bin").read_bytes() == b"\x00\x02"
    # a path moved between files is other content, not a hash collision
    assert unpack_cached({"a": b"bc"}, "r", str(cache)) != unpack_cached({"ab": b"c"}, "r", str(cache))
    assert sorted(p.name.split("-")[0] for p in cache.iterdir()) == ["policy", "policy", "r", "r"]  # no staging left
    with pytest.raises(ValueError, match="leaves"):
        unpack_cached({"../evil": b"x"}, "policy", str(cache))
    assert len(list(cache.iterdir())) == 4


def test_an_actor_start_race_on_one_model_cache_keeps_one_complete_copy(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from shoal.services.weights import unpack_cached

    bundle = {f"f{i}": bytes([i]) * 10_000 for i in range(50)}
    with ThreadPoolExecutor(8) as pool:
        paths = set(pool.map(lambda _: unpack_cached(bundle, "policy", str(tmp_path)), range(16)))
    assert len(paths) == 1 and [p.name for p in tmp_path.iterdir()] == [paths.pop().rsplit("/", 1)[1]]
    assert sorted(p.name for p in (tmp_path / next(tmp_path.iterdir()).name).iterdir()) == sorted(bundle)


def test_lm_candidates_are_k_per_observation_and_the_same_for_actor_and_learner(tmp_path):
    import random as _random
    import types

    from shoal.learner.r2d2.candidates import LMCandidates
    from shoal.models import build_model_dir

    class Corpus:
        def corpus(self):
            return ["go left right", "you see a cue: left", "junction"]

    d = build_model_dir(
        Corpus(),
        types.SimpleNamespace(vocab_size=280, hidden_size=64, num_layers=1, num_heads=2),
        tmp_path / "lm",
        seed=0,
    )
    a = LMCandidates(str(d), k=3, max_new_tokens=4, seed=5)
    b = LMCandidates(str(d), k=3, max_new_tokens=4, seed=5)
    first = a("junction")
    assert len(first) == 3 and all(isinstance(c, str) for c in first)
    assert b.for_actor("junction", 3, _random.Random(1)) == first  # another process, same seed: same set
    assert a("junction") == first and a.sampled == 3  # cached
    assert len(a("corridor")) == 3 and a.sampled == 6


def test_episode_room_counts_whole_episodes_and_is_positive_whenever_items_fit():
    replay = PrioritizedSequenceReplay(capacity=100, samples_per_insert=1.0, min_size_to_sample=4, error_buffer=4)
    er = EpisodeReplay(replay, cut=lambda ep, st: [ep] * 5)
    assert er.episode_room() == er.free() > 0  # nothing seen yet: one item per episode
    er.add([(_episode(0)[0], None)])
    assert er.items_per_episode() == 5.0
    assert er.episode_room() == -(-er.free() // 5)
    for _ in range(50):  # drain: the learner samples until inserts are allowed again
        er.sample(4, 0)
        if er.free() > 0:
            break
    assert er.free() > 0 and er.episode_room() >= 1
