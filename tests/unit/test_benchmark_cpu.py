"""The CPU accounting `benchmarks/startup.py` bounds the Ray program's end-to-end speed with."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from benchmarks._common import ProcessCpu, machine_cpu_seconds, process_group, usable_cores
from benchmarks.startup import ratio_ceiling


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/stat is Linux's")
def test_machine_cpu_seconds_counts_a_busy_loop():
    before, cpu0 = machine_cpu_seconds(), time.process_time()
    while time.process_time() - cpu0 < 0.5:
        pass
    spent = time.process_time() - cpu0
    # the whole machine's busy time includes this process's (clock ticks: 10 ms resolution)
    assert machine_cpu_seconds() - before >= spent - 0.05


def test_usable_cores_is_positive():
    assert usable_cores() >= 1


def test_ratio_ceiling_is_local_wall_over_ray_work_per_core():
    # 46 CPU s on 2 cores need >= 23 s of wall: against a 31 s in-process run, at most 1.35x
    assert ratio_ceiling({"cpu_s": 46.0}, {"process_wall_s": 31.0}, 2) == pytest.approx(31.0 / 23.0, abs=0.01)
    assert ratio_ceiling({"cpu_s": 46.0}, {"process_wall_s": 31.0}, 4) == pytest.approx(31.0 / 11.5, abs=0.01)
    assert ratio_ceiling({"cpu_s": None}, {"process_wall_s": 31.0}, 2) is None


@pytest.mark.parametrize(
    ("cmdline", "group"),
    [
        ("ray::LearnerActor.step", "ray::LearnerActor"),
        ("ray::WorkerActor", "ray::WorkerActor"),
        ("/w/.venv/bin/python /w/.venv/bin/shoal train deploy/configs/demo.yaml --quiet", "shoal train"),
        ("/usr/bin/python3 -m shoal.deploy.cli train demo.yaml", "shoal train"),
        ("/w/.venv/bin/python -u /w/site-packages/ray/_private/log_monitor.py --session-dir=/tmp/x", "log_monitor.py"),
        ("/w/site-packages/ray/core/src/ray/raylet/raylet --raylet_socket_name=/tmp/s", "raylet"),
        ("/w/.venv/bin/python -m shoal.services.redis_watchdog 1 2", "shoal.services.redis_watchdog"),
        ("redis-server", "redis-server"),
        ("/usr/bin/python3 -c import time", "python -c"),
        ("", "?"),
    ],
)
def test_process_group_names_ray_actors_daemons_and_the_cli(cmdline, group):
    assert process_group(cmdline) == group


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc is Linux's")
def test_process_cpu_charges_a_busy_child_to_its_group():
    code = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.6: pass\n"
    with ProcessCpu(interval=0.05) as cpu:
        subprocess.run([sys.executable, "-c", code], check=True)
    assert cpu.groups.get("python -c", 0.0) >= 0.4, cpu.groups
