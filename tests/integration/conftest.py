"""Fixtures shared by the integration tests that drive the Ray program."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def ray_local():
    """A local Ray for one test module (6 logical CPUs: workers + learner fit on 2 cores)."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=6, include_dashboard=False, runtime_env={"env_vars": {"RAY_ENABLE_ZERO_COPY_TORCH_TENSORS": "1"}})
    yield
    ray.shutdown()
