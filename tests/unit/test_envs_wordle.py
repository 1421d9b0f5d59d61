"""Mini-Wordle: feedback rules, vocabulary, reset/step semantics, illegal guesses, policies."""

import statistics

import pytest

from shoal.rollout.envs import collect, episode_success, make_env, make_policy
from shoal.rollout.envs.wordle import WordleEnv, consistent, feedback, generate_vocabulary


@pytest.mark.parametrize(
    "guess, secret, expected",
    [
        ("abcd", "abcd", "GGGG"),
        ("abcd", "efef", "____"),
        ("aabb", "abab", "GYYG"),
        ("aaaa", "abcd", "G___"),
        ("baaa", "aabc", "YGY_"),
        ("dcba", "abcd", "YYYY"),
    ],
)
def test_feedback(guess, secret, expected):
    assert feedback(guess, secret) == expected


def test_vocabulary_is_seeded_distinct_and_checked():
    v = generate_vocabulary(4, "abcdef", 64, seed=0)
    assert v == generate_vocabulary(4, "abcdef", 64, seed=0) != generate_vocabulary(4, "abcdef", 64, seed=1)
    assert len(set(v)) == 64 and all(len(w) == 4 and set(w) <= set("abcdef") for w in v)
    with pytest.raises(ValueError, match="vocab_size"):
        WordleEnv(alphabet="ab", word_length=2, vocab_size=5)
    assert WordleEnv().legal_actions() == v


def test_guesses_feedback_and_solving():
    env = WordleEnv()
    first = env.reset(seed=3)
    assert "4-letter" in first and "6 guesses" in first
    secret = env.secret
    wrong = next(w for w in env.vocabulary if w != secret)
    obs, r, done, info = env.step(wrong)
    assert obs == f"{wrong}: {feedback(wrong, secret)}. 5 guesses left." and (r, done) == (-1.0, False)
    obs, r, done, info = env.step(f"  {secret.upper()}. ")
    assert (r, done, info) == (0.0, True, {"illegal": False, "success": True})
    assert WordleEnv().reset(seed=3) == first


def test_secret_is_seeded():
    a, b = WordleEnv(), WordleEnv()
    a.reset(seed=11), b.reset(seed=11)
    assert a.secret == b.secret
    assert len({(a.reset(seed=s), a.secret)[1] for s in range(30)}) > 10


def test_illegal_guess_costs_a_guess_with_a_message_and_the_game_ends():
    env = WordleEnv(max_guesses=3, illegal_penalty=-2.0)
    env.reset(seed=0)
    obs, r, done, info = env.step("zzzz")
    assert (r, done, info["illegal"]) == (-2.0, False, True) and "invalid guess" in obs and "2 guesses left" in obs
    assert env.step("abc")[3]["illegal"] and env.step("hello world")[2] is True


def test_scripted_policies_order():
    env = make_env("wordle")
    stats = {}
    for name in ("optimal", "consistent", "memoryless", "mediocre", "random"):
        res = collect(env, [(name, make_policy(name, env))], 60, seed=0, max_turns=20)
        stats[name] = (
            statistics.fmean(e.total_return for _, e in res.episodes),
            statistics.fmean(episode_success(e) for _, e in res.episodes),
        )
    assert stats["optimal"][1] == 1.0 and stats["optimal"][0] > -2.0
    assert stats["optimal"][0] >= stats["consistent"][0] - 0.1 > stats["mediocre"][0] > stats["random"][0] + 1.0
    assert stats["random"][1] < 0.25


def test_consistent_filters_by_every_constraint():
    words = ["abcd", "abce", "bacd", "ffff"]
    assert consistent(words, [("abcd", feedback("abcd", "abce"))]) == ["abce"]
    assert consistent(words, []) == words
