"""`shoal export RUN OUT [--step N]`: a run's trained policy as a Hugging Face model directory.

RUN is a run id in `--runs-dir` (default `runs`), `latest` (the newest run with a checkpoint),
or a run directory's path. The checkpoint (the newest, or learner step N) already holds a
`save_pretrained` model with its tokenizer (`learner/checkpoint.py`); export copies it to OUT,
written beside it and renamed into place (never half a directory), with `shoal_export.json`
saying where it came from. transformers (`AutoModelForCausalLM`) and vLLM (`LLM(OUT)`) load it
and generate from it. When the run's reward model was trained by Shoal (`shoal train-rm`: its
directory holds `train_rm.json`), it is exported too, as `OUT/reward_model`
(`AutoModelForSequenceClassification`, one label).

What is exported is what generates: the policy language model. Not exported: PPO's value head,
ILQL's Q/V heads (sampling the exported model is plain sampling, not ILQL's advantage-weighted
decoding: said in the output line), optimizer state. R2D2 runs are refused: their policy is a
recurrent Q-network over an encoder, not a language model to generate from.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import yaml

from shoal.learner.checkpoint import MODEL_SUBDIR, check_checkpoint, checkpoint_dir, latest_checkpoint

EXPORT_META = "shoal_export.json"
REWARD_SUBDIR = "reward_model"


class ExportError(ValueError):
    """A run, step or destination that cannot be exported (one line for the user)."""


def resolve_run(run: str, runs_dir: str | os.PathLike) -> Path:
    """The run directory RUN names: an id in runs_dir, `latest`, or a path."""
    runs = Path(runs_dir)
    if run == "latest":
        dirs = [d for d in runs.glob("*") if latest_checkpoint(d) is not None] if runs.is_dir() else []
        if not dirs:
            raise ExportError(f"latest: no run with a checkpoint in {runs} (--runs-dir)")
        return max(dirs, key=lambda d: d.stat().st_mtime)
    for candidate in (runs / run, Path(run)):
        if (candidate / "checkpoints").is_dir() or (candidate / "config.yaml").is_file():
            return candidate
    raise ExportError(f"{run}: no run directory {runs / run} (--runs-dir is {runs}) and no run directory at {run}")


def steps_of(run_dir: Path) -> list[int]:
    """The learner steps of the run's complete checkpoints, oldest first."""
    root = run_dir / "checkpoints"
    if not root.is_dir():
        return []
    return sorted(int(d.name.split("_")[1]) for d in root.glob("step_*") if (d / "meta.json").is_file())


def run_config(run_dir: Path) -> dict[str, Any]:
    """The run's saved config (config.yaml) as a plain mapping ({} if it has none)."""
    path = run_dir / "config.yaml"
    if not path.is_file():
        return {}
    tree = yaml.safe_load(path.read_text()) or {}
    return tree if isinstance(tree, dict) else {}


def _copy_dir(src: Path, out: Path) -> None:
    """Copy src's files to out through a hidden sibling renamed into place."""
    tmp = out.parent / f".tmp-{out.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)


def export_run(
    run: str, out: str | os.PathLike, step: int | None = None, runs_dir: str | os.PathLike = "runs", force: bool = False
) -> dict[str, Any]:
    """Export RUN's checkpoint (the newest, or learner step `step`) to `out`; returns what was
    written. ExportError for anything the user can fix."""
    run_dir = resolve_run(run, runs_dir)
    steps = steps_of(run_dir)
    if not steps:
        raise ExportError(f"{run}: {run_dir} has no complete checkpoint (checkpoints/step_*/meta.json)")
    if step is not None and step not in steps:
        raise ExportError(f"--step {step}: run {run_dir.name} has checkpoints at steps {', '.join(map(str, steps))}")
    ckpt = checkpoint_dir(run_dir, step if step is not None else steps[-1])
    try:
        meta = check_checkpoint(ckpt)
    except ValueError as e:
        raise ExportError(str(e)) from None
    cfg = run_config(run_dir)
    algorithm = (cfg.get("run") or {}).get("algorithm", "ppo")
    if algorithm == "r2d2":
        raise ExportError(
            f"{run_dir.name} is an r2d2 run: its policy is a recurrent Q-network over an encoder, not a language "
            "model to generate from; its checkpoint is in " + str(ckpt)
        )
    dest = Path(out)
    if dest.exists() and any(dest.iterdir()) and not force:
        raise ExportError(f"{dest} exists and is not empty; choose another directory or pass --force to replace it")
    dest.parent.mkdir(parents=True, exist_ok=True)
    _copy_dir(ckpt / MODEL_SUBDIR, dest)
    info: dict[str, Any] = {
        "run_id": run_dir.name,
        "algorithm": algorithm,
        "step": int(ckpt.name.split("_")[1]),
        "policy_version": meta.get("policy_version"),
        "checkpoint": str(ckpt.resolve()),
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "policy": str(dest),
    }
    rm = (cfg.get("reward") or {}).get("reward_model_path")
    if rm and (Path(rm) / "train_rm.json").is_file():
        _copy_dir(Path(rm), dest / REWARD_SUBDIR)
        info["reward_model"] = str(dest / REWARD_SUBDIR)
    if algorithm == "ilql":
        info["note"] = "the language model only: plain sampling from it is not ILQL's advantage-weighted decoding"
    (dest / EXPORT_META).write_text(json.dumps(info, indent=2))
    return info
