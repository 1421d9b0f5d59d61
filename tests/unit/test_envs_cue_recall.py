"""Cue-recall corridor: reset/step semantics, illegal actions, seeding, scripted policies."""

import statistics

import pytest

from shoal.rollout.envs import collect, episode_success, make_env, make_policy
from shoal.rollout.envs.cue_recall import CueRecallEnv


def walk(env, seed, actions):
    obs = [env.reset(seed)]
    steps = [env.step(a) for a in actions]
    return obs + [s[0] for s in steps], steps


def test_cue_then_distractors_then_junction():
    env = CueRecallEnv(corridor_length=4)
    first = env.reset(seed=1)
    cue = first.split()[1].rstrip(".")
    assert first.startswith("cue: ") and cue in ("left", "right")
    middle = [env.step("go") for _ in range(5)]
    assert all(r == 0.0 and not d and not i["illegal"] for _, r, d, i in middle)
    assert all(o.startswith("corridor: ") and "left" not in o and "right" not in o for o, *_ in middle[:4])
    assert middle[-1][0] == "junction: say left or right."
    _, r, done, info = env.step(cue)
    assert (r, done, info) == (1.0, True, {"illegal": False, "success": True})
    with pytest.raises(RuntimeError):
        env.step("go")


def test_wrong_turn_and_lenient_parsing():
    env = CueRecallEnv(corridor_length=0)
    cue = env.reset(seed=2).split()[1].rstrip(".")
    wrong = "right" if cue == "left" else "left"
    assert env.step(" GO ")[1:3] == (0.0, False)
    obs, r, done, info = env.step(wrong.upper() + ".")
    assert (r, done, info["success"]) == (-1.0, True, False) and "wrong" in obs


def test_illegal_actions_are_penalised_with_a_message_and_do_not_move():
    env = CueRecallEnv(corridor_length=1, illegal_penalty=-0.25)
    env.reset(seed=0)
    obs, r, done, info = env.step("jump!!")
    assert (r, done, info["illegal"]) == (-0.25, False, True) and "invalid action" in obs and "go" in obs
    env.step("go"), env.step("go")  # corridor, then the junction
    obs, r, done, info = env.step("go")  # "go" is not a choice at the junction
    assert (r, done, info["illegal"]) == (-0.25, False, True) and "left or right" in obs
    assert env.step("")[2] is False  # empty text: illegal, not a crash


def test_step_limit_ends_the_episode_unsolved():
    env = CueRecallEnv(corridor_length=2, max_steps=5)
    env.reset(seed=0)
    results = [env.step("???") for _ in range(5)]
    assert [d for _, _, d, _ in results] == [False] * 4 + [True]
    assert results[-1][3] == {"illegal": True, "success": False}


def test_seeded_and_both_cues_occur():
    env = CueRecallEnv(corridor_length=6)
    assert walk(env, 7, ["go"] * 7) == walk(env, 7, ["go"] * 7)
    cues = {env.reset(seed=s).split()[1] for s in range(20)}
    assert cues == {"left.", "right."}


def test_junction_looks_the_same_for_both_cues():
    env = CueRecallEnv(corridor_length=3)
    seen = {}
    for s in range(10):
        cue = env.reset(seed=s).split()[1]
        seen[cue] = walk(env, s, ["go"] * 4)[0][-1]
    assert len(seen) == 2 and len(set(seen.values())) == 1


def mean_return_and_success(env, name, n=60):
    res = collect(env, [(name, make_policy(name, env))], n, seed=0, max_turns=100)
    assert not res.dropped
    return statistics.fmean(e.total_return for _, e in res.episodes), statistics.fmean(
        episode_success(e) for _, e in res.episodes
    )


def test_scripted_policies_reach_their_expected_returns():
    env = make_env("cue_recall", corridor_length=15)
    r = {name: mean_return_and_success(env, name) for name in ("optimal", "mediocre", "memoryless", "random")}
    assert r["optimal"] == (1.0, 1.0)
    assert 0.2 < r["mediocre"][0] < 0.8  # forgets half the time: ~0.5
    assert abs(r["memoryless"][0]) < 0.4 and abs(r["random"][0]) < 0.45  # chance: ~0
    assert r["optimal"][0] > r["mediocre"][0] > max(r["memoryless"][0], r["random"][0])
