"""`shoal collect`: play scripted (or user) policies in an environment and write the episodes
as JSONL for the offline learners, with a summary per policy.

    shoal collect maze_po --policy optimal,mediocre,random --episodes 300 --out data/maze_po.jsonl \
        --seed 0 [--max-turns 500] [--env-arg layout=generated --env-arg maze_seed=3]

Episode i is played by the (i mod P)-th policy of the list, so the data set mixes qualities
evenly. Dropped episodes (a misbehaving environment, see `run_episode`) are reported one line
each, counted, and left out of the file. The file is written to `OUT.tmp` and renamed at the
end, so an interrupted run leaves no half-written data set under the final name.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from shoal.rollout.envs.base import (
    CollectResult,
    DroppedEpisode,
    Policy,
    episode_success,
    iter_collect,
    task_name,
)
from shoal.rollout.envs.jsonl import write_episode
from shoal.rollout.envs.registry import make_env, make_policy
from shoal.rollout.envs.scoring import dataset_anchors, normalized_score


def parse_env_args(items: Sequence[str]) -> dict[str, Any]:
    """`key=value` strings (values YAML-typed: 15 -> int, true -> bool) -> keyword arguments."""
    out = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--env-arg {item!r}: expected key=value")
        out[key.strip()] = yaml.safe_load(raw) if raw != "" else None
    return out


def build_collection(env_spec: str, policy_spec: str, env_args: dict[str, Any]) -> tuple[Any, list[tuple[str, Policy]]]:
    """The environment and the (name, policy) list of a comma-separated policy spec."""
    env = make_env(env_spec, **env_args)
    names = [n.strip() for n in policy_spec.split(",") if n.strip()]
    if not names:
        raise ValueError("--policy: give at least one policy name")
    return env, [(n, make_policy(n, env)) for n in names]


def run_collection(
    env: Any,
    policies: Sequence[tuple[str, Policy]],
    num_episodes: int,
    out: str | Path,
    seed: int,
    max_turns: int,
    on_drop: Callable[[DroppedEpisode], None] | None = None,
) -> CollectResult:
    """Play `num_episodes` episodes and stream the kept ones to `out` (JSONL)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp, result = out.with_name(out.name + ".tmp"), CollectResult()
    with tmp.open("w") as f:
        for name, ep in iter_collect(env, policies, num_episodes, seed, max_turns):
            result.add(name, ep)
            if isinstance(ep, DroppedEpisode):
                if on_drop is not None:
                    on_drop(ep)
            else:
                write_episode(f, ep)
    os.replace(tmp, out)
    return result


def summarize(result: CollectResult) -> list[dict[str, Any]]:
    """One row per policy plus an `all` row: episodes, mean_return, success_rate, and the
    LMRL-Gym score of the policy's mean return with the data set's (min, mean, max) as anchors
    (None when the data set's returns do not satisfy min < mean < max)."""
    by_policy: dict[str, list] = {}
    for name, ep in result.episodes:
        by_policy.setdefault(name, []).append(ep)
    anchors = dataset_anchors(ep.total_return for _, ep in result.episodes) if result.episodes else None
    rows = []
    for name, eps in [*by_policy.items(), ("all", [ep for _, ep in result.episodes])]:
        mean = statistics.fmean(ep.total_return for ep in eps) if eps else float("nan")
        score = None
        if anchors is not None and anchors[0] < anchors[1] < anchors[2]:
            score = normalized_score(mean, *anchors)
        rows.append(
            {
                "policy": name,
                "episodes": len(eps),
                "mean_return": mean,
                "success_rate": statistics.fmean(episode_success(ep) for ep in eps) if eps else float("nan"),
                "score": score,
            }
        )
    return rows


def format_summary(env: Any, result: CollectResult, out: str | Path) -> str:
    lines = [f"collected {len(result.episodes)} episodes of {task_name(env)} -> {out} (dropped {len(result.dropped)})"]
    lines.append(f"{'policy':<16}{'episodes':>9}{'mean_return':>13}{'success_rate':>14}{'score':>8}")
    for r in summarize(result):
        score = "-" if r["score"] is None else f"{r['score']:.1f}"
        mean = f"{r['mean_return']:.3f}".replace("-0.000", "0.000")
        lines.append(f"{r['policy']:<16}{r['episodes']:>9}{mean:>13}{r['success_rate']:>14.3f}{score:>8}")
    return "\n".join(lines)


__all__ = ["build_collection", "format_summary", "parse_env_args", "run_collection", "summarize"]
