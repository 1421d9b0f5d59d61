"""Fixtures shared by the integration tests that drive the Ray program."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def ray_local():
    """A local Ray for one test module (6 logical CPUs: workers + learner fit on 2 cores), its
    workers at the priority `shoal train` gives them (not Ray's nice 15: any other busy process
    on the machine would starve them and the tests' deadlines with them)."""
    ray = pytest.importorskip("ray")
    from shoal.services.program import WORKER_NICENESS

    ray.init(
        address="local",  # not a cluster another test (or `ray start`) left on this machine
        num_cpus=6,
        include_dashboard=False,
        runtime_env={"env_vars": {"RAY_ENABLE_ZERO_COPY_TORCH_TENSORS": "1"}},
        _system_config={"worker_niceness": WORKER_NICENESS},
    )
    yield
    ray.shutdown()
