"""Episodes as JSONL: one `Episode` per line, what `shoal collect` writes and offline learners read.

Line format (every key required except `policy_version` and `worker_id`):

    {"episode_id": "maze_po-optimal-s0-000003", "task": "maze_po", "policy_version": -1,
     "worker_id": "scripted:optimal",
     "turns": [{"observation": "...", "action": "up", "reward": -1.0, "done": false,
                "info": {"illegal": false, "success": false}}, ...]}

Plain JSON only (never pickle); NaN/Infinity are refused on write and on read. Every line is
validated; `EpisodeFileError` names `file:line` and the offending field.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TextIO

from shoal.types import Episode, Turn


class EpisodeFileError(ValueError):
    """A malformed episode file; the message names file:line."""


def episode_to_dict(ep: Episode) -> dict[str, Any]:
    turns = [
        {"observation": t.observation, "action": t.action, "reward": t.reward, "done": t.done, "info": t.info}
        for t in ep.turns
    ]
    return {
        "episode_id": ep.episode_id,
        "task": ep.task,
        "policy_version": ep.policy_version,
        "worker_id": ep.worker_id,
        "final_observation": ep.final_observation,
        "turns": turns,
    }


def _is_number(x: Any) -> bool:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return False
    try:
        return math.isfinite(float(x))
    except OverflowError:
        return False


def _turn_problem(i: int, t: Any) -> str | None:
    if not isinstance(t, dict):
        return f"turns[{i}] must be an object, got {type(t).__name__}"
    for key, typ, what in [
        ("observation", str, "a string"),
        ("action", str, "a string"),
        ("done", bool, "true/false"),
        ("info", dict, "an object"),
    ]:
        if key not in t:
            return f"turns[{i}]: missing field {key!r}"
        if not isinstance(t[key], typ):
            return f"turns[{i}].{key} must be {what}, got {t[key]!r:.60}"
    if "reward" not in t:
        return f"turns[{i}]: missing field 'reward'"
    if not _is_number(t["reward"]):
        return f"turns[{i}].reward must be a finite number, got {t['reward']!r:.60}"
    return None


def episode_problem(obj: Any) -> str | None:
    """What is wrong with one parsed line, or None when it is a valid episode."""
    if not isinstance(obj, dict):
        return f"expected a JSON object, got {type(obj).__name__}"
    for key in ("episode_id", "task"):
        if not isinstance(obj.get(key), str):
            return (
                f"missing field {key!r}" if key not in obj else f"field {key!r} must be a string, got {obj[key]!r:.60}"
            )
    pv = obj.get("policy_version", -1)
    if isinstance(pv, bool) or not isinstance(pv, int):
        return f"field 'policy_version' must be an integer, got {pv!r:.60}"
    for key in ("worker_id", "final_observation"):
        if not isinstance(obj.get(key, ""), str):
            return f"field {key!r} must be a string, got {obj[key]!r:.60}"
    turns = obj.get("turns")
    if not isinstance(turns, list) or not turns:
        return (
            "missing field 'turns'"
            if "turns" not in obj
            else f"field 'turns' must be a non-empty list, got {turns!r:.60}"
        )
    for i, t in enumerate(turns):
        problem = _turn_problem(i, t)
        if problem is not None:
            return problem
    return None


def episode_from_dict(obj: dict[str, Any]) -> Episode:
    """An Episode from a validated dict (see `episode_problem`)."""
    turns = [Turn(t["observation"], t["action"], float(t["reward"]), t["done"], dict(t["info"])) for t in obj["turns"]]
    return Episode(
        obj["episode_id"],
        obj["task"],
        turns,
        int(obj.get("policy_version", -1)),
        obj.get("worker_id", ""),
        obj.get("final_observation", ""),
    )


def write_episode(f: TextIO, ep: Episode) -> None:
    """Append one episode as one line (ValueError on NaN/Infinity or non-JSON info)."""
    f.write(json.dumps(episode_to_dict(ep), allow_nan=False) + "\n")


def write_episodes(path: str | Path, episodes: Iterable[Episode]) -> int:
    """Write episodes to `path` (parents created, file replaced); returns how many."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with out.open("w") as f:
        for ep in episodes:
            write_episode(f, ep)
            n += 1
    return n


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


def iter_episodes(path: str | Path) -> Iterator[Episode]:
    """Read and validate episodes one line at a time (blank lines skipped)."""
    p = Path(path)
    if not p.is_file():
        raise EpisodeFileError(f"{p}: no such episode file")
    with p.open() as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line, parse_constant=_reject_constant)
            except json.JSONDecodeError as e:
                raise EpisodeFileError(f"{p}:{lineno}: invalid JSON ({e.msg} at column {e.colno})") from None
            except ValueError as e:
                raise EpisodeFileError(f"{p}:{lineno}: invalid JSON ({e})") from None
            problem = episode_problem(obj)
            if problem is not None:
                raise EpisodeFileError(f"{p}:{lineno}: {problem}")
            yield episode_from_dict(obj)


def read_episodes(path: str | Path) -> list[Episode]:
    """All episodes of a JSONL file; EpisodeFileError (file:line) on the first bad line or
    when the file holds no episodes."""
    episodes = list(iter_episodes(path))
    if not episodes:
        raise EpisodeFileError(f"{path}: no episodes")
    return episodes


__all__ = [
    "EpisodeFileError",
    "episode_from_dict",
    "episode_problem",
    "episode_to_dict",
    "iter_episodes",
    "read_episodes",
    "write_episode",
    "write_episodes",
]
