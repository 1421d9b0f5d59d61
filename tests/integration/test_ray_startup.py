"""How the Ray program starts a local Ray: the actors' environment reaches every worker process
through the raylet (so actors reuse the workers Ray prestarts), and the driver's own
environment is left as it was; its workers run at the driver's priority, not Ray's nice 15
(which lets any other busy process starve them)."""

from __future__ import annotations

import os

import pytest

ray = pytest.importorskip("ray")

from shoal.services.actors import ACTOR_ENV  # noqa: E402
from shoal.services.program import actor_env_options, init_ray  # noqa: E402
from tests.conftest import small_config  # noqa: E402

pytestmark = pytest.mark.integration


@ray.remote(num_cpus=0)
def _niceness() -> int:
    return os.nice(0)


@ray.remote(num_cpus=0)
def _env(keys: list[str]) -> dict[str, str | None]:
    return {k: os.environ.get(k) for k in keys}


def test_local_ray_gives_every_worker_the_actor_env_and_leaves_the_driver_alone(tmp_path, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "7")  # the driver's own value survives
    monkeypatch.delenv("TOKENIZERS_PARALLELISM", raising=False)
    cfg = small_config({"policy": "unused", "reward": "unused"}, tmp_path)
    assert not ray.is_initialized()
    try:
        assert init_ray(cfg) == "local"
        seen = ray.get(_env.remote(list(ACTOR_ENV)))
        assert seen == ACTOR_ENV
        assert ray.get(_niceness.remote()) == os.nice(0)  # the driver's priority, not nice 15
        assert actor_env_options("local") == {}  # no runtime_env: prestarted workers are reused
        assert os.environ["OMP_NUM_THREADS"] == "7" and "TOKENIZERS_PARALLELISM" not in os.environ
        assert init_ray(cfg) is None  # already up: not started again
    finally:
        ray.shutdown()


def test_a_ray_started_elsewhere_gets_the_env_per_actor():
    for started in (None, "joined"):
        assert actor_env_options(started) == {"runtime_env": {"env_vars": ACTOR_ENV}}


def test_a_local_run_starts_its_own_ray_beside_a_cluster_on_this_machine(tmp_path, monkeypatch):
    """A `ray start` cluster on the machine (here `Cluster`, which writes the same
    ray_current_cluster file) is not joined without run.ray_address / RAY_ADDRESS: Ray's own
    default would join it, and the run's num_cpus would then be refused."""
    from ray.cluster_utils import Cluster

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        cfg = small_config({"policy": "unused", "reward": "unused"}, tmp_path)
        assert init_ray(cfg) == "local"
        assert ray.get_runtime_context().gcs_address != cluster.address
        ray.shutdown()
    finally:
        ray.shutdown()
        cluster.shutdown()
