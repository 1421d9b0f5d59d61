"""Sizing and reaching Ray before anything waits on it (services/program.py): a local Ray is
sized to the machine, a cluster address that does not answer fails in one line."""

from __future__ import annotations

import socket

import pytest

from shoal.services.config import ConfigError, load_config
from shoal.services.program import LOCAL_ACTORS_PER_CORE, check_ray_address, local_cpus, retaken


def test_local_ray_fits_the_demo_and_refuses_64_workers_on_2_cores(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    demo = load_config(None, ["rollout.num_workers=2"])
    assert local_cpus(demo, "workers") == 4  # 2 workers + learner (+1 for the driver's tasks)
    assert local_cpus(demo, "actors") == 5  # + one scorer actor
    big = load_config(None, ["rollout.num_workers=64"])
    with pytest.raises(ConfigError) as e:
        local_cpus(big, "workers")
    msg = str(e.value)
    assert msg.startswith("rollout.num_workers:") and "65 CPUs" in msg and "64 rollout worker(s) x 1" in msg
    assert "2 cores" in msg and "run.ray_address" in msg
    edge = load_config(None, [f"rollout.num_workers={2 * LOCAL_ACTORS_PER_CORE - 1}"])
    assert local_cpus(edge, "workers") == 2 * LOCAL_ACTORS_PER_CORE + 1


def test_ray_address_that_does_not_answer_is_one_line():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for address in (f"127.0.0.1:{port}", f"ray://127.0.0.1:{port}"):
        with pytest.raises(ConfigError, match=rf"run.ray_address: Ray at {address} does not answer"):
            check_ray_address(address, timeout_s=2)
    check_ray_address("auto")  # left to Ray
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        check_ray_address(f"127.0.0.1:{s.getsockname()[1]}")


def test_workers_that_fit_the_free_resources():
    from shoal.services.config import load_config
    from shoal.services.program import worker_need, workers_that_fit

    cfg = load_config(
        None, ["rollout.max_workers=8", "rollout.worker_resources={rollout: 1}", "rollout.num_gpus_per_worker=1"]
    )
    need = worker_need(cfg)
    assert need == {"CPU": 1.0, "GPU": 1.0, "rollout": 1.0}
    assert workers_that_fit({"CPU": 8, "GPU": 3, "rollout": 2}, need, cap=8) == 2  # the scarcest decides
    assert workers_that_fit({"CPU": 8, "GPU": 3, "rollout": 5}, need, cap=2) == 2  # max_workers caps it
    assert workers_that_fit({"CPU": 0.5, "GPU": 3, "rollout": 5}, need, cap=8) == 0
    assert workers_that_fit({}, {}, cap=3) == 3  # a worker that asks for nothing


def test_pacer_holds_a_worker_to_its_rate():
    import time

    from shoal.services.actors import Pacer

    pace = Pacer(200.0)  # 200 samples/s: 20 samples every 0.1 s
    t0 = time.monotonic()
    assert pace(20) == 0.0  # the first batch sets the clock
    for _ in range(3):
        pace(20)
    assert time.monotonic() - t0 >= 0.29
    assert Pacer(0.0)(1000) == 0.0


def test_a_learner_back_from_a_checkpoint_says_which_steps_it_takes_again():
    assert retaken(2, 3) == "step 3 is taken again"
    assert retaken(4, 7) == "steps 5-7 are taken again"
    assert retaken(0, 1) == "step 1 is taken again"
    # a checkpoint newer than the driver's step (saved, then the learner died before it said so)
    assert retaken(8, 7) == "no step is lost" and retaken(5, 5) == "no step is lost"
