"""Learner checkpoints: a Hugging Face model directory plus the training state, written atomically.

Layout of one checkpoint directory:
    model/                   save_pretrained + tokenizer: itself a loadable HF model dir
    extra_state.safetensors  named tensors (e.g. the value head: `value_head.weight`)
    optimizer.pt             optimizer.state_dict() (tensors and plain containers only)
    rng.safetensors          RNG states as uint8 tensors (torch global, learner shuffle)
    meta.json                policy_version, step, KL controller state, anything JSON
`meta.json` is written last, so a directory with it is complete. Loading uses
`torch.load(weights_only=True)`: no pickle of arbitrary objects.

Atomic: everything is written to a hidden sibling `.tmp-<name>-<pid>` and renamed into place.
`checkpoint_dir(run_dir, step)` names `run_dir/checkpoints/step_00000010`; `latest_checkpoint`
finds the newest complete one. (Addresses the resume failures OpenRLHF/veRL users report:
empty or half-written checkpoint directories.)

Tests: `pytest tests/unit/test_ppo_learner.py -k checkpoint`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

META_FILE = "meta.json"
MODEL_SUBDIR = "model"
FORMAT = "shoal-checkpoint/1"


@dataclass
class Checkpoint:
    """What `load_checkpoint` returns; `model_dir` is the HF directory to load weights from."""

    path: Path
    model_dir: Path
    extra_state: dict[str, torch.Tensor]
    optimizer_state: dict[str, Any]
    rng_state: dict[str, torch.Tensor]
    meta: dict[str, Any]

    def extra(self, prefix: str) -> dict[str, torch.Tensor]:
        """The `extra_state` entries saved under `prefix` (e.g. "value_head."), prefix removed."""
        return {k.removeprefix(prefix): v for k, v in self.extra_state.items() if k.startswith(prefix)}

    def load_model_into(self, model: Any) -> None:
        """Copy the saved Hugging Face model's weights into `model` in place."""
        from transformers import AutoModelForCausalLM

        saved = AutoModelForCausalLM.from_pretrained(str(self.model_dir), dtype=torch.float32)
        model.load_state_dict(saved.state_dict())


def prefixed(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """A state dict with every key under `prefix`, for `save_checkpoint(extra_state=...)`."""
    return {prefix + k: v for k, v in state.items()}


def checkpoint_dir(run_dir: str | os.PathLike, step: int) -> Path:
    """Where the checkpoint of learner step `step` lives inside a run directory."""
    return Path(run_dir) / "checkpoints" / f"step_{step:08d}"


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The complete checkpoint (has meta.json) with the highest step under run_dir/checkpoints."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return None
    done = [p for p in root.glob("step_*") if re.fullmatch(r"step_\d+", p.name) and (p / META_FILE).is_file()]
    return max(done, key=lambda p: int(p.name.removeprefix("step_")), default=None)


def save_checkpoint(
    path: str | os.PathLike,
    *,
    model: Any,
    tokenizer: Any,
    extra_state: dict[str, torch.Tensor],
    optimizer_state: dict[str, Any],
    rng_state: dict[str, torch.Tensor],
    meta: dict[str, Any],
) -> Path:
    """Write a checkpoint to `path` atomically (replacing one already there); returns the path."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".tmp-{final.name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    model.save_pretrained(tmp / MODEL_SUBDIR)
    tokenizer.save_pretrained(tmp / MODEL_SUBDIR)
    save_file(_cpu(extra_state), str(tmp / "extra_state.safetensors"))
    save_file(_cpu(rng_state), str(tmp / "rng.safetensors"))
    torch.save(optimizer_state, tmp / "optimizer.pt")
    (tmp / META_FILE).write_text(json.dumps({"format": FORMAT, **meta}, indent=2, sort_keys=True))
    _swap_into_place(tmp, final)
    return final


def _cpu(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in tensors.items()}


def _swap_into_place(tmp: Path, final: Path) -> None:
    """rename tmp -> final; an existing final is moved aside first and removed after."""
    old = None
    if final.exists():
        old = final.parent / f".old-{final.name}-{os.getpid()}"
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old)


def load_checkpoint(path: str | os.PathLike, map_location: str = "cpu") -> Checkpoint:
    """Read a checkpoint written by `save_checkpoint`; FileNotFoundError naming the path if absent/incomplete."""
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"checkpoint directory {str(root)!r} does not exist")
    if not (root / META_FILE).is_file():
        raise FileNotFoundError(
            f"checkpoint directory {str(root)!r} has no {META_FILE}: empty or incomplete checkpoint"
        )
    meta = json.loads((root / META_FILE).read_text())
    if meta.get("format") != FORMAT:
        raise ValueError(f"checkpoint {str(root)!r} has format {meta.get('format')!r}, expected {FORMAT!r}")
    return Checkpoint(
        path=root,
        model_dir=root / MODEL_SUBDIR,
        extra_state=load_file(str(root / "extra_state.safetensors"), device=map_location),
        optimizer_state=torch.load(root / "optimizer.pt", map_location=map_location, weights_only=True),
        rng_state=load_file(str(root / "rng.safetensors")),
        meta=meta,
    )


DRIVER_STATE_FILE = "driver_state.json"


def write_driver_state(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """The driver's side of a checkpoint (data position, sampler RNGs, replay snapshot,
    counters) as JSON next to the learner's files, written atomically (tmp + rename)."""
    final = Path(path) / DRIVER_STATE_FILE
    tmp = final.with_name(f".tmp-{DRIVER_STATE_FILE}-{os.getpid()}")
    tmp.write_text(json.dumps(state, allow_nan=False))
    os.replace(tmp, final)


def read_driver_state(path: str | os.PathLike) -> dict[str, Any]:
    """What `write_driver_state` wrote; {} for a checkpoint without it (saved by the learner
    alone); ValueError naming the file when it is not a JSON object."""
    file = Path(path) / DRIVER_STATE_FILE
    if not file.is_file():
        return {}
    try:
        state = json.loads(file.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{file}: not valid JSON ({e})") from None
    if not isinstance(state, dict):
        raise ValueError(f"{file}: expected a JSON object")
    return state


def check_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """A checkpoint's meta.json, or ValueError naming what is wrong (missing, incomplete,
    unreadable, another format): the one-line check before a run resumes from it."""
    root = Path(path)
    if not root.is_dir():
        raise ValueError(f"checkpoint {str(root)!r} does not exist")
    if not (root / META_FILE).is_file():
        raise ValueError(f"checkpoint {str(root)!r} has no {META_FILE}: empty or incomplete")
    try:
        meta = json.loads((root / META_FILE).read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"checkpoint {str(root)!r}: {META_FILE} is corrupt ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"checkpoint {str(root)!r} is not a {FORMAT} checkpoint")
    missing = [
        f
        for f in ("extra_state.safetensors", "rng.safetensors", "optimizer.pt", MODEL_SUBDIR)
        if not (root / f).exists()
    ]
    if missing:
        raise ValueError(f"checkpoint {str(root)!r} is incomplete: no {', '.join(missing)}")
    return meta


def prune_checkpoints(run_dir: str | os.PathLike, keep: int) -> list[Path]:
    """Remove all but the `keep` newest complete checkpoints of a run (0: keep all); returns
    what was removed. Incomplete ones (no meta.json) are left alone: one may be being written."""
    if keep <= 0:
        return []
    root = Path(run_dir) / "checkpoints"
    done = sorted(
        (p for p in root.glob("step_*") if re.fullmatch(r"step_\d+", p.name) and (p / META_FILE).is_file()),
        key=lambda p: int(p.name.removeprefix("step_")),
    )
    old = done[:-keep]
    for p in old:
        shutil.rmtree(p, ignore_errors=True)
    return old
