"""CHAI-style candidate utterances: k samples from a frozen causal LM per observation; no Ray.

CHAI (Verma et al. 2022) takes the max of the Q-function over k utterances sampled from a
language model instead of over a fixed action set; R2D2 for language uses the same trick
when the task's actions are free text (`r2d2.candidates: policy`). `LMCandidates` samples k
utterances for an observation from any local HF causal LM (for example the BC policy a
`shoal train` run with `algorithm: ilql, ilql.bc_only: true` checkpoints, which learned the
task's utterances from `shoal collect` data), with the transcript layout of
`learner.ilql.prompt_ids` and the KV-cached decoder of `rollout.ilql_decoding.ILQLPolicy`
(beta 0: plain sampling from the LM).

Deviations from CHAI, on purpose:
- candidates depend on the current observation only (not the whole dialogue history);
- sampling is seeded by (seed, observation text), so the actor that chose an action and the
  learner that computes max_a Q(h', a) at the next observation see the SAME candidate set
  (the replay item does not store it), and a bounded LRU cache makes repeated observations
  free. Duplicates are kept, so every set has exactly k entries (the learner needs fixed k).
"""

from __future__ import annotations

import random
import zlib
from collections import OrderedDict


class LMCandidates:
    """k sampled utterances per observation (module docstring)."""

    def __init__(
        self,
        model_dir: str,
        k: int,
        temperature: float = 1.0,
        max_new_tokens: int = 16,
        seed: int = 0,
        cache_size: int = 50_000,
    ) -> None:
        from shoal.learner.ilql.acting import ILQLPolicy
        from shoal.models import load_policy

        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        model, self.tokenizer = load_policy(model_dir)
        self.policy = ILQLPolicy(
            model, self.tokenizer, None, beta=0.0, temperature=temperature, max_new_tokens=max_new_tokens, seed=seed
        )
        self.k, self.seed, self.cache_size = k, seed, cache_size
        self.cache: OrderedDict[str, list[str]] = OrderedDict()
        self.sampled = 0

    def sample(self, observation: str) -> list[str]:
        """The k candidates of `observation` (cached; the same for every caller with this seed)."""
        if observation in self.cache:
            self.cache.move_to_end(observation)
            return list(self.cache[observation])
        from shoal.learner.ilql.learning import prompt_ids

        self.policy.reset(seed=zlib.crc32(f"{self.seed}\x00{observation}".encode()))
        ids = prompt_ids(self.tokenizer, [], observation)
        out = [self.tokenizer.decode(self.policy.decode(ids), skip_special_tokens=True).strip() for _ in range(self.k)]
        self.sampled += self.k
        self.cache[observation] = out
        if len(self.cache) > self.cache_size:
            self.cache.popitem(last=False)
        return list(out)

    def __call__(self, observation: str) -> list[str]:
        """Learner side: `R2D2Learner(candidate_fn=...)`."""
        return self.sample(observation)

    def for_actor(self, observation: str, k: int, rng: random.Random) -> list[str]:
        """Actor side: `QActor(candidate_fn=...)` (k and rng are fixed at construction here)."""
        return self.sample(observation)


__all__ = ["LMCandidates"]
