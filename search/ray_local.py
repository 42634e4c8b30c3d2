"""The processes of a local Ray end with the run that started them, even when it is killed.

A local Ray (`ray.init()` in the driver) fate-shares its GCS and raylet with the driver, but after a `kill -9`
its `DashboardAgent` and `RuntimeEnvAgent` notice the raylet's death, then wait up to a minute for the dead GCS
to take their error report (60-120 s in all), and a run started meanwhile meets them. So while a driver runs,
`RayRecord` keeps `FOLDER/ray-PID.json`: the driver's pid and the pid of each process under it (the local
Ray's), each with its start time. The record goes when the run ends; the next run calls `stop_leftovers`
before it starts Ray, which kills what the record of a dead driver names (a pid reused since, with another
start time, is never touched).

psutil comes with Ray (and with accelerate).
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import psutil

Process = tuple[int, float]  # pid, start time (psutil's create_time: the pair names one process for good)


def _identity(proc: psutil.Process) -> Process:
    return proc.pid, proc.create_time()


def _alive(pid: int, started: float) -> psutil.Process | None:
    """The process `pid` if it is still the one that started at `started` and has not exited (a zombie has)."""
    try:
        proc = psutil.Process(pid)
        if abs(proc.create_time() - started) > 0.01 or proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return proc
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None


def stop_leftovers(folder: Path) -> list[int]:
    """Kill the processes that the records in `folder` of drivers no longer running name; drop those records.
    Returns the pids killed. A record being written (or unreadable) is left alone."""
    killed = []
    for path in sorted(folder.glob("ray-*.json")):
        try:
            record = json.loads(path.read_text())
            driver = (int(record["driver"][0]), float(record["driver"][1]))
            processes = [(int(pid), float(started)) for pid, started in record["processes"]]
        except (OSError, ValueError, KeyError, TypeError, IndexError):
            continue
        if _alive(*driver) is not None:
            continue  # a run in progress: its Ray is its own
        for pid, started in processes:
            proc = _alive(pid, started)
            if proc is None:
                continue
            try:
                proc.send_signal(signal.SIGKILL)
                killed.append(pid)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        path.unlink(missing_ok=True)
    return killed


class RayRecord:
    """`FOLDER/ray-PID.json` of this driver: its pid and every process under it, refreshed by `update`."""

    def __init__(self, folder: Path, min_interval_s: float = 1.0):
        self.folder = folder
        self.path = folder / f"ray-{os.getpid()}.json"
        self.min_interval_s = min_interval_s
        self._known: set[Process] = set()
        self._last = float("-inf")
        self._lock = threading.Lock()  # a pool and `local_ray`'s watcher both update it

    def update(self, force: bool = False) -> None:
        """Record the processes under this driver now (at most once per `min_interval_s` unless `force`):
        Ray starts workers as it goes. A process once recorded stays recorded (its start time tells it apart)."""
        with self._lock:
            self._update(force)

    def _update(self, force: bool) -> None:
        now = time.monotonic()
        if not force and now - self._last < self.min_interval_s:
            return
        self._last = now
        me = psutil.Process()
        found = set()
        for child in me.children(recursive=True):
            try:
                found.add(_identity(child))
            except psutil.Error:  # exited meanwhile
                pass
        if found <= self._known:
            return
        self._known |= found
        self.folder.mkdir(parents=True, exist_ok=True)
        staging = self.path.with_suffix(".tmp")
        staging.write_text(json.dumps({"driver": list(_identity(me)), "processes": sorted(self._known)}))
        staging.replace(self.path)  # whole or not at all: a reader never sees half a record

    def remove(self) -> None:
        """The run ended and its Ray was shut down: nothing to stop later."""
        self.path.unlink(missing_ok=True)
