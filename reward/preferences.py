"""Preference pairs: generated from a task's gold reward, or read from a JSONL file.

Generation follows the synthetic "gold reward" set-up of Gao, Schulman & Hilton (2022): a
closed-form gold reward stands in for human labellers. For each prompt two responses are
drawn by `task.random_response` (different on-topic fractions and lengths, so pairs range
from easy to hard, and short answers are covered); the label is a Bradley-Terry choice,
P(a preferred) = sigmoid(bt_scale * (gold_a - gold_b)). Exact gold ties are skipped. The
labels are therefore noisy, like human ones: with bt_scale 8 and a gold gap of 1/6, the
better answer is chosen 79% of the time.

Ranked lists (InstructGPT ranks K = 4..9 answers per prompt): K answers for one prompt, ranked
by Plackett-Luce draws from the gold reward (`generate_ranked_lists`): the best answer is drawn
with P proportional to exp(bt_scale * gold), then the best of the rest, and so on; for K = 2
this is the Bradley-Terry label above.

File format (one JSON object per line, blank lines ignored), a pair or a ranked list:
    {"prompt": str, "chosen": str, "rejected": str, "meta": {...}?, "gold_chosen": float?, ...}
    {"prompt": str, "responses": [str, ...], "ranking": [int, ...], "meta": {...}?, "gold": [float, ...]?}
where `ranking` lists the indices of `responses` best first (a permutation). Every answer must
be non-empty and the answers of a record distinct; gold numbers finite.
`read_preference_file` raises `PreferenceFileError` naming file and line, e.g.
`prefs.jsonl:17: missing field 'rejected'`. `ranked(record)` reads either form as
(prompt, answers best first, their gold or None, meta).

Run: `generate_preference_pairs(KeywordsTask(), 4000, seed=0)`; tests in
tests/unit/test_preferences.py.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

REQUIRED_FIELDS = ("prompt", "chosen", "rejected")
NUMBER_FIELDS = ("gold_chosen", "gold_rejected")


class PreferenceFileError(ValueError):
    """A malformed preference file; the message starts with `file:line:`."""


def bt_probability(gold_a: float, gold_b: float, bt_scale: float) -> float:
    """Bradley-Terry P(a preferred to b) = sigmoid(bt_scale * (gold_a - gold_b))."""
    return 1.0 / (1.0 + math.exp(-bt_scale * (gold_a - gold_b)))


def _response(task: Any, rng: random.Random, meta: dict[str, Any]) -> str:
    """The task's own response generator for comparisons, else a random on-topic fraction."""
    if hasattr(task, "random_response"):
        return task.random_response(rng, meta)
    return task.sample_response(rng, meta["topic"], rng.random())


def _labelled_pair(task: Any, rng: random.Random, bt_scale: float) -> dict[str, Any] | None:
    """One prompt, two responses, a Bradley-Terry label; None on an exact gold tie."""
    prompt, meta = task.sample_prompt(rng)
    a, b = _response(task, rng, meta), _response(task, rng, meta)
    gold_a, gold_b = task.gold_reward(meta, a), task.gold_reward(meta, b)
    if gold_a == gold_b:
        return None
    if rng.random() >= bt_probability(gold_a, gold_b, bt_scale):
        a, b, gold_a, gold_b = b, a, gold_b, gold_a
    return {"prompt": prompt, "meta": meta, "chosen": a, "rejected": b, "gold_chosen": gold_a, "gold_rejected": gold_b}


def generate_preference_pairs(task: Any, n: int, seed: int, bt_scale: float = 8.0) -> list[dict[str, Any]]:
    """n gold-labelled pairs {prompt, meta, chosen, rejected, gold_chosen, gold_rejected}."""
    if not hasattr(task, "sample_response"):
        raise TypeError(
            f"task {getattr(task, 'name', task)!r} has no sample_response(); give reward.preference_file instead"
        )
    rng, pairs, tries = random.Random(seed), [], 0
    while len(pairs) < n:
        tries += 1
        if tries > 100 * n + 100:
            raise RuntimeError(
                f"only {len(pairs)} of {n} pairs after {tries} draws: the gold reward ties almost always"
            )
        pair = _labelled_pair(task, rng, bt_scale)
        if pair is not None:
            pairs.append(pair)
    return pairs


def write_jsonl(pairs: list[dict[str, Any]], path: str | Path) -> Path:
    """One JSON object per line; parent directories are created."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w") as f:
        for pair in pairs:
            f.write(json.dumps(pair) + "\n")
    return out


def generate_ranked_lists(task: Any, n: int, k: int, seed: int, bt_scale: float = 8.0) -> list[dict[str, Any]]:
    """n ranked lists {prompt, meta, responses, ranking, gold} of k answers each (Plackett-Luce
    labels from the gold reward); lists whose answers all tie on gold are skipped."""
    if k < 2:
        raise ValueError(f"a ranked list needs k >= 2 answers, got {k}")
    rng, lists, tries = random.Random(seed), [], 0
    while len(lists) < n:
        tries += 1
        if tries > 100 * n + 100:
            raise RuntimeError(
                f"only {len(lists)} of {n} lists after {tries} draws: the gold reward ties almost always"
            )
        prompt, meta = task.sample_prompt(rng)
        responses = [_response(task, rng, meta) for _ in range(k)]
        if len(set(responses)) < k:
            continue
        gold = [task.gold_reward(meta, r) for r in responses]
        if len(set(gold)) == 1:
            continue
        left, ranking = list(range(k)), []
        while left:
            weights = [math.exp(bt_scale * gold[i]) for i in left]
            ranking.append(left.pop(rng.choices(range(len(left)), weights=weights)[0]))
        lists.append({"prompt": prompt, "meta": meta, "responses": responses, "ranking": ranking, "gold": gold})
    return lists


def ranked(record: dict[str, Any]) -> tuple[str, list[str], list[float] | None, dict[str, Any]]:
    """A pair or a ranked list -> (prompt, answers best first, their gold rewards or None, meta)."""
    meta = record.get("meta") or {}
    if "responses" in record:
        order = record["ranking"]
        gold = record.get("gold")
        return (
            record["prompt"],
            [record["responses"][i] for i in order],
            [gold[i] for i in order] if gold else None,
            meta,
        )
    gold = None
    if "gold_chosen" in record and "gold_rejected" in record:
        gold = [record["gold_chosen"], record["gold_rejected"]]
    return record["prompt"], [record["chosen"], record["rejected"]], gold, meta


def ranked_pairs(record: dict[str, Any]) -> list[dict[str, Any]]:
    """Every (better, worse) pair of a record, as pair records (K = 2: the pair itself)."""
    prompt, answers, gold, meta = ranked(record)
    out = []
    for i in range(len(answers)):
        for j in range(i + 1, len(answers)):
            pair = {"prompt": prompt, "meta": meta, "chosen": answers[i], "rejected": answers[j]}
            if gold is not None:
                pair |= {"gold_chosen": gold[i], "gold_rejected": gold[j]}
            out.append(pair)
    return out


def _validate_list(obj: dict[str, Any]) -> str | None:
    if not isinstance(obj.get("prompt"), str):
        return "field 'prompt' must be a string"
    responses, ranking = obj["responses"], obj.get("ranking")
    if not isinstance(responses, list) or not all(isinstance(r, str) for r in responses):
        return "field 'responses' must be a list of strings"
    if len(responses) < 2:
        return f"a ranked list of {len(responses)} answer(s) compares nothing; give at least 2"
    if any(not r.strip() for r in responses):
        return f"response {next(i for i, r in enumerate(responses) if not r.strip())} is an empty answer"
    if len({r.strip() for r in responses}) < len(responses):
        return "two responses are the same answer"
    if ranking is None:
        return "missing field 'ranking' (indices of responses, best first)"
    if not isinstance(ranking, list) or sorted(
        x if isinstance(x, int) and not isinstance(x, bool) else -1 for x in ranking
    ) != list(range(len(responses))):
        return f"field 'ranking' must be a permutation of 0..{len(responses) - 1} (indices of responses, best first), got {ranking!r:.60}"
    if "meta" in obj and not isinstance(obj["meta"], dict):
        return f"field 'meta' must be an object, got {type(obj['meta']).__name__}"
    gold = obj.get("gold")
    if gold is not None:
        if not isinstance(gold, list) or len(gold) != len(responses):
            return "field 'gold' must be a list of one number per response"
        if any(isinstance(g, bool) or not isinstance(g, (int, float)) or not math.isfinite(g) for g in gold):
            return f"field 'gold' must hold finite numbers, got {gold!r:.60}"
    return None


def validate_pair(obj: Any) -> str | None:
    """The problem with one parsed line, or None when it is a valid pair or ranked list."""
    if not isinstance(obj, dict):
        return f"expected a JSON object, got {type(obj).__name__}"
    if "responses" in obj:
        return _validate_list(obj)
    for key in REQUIRED_FIELDS:
        if key not in obj:
            return f"missing field {key!r}"
        if not isinstance(obj[key], str):
            return f"field {key!r} must be a string, got {type(obj[key]).__name__} {obj[key]!r:.60}"
    if "meta" in obj and not isinstance(obj["meta"], dict):
        return f"field 'meta' must be an object, got {type(obj['meta']).__name__}"
    for key in ("chosen", "rejected"):
        if not obj[key].strip():
            return f"field {key!r} is an empty answer"
    if obj["chosen"].strip() == obj["rejected"].strip():
        return "'chosen' and 'rejected' are the same answer: the pair says nothing"
    for key in NUMBER_FIELDS:
        if key in obj and (isinstance(obj[key], bool) or not isinstance(obj[key], (int, float))):
            return f"field {key!r} must be a number, got {obj[key]!r:.60}"
        if key in obj and not math.isfinite(obj[key]):
            return f"field {key!r} must be finite, got {obj[key]!r}"
    return None


def _lines(p: Path) -> list[str]:
    """The file's lines as text; PreferenceFileError naming the line that is not UTF-8."""
    raw = p.read_bytes()
    try:
        return raw.decode("utf-8").splitlines()
    except UnicodeDecodeError as e:
        lineno = raw[: e.start].count(b"\n") + 1
        raise PreferenceFileError(
            f"{p}:{lineno}: not UTF-8 text (byte {raw[e.start]:#04x}); save the file as UTF-8"
        ) from None


def read_preference_file(path: str | Path) -> list[dict[str, Any]]:
    """Parse and validate a JSONL preference file; PreferenceFileError names file:line."""
    p = Path(path)
    if not p.is_file():
        raise PreferenceFileError(f"{p}: no such preference file")
    pairs = []
    for lineno, line in enumerate(_lines(p), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise PreferenceFileError(f"{p}:{lineno}: invalid JSON ({e.msg} at column {e.colno})") from None
        problem = validate_pair(obj)
        if problem is not None:
            raise PreferenceFileError(f"{p}:{lineno}: {problem}")
        pairs.append(obj)
    if not pairs:
        raise PreferenceFileError(f"{p}: no preference pairs or ranked lists")
    return pairs
