"""Reward-model ensembles (Coste et al. 2023, "Reward Model Ensembles Help Mitigate
Overoptimization"): K reward models trained on the same comparisons from different seeds
(`reward.rm_ensemble`), their scores reduced to one reward per answer.

Reductions (`reward.rm_ensemble_reduce`), over the K calibrated member scores c_1..c_K:
- `mean`: (1/K) sum_k c_k;
- `wco` (worst-case optimisation): min_k c_k - the policy is rewarded for what every member agrees on;
- `uwo` (uncertainty-weighted optimisation): mean - lambda * Var_k(c_k) (population variance,
  lambda = `reward.rm_ensemble_uwo_lambda`): answers the members disagree about are penalised.

Calibration (a deviation: Coste et al. compare members as trained): a Bradley-Terry model fixes
neither the offset nor the scale of its score, so member k's raw score s is mapped to
(s - offset_k) / scale_k * mean(scale) + mean(offset), offset_k and scale_k being the mean and
std of its scores on the held-out answers (`shoal train-rm` measures them). Members then agree
on location and spread, `min` compares like with like, and the ensemble's reward keeps the
scale of one member - the scale the KL penalty (in nats) is balanced against.

On disk an ensemble is one directory: `ensemble.json` (the manifest below) and one Hugging Face
reward-model directory per member. This module reads and checks the manifest without torch (the
Ray driver checks model directories before any actor starts); the math is pure and tested
against slow loops in tests/unit/test_rm_ensemble.py.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from shoal.model_dirs import model_dir_problem

MANIFEST = "ensemble.json"
FORMAT = "shoal-reward-ensemble"
REDUCTIONS = ("mean", "wco", "uwo")


@dataclass(frozen=True)
class Member:
    path: Path  # the member's model directory
    seed: int
    offset: float  # mean of its held-out scores
    scale: float  # std of its held-out scores (> 0)


def is_ensemble(path: str | Path) -> bool:
    return (Path(path) / MANIFEST).is_file()


def member_dir_name(k: int) -> str:
    return f"member-{k}"


def read_members(path: str | Path) -> list[Member]:
    """The members of an ensemble directory; ValueError naming `ensemble.json: <field>`."""
    root, file = Path(path), Path(path) / MANIFEST
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{file}: not readable JSON ({e})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"{file}: format: expected {FORMAT!r}")
    raw = data.get("members")
    if not isinstance(raw, list) or not raw:
        raise ValueError(f"{file}: members: expected a non-empty list")
    members = []
    for k, m in enumerate(raw):
        where = f"{file}: members[{k}]"
        if not isinstance(m, dict) or not isinstance(m.get("path"), str):
            raise ValueError(f"{where}.path: expected a directory name")
        sub = root / m["path"]
        if sub.resolve().parent != root.resolve():
            raise ValueError(f"{where}.path: {m['path']!r} is not a directory directly inside {root}")
        for key in ("offset", "scale"):
            v = m.get(key)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"{where}.{key}: expected a finite number, got {v!r}")
        if m["scale"] <= 0:
            raise ValueError(f"{where}.scale: must be > 0, got {m['scale']}")
        seed = m.get("seed", k)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"{where}.seed: expected an integer, got {seed!r}")
        members.append(Member(sub, seed, float(m["offset"]), float(m["scale"])))
    return members


def write_manifest(path: str | Path, members: Sequence[Member], summary: dict) -> None:
    """`ensemble.json` in `path`; member paths stored relative to it."""
    data = {
        "format": FORMAT,
        "members": [{"path": Path(m.path).name, "seed": m.seed, "offset": m.offset, "scale": m.scale} for m in members],
        "summary": summary,
    }
    (Path(path) / MANIFEST).write_text(json.dumps(data, indent=2))


def reward_model_problem(path: str | Path) -> str | None:
    """Why `path` cannot load as a reward model - one model directory or an ensemble - or None."""
    if not is_ensemble(path):
        return model_dir_problem(path)
    try:
        members = read_members(path)
    except ValueError as e:
        return str(e)
    for m in members:
        problem = model_dir_problem(m.path)
        if problem:
            return f"ensemble member {m.path.name}: {problem}"
    return None


def calibration(scores: Sequence[float]) -> tuple[float, float]:
    """(offset, scale): mean and population std of a member's scores on the held-out answers."""
    if len(scores) < 2:
        raise ValueError(f"calibration needs at least 2 scores, got {len(scores)}")
    mean = math.fsum(scores) / len(scores)
    std = math.sqrt(math.fsum((s - mean) ** 2 for s in scores) / len(scores))
    if not std > 0:
        raise ValueError("a member gives every held-out answer the same score: its scale is 0")
    return mean, std


def calibrate(member_scores: Sequence[Sequence[float]], members: Sequence[Member]) -> list[list[float]]:
    """[K][B] raw scores -> [K][B] scores on the members' common offset and scale."""
    mean_offset = math.fsum(m.offset for m in members) / len(members)
    mean_scale = math.fsum(m.scale for m in members) / len(members)
    return [
        [(s - m.offset) / m.scale * mean_scale + mean_offset for s in row] for row, m in zip(member_scores, members)
    ]


def reduce_scores(
    calibrated: Sequence[Sequence[float]], how: str, uwo_lambda: float = 1.0
) -> list[tuple[float, float]]:
    """[K][B] calibrated scores -> B (reward, ensemble std) pairs, reward by `how` (REDUCTIONS)."""
    if how not in REDUCTIONS:
        raise ValueError(f"rm_ensemble_reduce: {how!r} is not one of {', '.join(REDUCTIONS)}")
    out = []
    for column in zip(*calibrated):
        mean = math.fsum(column) / len(column)
        var = math.fsum((c - mean) ** 2 for c in column) / len(column)
        reward = {"mean": mean, "wco": min(column), "uwo": mean - uwo_lambda * var}[how]
        out.append((reward, math.sqrt(var)))
    return out
