"""Run every reward scorer on a batch and merge their terms into ScoredRollouts.

The reward PPO trains on is the sum of all scorers' `sequence` values (reward model + rule
rewards); the KL penalty is formed by the learner from `ref_logprobs`; `metrics_only` values
(the gold reward) are reported, never trained on.

Guard: a rollout for which any scorer produced a non-finite number (sequence value, metric
or reference log-prob), or reference log-probs of the wrong length, is *rejected*: it is
not returned, so it is never trained on, and one `Rejection` record (the first problem
found) says which scorer, field and value. Scorers that disagree about their contract
(wrong number of terms, two scorers writing the same key) raise ValueError: that is a
configuration bug, not bad data.

Run: `scored, rejections = score_rollouts(build_scorers(cfg, task), rollouts)`; tests in
tests/unit/test_scorers.py.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from shoal.types import RewardTerms, Rollout, ScoredRollout


@dataclass(frozen=True)
class Rejection:
    """Why one rollout was dropped: e.g. (p7, reward_model, sequence.reward_model, nan)."""

    prompt_id: str
    scorer: str
    field: str
    value: Any


def _check_shapes(
    rollouts: Sequence[Rollout], per_scorer_terms: Sequence[Sequence[RewardTerms]], names: Sequence[str]
) -> None:
    if len(per_scorer_terms) != len(names):
        raise ValueError(f"{len(per_scorer_terms)} term lists for {len(names)} scorer names {list(names)}")
    for name, terms in zip(names, per_scorer_terms):
        if len(terms) != len(rollouts):
            raise ValueError(f"scorer {name!r} returned {len(terms)} RewardTerms for {len(rollouts)} rollouts")


def _first_problem(rollout: Rollout, terms: RewardTerms, scorer: str) -> Rejection | None:
    """The first non-finite value (or wrong-length ref_logprobs) in one scorer's terms."""
    pid = rollout.prompt.prompt_id
    for kind, values in (("sequence", terms.sequence), ("metrics_only", terms.metrics_only)):
        for key, v in values.items():
            if not _finite(v):
                return Rejection(pid, scorer, f"{kind}.{key}", v)
    if terms.ref_logprobs is not None:
        if len(terms.ref_logprobs) != len(rollout.response_ids):
            return Rejection(pid, scorer, "ref_logprobs.length", len(terms.ref_logprobs))
        for t, v in enumerate(terms.ref_logprobs):
            if not _finite(v):
                return Rejection(pid, scorer, f"ref_logprobs[{t}]", v)
    return None


def _finite(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


def _put(into: dict[str, float], new: dict[str, float], owner: dict[str, str], scorer: str) -> None:
    for key, v in new.items():
        if key in owner:
            raise ValueError(f"scorers {owner[key]!r} and {scorer!r} both report {key!r}")
        into[key], owner[key] = float(v), scorer


def merge_one(terms: Sequence[RewardTerms], names: Sequence[str]) -> RewardTerms:
    """One rollout's terms from all scorers -> one RewardTerms (keys must not collide)."""
    sequence: dict[str, float] = {}
    metrics: dict[str, float] = {}
    owner: dict[str, str] = {}
    ref, ref_owner = None, None
    for t, name in zip(terms, names):
        _put(sequence, t.sequence, owner, name)
        _put(metrics, t.metrics_only, owner, name)
        if t.ref_logprobs is not None:
            if ref_owner is not None:
                raise ValueError(f"scorers {ref_owner!r} and {name!r} both report ref_logprobs")
            ref, ref_owner = [float(x) for x in t.ref_logprobs], name
    return RewardTerms(sequence=sequence, ref_logprobs=ref, metrics_only=metrics)


def merge_terms(
    rollouts: Sequence[Rollout], per_scorer_terms: Sequence[Sequence[RewardTerms]], scorer_names: Sequence[str]
) -> tuple[list[ScoredRollout], list[Rejection]]:
    """Merge every scorer's terms per rollout; reward = sum of sequence values.

    Returns the accepted ScoredRollouts (input order kept) and one Rejection per dropped one.
    """
    _check_shapes(rollouts, per_scorer_terms, scorer_names)
    scored: list[ScoredRollout] = []
    rejections: list[Rejection] = []
    for i, rollout in enumerate(rollouts):
        terms = [per_scorer[i] for per_scorer in per_scorer_terms]
        problem = next((p for t, n in zip(terms, scorer_names) if (p := _first_problem(rollout, t, n))), None)
        if problem is not None:
            rejections.append(problem)
            continue
        merged = merge_one(terms, scorer_names)
        scored.append(ScoredRollout(rollout, merged, float(sum(merged.sequence.values()))))
    return scored, rejections


def score_rollouts(scorers: Sequence[Any], rollouts: Sequence[Rollout]) -> tuple[list[ScoredRollout], list[Rejection]]:
    """Run every scorer on the batch, then `merge_terms`."""
    rollouts = list(rollouts)
    if not rollouts:
        return [], []
    per_scorer = [list(s.score(rollouts)) for s in scorers]
    return merge_terms(rollouts, per_scorer, [s.name for s in scorers])
