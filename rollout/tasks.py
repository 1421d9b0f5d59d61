"""Built-in single-turn task with a closed-form gold reward (Gao et al. 2022 style).

`keywords`: the prompt names a topic (`write about ko :`); a response is a few words. Each
topic owns a set of generated pseudo-words that share its syllable (`kofa`, `kobi`, ...).
The gold reward is the fraction of the first `response_words` words that belong to the
prompt's topic: 0 for off-topic or empty answers, 1 for a fully on-topic answer.

Demonstrations (for the SFT warm-up) draw words uniformly from the whole vocabulary, so the
SFT policy writes fluent but mostly off-topic answers (gold ~ 1/num_topics): the policy can
only get better by RL. Preference pairs for the reward model are labelled by the gold reward
through a Bradley-Terry choice, so the learned reward model is a proxy of the gold one.

A user task is any object with the same methods, named in config as `module:factory`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Protocol

from shoal.types import Prompt

_ONSETS = ["ko", "ma", "ti", "ru", "se", "ly", "pa", "ne", "du", "vi", "ho", "ze"]
_SUFFIXES = ["fa", "bi", "lo", "nu", "ke", "ra", "mi", "to", "su", "we", "pe", "ga"]


class Task(Protocol):
    """What a single-turn task provides to Shoal."""

    name: str

    def sample_prompt(self, rng: random.Random) -> tuple[str, dict[str, Any]]: ...

    def gold_reward(self, meta: dict[str, Any], response_text: str) -> float: ...

    def demonstration(self, rng: random.Random) -> tuple[str, str, dict[str, Any]]: ...

    def corpus(self) -> list[str]: ...


@dataclass(frozen=True)
class KeywordsTask:
    """Topic-keyword task; see the module docstring."""

    num_topics: int = 6
    words_per_topic: int = 6
    response_words: int = 6
    name: str = "keywords"

    def __post_init__(self) -> None:
        if not 1 < self.num_topics <= len(_ONSETS):
            raise ValueError(f"task.num_topics must be in 2..{len(_ONSETS)}, got {self.num_topics}")
        if not 1 < self.words_per_topic <= len(_SUFFIXES):
            raise ValueError(f"task.words_per_topic must be in 2..{len(_SUFFIXES)}, got {self.words_per_topic}")

    @property
    def topics(self) -> list[str]:
        return _ONSETS[: self.num_topics]

    def topic_words(self, topic: str) -> list[str]:
        return [topic + s for s in _SUFFIXES[: self.words_per_topic]]

    @property
    def vocabulary(self) -> list[str]:
        return [w for t in self.topics for w in self.topic_words(t)]

    def prompt_text(self, topic: str) -> str:
        return f"write about {topic} :"

    def sample_prompt(self, rng: random.Random) -> tuple[str, dict[str, Any]]:
        topic = rng.choice(self.topics)
        return self.prompt_text(topic), {"topic": topic}

    def gold_reward(self, meta: dict[str, Any], response_text: str) -> float:
        on_topic = set(self.topic_words(meta["topic"]))
        words = response_text.split()[: self.response_words]
        return sum(w in on_topic for w in words) / self.response_words

    def sample_response(self, rng: random.Random, topic: str, p_on_topic: float, n_words: int | None = None) -> str:
        """Words that are on-topic with probability p_on_topic, else uniform over all words."""
        on, everything = self.topic_words(topic), self.vocabulary
        n = self.response_words if n_words is None else n_words
        return " ".join(rng.choice(on) if rng.random() < p_on_topic else rng.choice(everything) for _ in range(n))

    def random_response(self, rng: random.Random, meta: dict[str, Any]) -> str:
        """A response for preference data: a random on-topic fraction; 40% of the time a shorter
        or longer answer, and 30% of the time words drawn from a pool of one or two words (so
        repetitions occur). Without short and repetitive answers in the comparisons, PPO finds
        exactly those blind spots of the reward model (empty answers, `mara mara mara ...`)."""
        u, p = rng.random(), rng.random()
        n = self.response_words
        if 0.6 <= u < 0.85:
            n = rng.randint(0, self.response_words - 1)
        elif u >= 0.85:
            n = self.response_words + rng.randint(1, 2)
        if rng.random() < 0.3:
            pool = self.sample_response(rng, meta["topic"], p, rng.randint(1, 2)).split()
            return " ".join(rng.choice(pool) for _ in range(n))
        return self.sample_response(rng, meta["topic"], p, n)

    def demonstration(self, rng: random.Random) -> tuple[str, str, dict[str, Any]]:
        text, meta = self.sample_prompt(rng)
        return text, self.sample_response(rng, meta["topic"], 0.0), meta

    def corpus(self) -> list[str]:
        rng = random.Random(0)
        lines = [self.prompt_text(t) + " " + " ".join(self.topic_words(t)) for t in self.topics]
        lines += [" ".join(p for p in self.demonstration(rng)[:2]) for _ in range(2000)]
        return lines


def build_task(name: str, **kwargs: Any) -> Task:
    """A built-in task by name, or a user task from `module:factory` (called with no args)."""
    if name == "keywords":
        return KeywordsTask(**kwargs)
    if ":" in name:
        from shoal.utils import import_object

        return import_object(name)()
    raise ValueError(f"task.name: unknown task {name!r} (built-in: keywords; or module:factory)")


def task_from_config(task_cfg: Any) -> Task:
    if task_cfg.name == "keywords":
        return KeywordsTask(task_cfg.num_topics, task_cfg.words_per_topic, task_cfg.response_words)
    return build_task(task_cfg.name)


class TaskPromptSource:
    """A PromptSource: seeded prompts from a task, tokenized with the policy's tokenizer."""

    def __init__(self, task: Task, tokenizer: Any, seed: int, prefix: str = "p") -> None:
        self.task, self.tokenizer = task, tokenizer
        self.rng = random.Random(seed)
        self.prefix, self.count = prefix, 0

    def next_batch(self, n: int) -> list[Prompt]:
        out = []
        for _ in range(n):
            text, meta = self.task.sample_prompt(self.rng)
            ids = encode_prompt(self.tokenizer, text)
            out.append(Prompt(f"{self.task.name}-{self.prefix}{self.count}", text, ids, meta))
            self.count += 1
        return out

    def state_dict(self) -> dict[str, Any]:
        """The stream's position (JSON): a resumed run draws the prompts it would have drawn."""
        version, state, gauss = self.rng.getstate()
        return {"count": self.count, "rng": [version, list(state), gauss]}

    def load_state_dict(self, d: dict[str, Any]) -> None:
        version, state, gauss = d["rng"]
        self.rng.setstate((version, tuple(state), gauss))
        self.count = int(d["count"])


def encode_prompt(tokenizer: Any, text: str) -> list[int]:
    """Prompt token ids: BOS (when the tokenizer has one) + the text, no EOS."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    bos = getattr(tokenizer, "bos_token_id", None)
    return ([bos] if bos is not None else []) + list(ids)


def keywords_gold(prompt: Prompt, response_text: str) -> float:
    """The default `keywords` task's gold reward as a rule function
    (`reward.rule_functions: [shoal.rollout.tasks:keywords_gold]`): RL on the true reward."""
    return KeywordsTask().gold_reward(prompt.meta, response_text)
