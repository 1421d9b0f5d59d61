"""Mini-Wordle on a generated vocabulary: an information-gathering game (LMRL-Gym "Wordle").

POMDP. Hidden state: the secret word, drawn from the reset seed out of a fixed vocabulary of
`vocab_size` words of `word_length` letters over `alphabet` (generated from `vocab_seed`, so
it is the same for every episode; `vocabulary` / `legal_actions()` list it). Each action is a
guess; the observation is Wordle's per-letter feedback: G = right letter, right place;
Y = in the word elsewhere; _ = absent (repeated letters are matched at most as often as they
occur in the secret). Reward -1 per wrong guess, 0 for the right one (episode ends,
success); after `max_guesses` guesses the episode ends unsolved, so returns lie in
[-max_guesses, 0] (LMRL-Gym's scale). A guess that is not in the vocabulary is illegal: it
costs `illegal_penalty` (-1) and a guess, and the observation says so.
  first observation: "wordle: guess the secret 4-letter word (letters abcdef) in 6 guesses.
                      feedback: G right place, Y elsewhere, _ absent."
  after a guess:     "bead: G_Y_. 5 guesses left."
Only the history of feedback identifies the secret: a policy that reads only the last
observation plays much worse than one that keeps every constraint.
info: {"illegal": bool, "success": bool}.
"""

from __future__ import annotations

import itertools
import random
import re
from collections.abc import Callable, Sequence
from typing import Any

from shoal.rollout.envs.base import Policy, RandomPolicy

_GUESS_RE = re.compile(r"^([a-z]+): ([GY_]+)\.")


def feedback(guess: str, secret: str) -> str:
    """Wordle feedback of `guess` against `secret`: one of G, Y, _ per letter."""
    out = ["_"] * len(guess)
    unmatched: dict[str, int] = {}
    for i, (g, s) in enumerate(zip(guess, secret, strict=True)):
        if g == s:
            out[i] = "G"
        else:
            unmatched[s] = unmatched.get(s, 0) + 1
    for i, g in enumerate(guess):
        if out[i] != "G" and unmatched.get(g, 0) > 0:
            out[i] = "Y"
            unmatched[g] -= 1
    return "".join(out)


def generate_vocabulary(word_length: int, alphabet: str, size: int, seed: int) -> list[str]:
    """`size` distinct words drawn uniformly from all alphabet^word_length strings, sorted."""
    total = len(alphabet) ** word_length
    if not 0 < size <= total:
        raise ValueError(f"vocab_size must be in 1..{total} for {word_length} letters over {alphabet!r}, got {size}")
    words = ["".join(w) for w in itertools.product(alphabet, repeat=word_length)]
    return sorted(random.Random(seed).sample(words, size))


class WordleEnv:
    """See the module docstring."""

    def __init__(
        self,
        word_length: int = 4,
        alphabet: str = "abcdef",
        vocab_size: int = 64,
        max_guesses: int = 6,
        vocab_seed: int = 0,
        illegal_penalty: float = -1.0,
        name: str = "wordle",
    ) -> None:
        if len(set(alphabet)) != len(alphabet) or not alphabet.isalpha() or not alphabet.islower():
            raise ValueError(f"alphabet must be distinct lowercase letters, got {alphabet!r}")
        self.vocabulary = generate_vocabulary(word_length, alphabet, vocab_size, vocab_seed)
        self.words = set(self.vocabulary)
        self.word_length, self.alphabet, self.max_guesses = word_length, alphabet, max_guesses
        self.illegal_penalty, self.name = illegal_penalty, name
        self.secret, self.guesses, self.done = self.vocabulary[0], 0, True

    def legal_actions(self) -> list[str]:
        return list(self.vocabulary)

    def reset(self, seed: int | None = None) -> str:
        self.secret = random.Random(seed).choice(self.vocabulary)
        self.guesses, self.done = 0, False
        return (
            f"wordle: guess the secret {self.word_length}-letter word (letters {self.alphabet}) in {self.max_guesses} guesses. "
            "feedback: G right place, Y elsewhere, _ absent."
        )

    def step(self, action: str) -> tuple[str, float, bool, dict[str, Any]]:
        if self.done:
            raise RuntimeError("step() after the episode ended; call reset()")
        self.guesses += 1
        left = self.max_guesses - self.guesses
        word = action.strip().lower().rstrip(".!").strip() if isinstance(action, str) else ""
        if word == self.secret:
            self.done = True
            return f"{word}: {'G' * self.word_length}. solved.", 0.0, True, {"illegal": False, "success": True}
        self.done = left <= 0
        if word not in self.words:
            obs = f"invalid guess {action!r:.40}: not a {self.word_length}-letter word of the word list. {left} guesses left."
            return obs, self.illegal_penalty, self.done, {"illegal": True, "success": False}
        return (
            f"{word}: {feedback(word, self.secret)}. {left} guesses left.",
            -1.0,
            self.done,
            {"illegal": False, "success": False},
        )


# ---- scripted policies ---------------------------------------------------------------------


def consistent(words: Sequence[str], constraints: Sequence[tuple[str, str]]) -> list[str]:
    """The words that would have produced every (guess, feedback) pair seen."""
    return [w for w in words if all(feedback(g, w) == f for g, f in constraints)]


def best_split_guess(vocabulary: Sequence[str], candidates: Sequence[str]) -> str:
    """The vocabulary word whose feedback splits `candidates` into the most groups (ties: a
    candidate first, then alphabetical), i.e. greedy maximum information."""
    cand = set(candidates)
    return min(vocabulary, key=lambda g: (-len({feedback(g, s) for s in candidates}), g not in cand, g))


class WordlePolicy:
    """Keeps the (guess, feedback) constraints of the history (or only the last one, when
    `memoryless`) and guesses among the words consistent with them: with `greedy` the
    best-splitting word (near-optimal), otherwise a uniform one; with probability `epsilon`
    a uniform vocabulary word instead."""

    def __init__(
        self, env: WordleEnv, name: str, greedy: bool = False, memoryless: bool = False, epsilon: float = 0.0
    ) -> None:
        self.vocabulary, self.name, self.greedy, self.memoryless = list(env.vocabulary), name, greedy, memoryless
        self.epsilon, self.rng, self.constraints = epsilon, random.Random(0), []
        self._opening: str | None = None  # the greedy first guess (the same every episode)

    def reset(self, seed: int | None = None) -> None:
        self.rng, self.constraints = random.Random(seed), []

    def act(self, observation: str) -> str:
        m = _GUESS_RE.match(observation)
        if m:
            self.constraints = [*([] if self.memoryless else self.constraints), (m.group(1), m.group(2))]
        if self.rng.random() < self.epsilon:
            return self.rng.choice(self.vocabulary)
        candidates = consistent(self.vocabulary, self.constraints) or self.vocabulary
        if self.greedy and not self.constraints:
            self._opening = self._opening or best_split_guess(self.vocabulary, candidates)
            return self._opening
        if self.greedy and len(candidates) > 2:
            return best_split_guess(self.vocabulary, candidates)
        return self.rng.choice(candidates)


POLICIES: dict[str, Callable[[WordleEnv], Policy]] = {
    "optimal": lambda env: WordlePolicy(env, "optimal", greedy=True),
    "consistent": lambda env: WordlePolicy(env, "consistent"),
    "memoryless": lambda env: WordlePolicy(env, "memoryless", memoryless=True),
    "mediocre": lambda env: WordlePolicy(env, "mediocre", memoryless=True, epsilon=0.5),
    "random": lambda env: RandomPolicy(env.legal_actions()),
}
