"""CPU time of this process and every process under it (Ray's workers included), for the loop's stage table.

`/usr/bin/time` and `getrusage(RUSAGE_CHILDREN)` count only children that their parent waited for; a local Ray's
workers are started by its raylet, which does not report them, so a stage run on Ray workers looked idle to
both (86% CPU for a loop that kept both cores busy). `TreeCPU` samples the CPU times of the process tree once a
`interval_s` (psutil, a dependency of Ray and accelerate) and keeps the last value seen of every process, so a
worker that has exited still counts, up to its last `interval_s` of work.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from typing import Any

import psutil

Process = tuple[int, float]  # pid, start time: names one process for good


@dataclass(frozen=True)
class Usage:
    """CPU seconds (user, system) over `wall` seconds."""

    user: float
    system: float
    wall: float

    @property
    def cpu_percent(self) -> float:
        """Busy CPU time per wall second, in percent (200 = two cores busy)."""
        return 100 * (self.user + self.system) / self.wall if self.wall else 0.0

    @property
    def system_share(self) -> float:
        """System time as a percentage of user time."""
        return 100 * self.system / self.user if self.user else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"user_s": round(self.user, 1), "system_s": round(self.system, 1), "wall_s": round(self.wall, 1),
                "cpu_percent": round(self.cpu_percent), "system_percent_of_user": round(self.system_share, 1)}


class TreeCPU:
    """`with TreeCPU() as meter:` ... `meter.usage()`: the CPU time the tree used since the `with` began."""

    def __init__(self, interval_s: float = 0.5):
        self.interval_s = interval_s
        self._seen: dict[Process, tuple[float, float]] = {}  # last (user, system) of each process
        self._start: dict[Process, tuple[float, float]] = {}  # ... when the meter started (processes alive then)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._began = 0.0

    def __enter__(self) -> TreeCPU:
        self._began = time.monotonic()
        self.sample()
        self._start = dict(self._seen)
        self._thread = threading.Thread(target=self._run, name="tree-cpu", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.sample()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def sample(self) -> None:
        """Read the CPU times of this process and every live descendant."""
        me = psutil.Process(os.getpid())
        found = {}
        for proc in [me, *me.children(recursive=True)]:
            try:
                with proc.oneshot():
                    times = proc.cpu_times()
                    found[(proc.pid, proc.create_time())] = (times.user, times.system)
            except psutil.Error:  # exited meanwhile
                pass
        with self._lock:
            self._seen.update(found)

    def usage(self) -> Usage:
        """The tree's CPU time since the meter started (a process's time before then is not counted)."""
        with self._lock:
            seen = dict(self._seen)
        user = sum(u - self._start.get(p, (0.0, 0.0))[0] for p, (u, _) in seen.items())
        system = sum(s - self._start.get(p, (0.0, 0.0))[1] for p, (_, s) in seen.items())
        return Usage(user, system, time.monotonic() - self._began)
