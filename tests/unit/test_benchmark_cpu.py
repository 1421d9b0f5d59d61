"""The CPU accounting `benchmarks/startup.py` bounds the Ray program's end-to-end speed with."""

from __future__ import annotations

import sys
import time

import pytest

from benchmarks._common import machine_cpu_seconds, usable_cores
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
