"""Shared fixtures: a tiny local model directory built from the built-in task (no hub)."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_task():
    from rollout.tasks import KeywordsTask

    return KeywordsTask()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_task):
    """A random-init tiny Llama + BPE tokenizer directory (transformers and vLLM load it)."""
    from learner.init_model import build_model_dir
    from services.config import ModelSection

    return build_model_dir(tiny_task, ModelSection(), tmp_path_factory.mktemp("tiny") / "policy", seed=0)


def has_gpu() -> bool:
    return torch.cuda.is_available()


def has_vllm() -> bool:
    try:
        import vllm  # noqa: F401

        return True
    except Exception:
        return False
