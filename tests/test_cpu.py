"""`factory/jobs/cpu.py`: the CPU time of a process tree, counted where `getrusage` (and `/usr/bin/time`) cannot."""

from __future__ import annotations

import resource
import subprocess
import sys

from factory.jobs.cpu import TreeCPU, Usage

# A child that, like Ray's raylet, ignores SIGCHLD (its children are reaped by the kernel and their CPU time is
# reported to nobody), starts a grandchild that burns 1 s of CPU, and returns once the grandchild is gone.
RAYLET_LIKE = """
import os, signal, subprocess, sys, time
signal.signal(signal.SIGCHLD, signal.SIG_IGN)
burn = "import time\\nwhile time.process_time() < 1.0: pass"
pid = subprocess.Popen([sys.executable, "-c", burn]).pid
while True:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        break
    time.sleep(0.01)
"""


def test_the_meter_counts_a_grandchild_that_getrusage_never_sees():
    def children_cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return usage.ru_utime + usage.ru_stime

    before = children_cpu()
    with TreeCPU(interval_s=0.05) as meter:
        subprocess.run([sys.executable, "-c", RAYLET_LIKE], check=True, timeout=120)
    seen_by_rusage = children_cpu() - before
    usage = meter.usage()
    assert usage.user + usage.system >= 0.9  # the grandchild's second, up to its last 50 ms
    assert seen_by_rusage < 0.5  # the waited-for child only: interpreter start-up
    assert usage.wall > 0 and usage.cpu_percent > 0


def test_time_before_the_meter_started_is_not_counted():
    with TreeCPU(interval_s=0.05) as meter:
        pass
    usage = meter.usage()
    assert usage.user < 0.5 and usage.system < 0.5


def test_usage_ratios():
    usage = Usage(user=10.0, system=0.5, wall=7.0)
    assert usage.cpu_percent == 150.0 and usage.system_share == 5.0
    assert usage.as_dict() == {"user_s": 10.0, "system_s": 0.5, "wall_s": 7.0, "cpu_percent": 150,
                               "system_percent_of_user": 5.0}
    assert Usage(0.0, 0.0, 0.0).cpu_percent == 0.0 and Usage(0.0, 1.0, 1.0).system_share == 0.0
