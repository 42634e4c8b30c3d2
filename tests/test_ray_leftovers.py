"""A local Ray ends with the `factory harvest --ray` that started it: after a `kill -9` of the driver, Ray's
DashboardAgent and RuntimeEnvAgent used to live on for 60-120 s; now the next `--ray` run stops every process the
killed run's Ray had before it starts its own (search/ray_local.py)."""

from __future__ import annotations

import os
import signal
import subprocess

import psutil
import pytest

from tests.conftest import FACTORY, check_consistent, query, read_until, wait_for

pytest.importorskip("ray", reason="Ray is not installed (pip install 'josh-factory[ray]'; make install does)")


def _alive(pid: int, started: float) -> bool:
    try:
        proc = psutil.Process(pid)
        return abs(proc.create_time() - started) < 0.01 and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _descendants(pid: int) -> dict[tuple[int, float], str]:
    out = {}
    for child in psutil.Process(pid).children(recursive=True):
        try:
            out[(child.pid, child.create_time())] = " ".join(child.cmdline())[:60]
        except psutil.Error:
            pass
    return out


@pytest.mark.slow
def test_next_ray_run_stops_what_a_killed_driver_left(wh, tmp_path):
    home = tmp_path / "home"
    env = {**os.environ, "FACTORY_DEBUG": "", "FACTORY_HOME": str(home)}
    records = home / "ray"
    first = subprocess.Popen([*FACTORY, "harvest", "--agent", "teacher", "--split", "synth", "--limit", "20",
                              "--beam", "8", "--concurrency", "2", "--ray", "--ray-workers", "1", "-w", str(wh)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    try:
        read_until(first.stderr, "Ray workers,", timeout=600)  # its worker is up; no rollout handed out yet
        victims = _descendants(first.pid)  # the local Ray the driver started: GCS, raylet, agents, workers
        assert any("DashboardAgent" in title for title in victims.values()), victims
        (worker,) = [pid for (pid, _), title in victims.items() if title.startswith("ray::HarvestWorker")]
        os.kill(worker, signal.SIGSTOP)  # the rollouts it is handed never come back: the driver cannot finish
        assert (records / f"ray-{first.pid}.json").exists()
        first.send_signal(signal.SIGKILL)
        first.wait()
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    committed = query(wh, "select count(*) from rollouts")[0][0]

    second = subprocess.Popen([*FACTORY, "harvest", "--agent", "teacher", "--split", "val_harvest", "--limit", "2",
                               "--beam", "4", "--ray", "--ray-workers", "1", "-w", str(wh)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    try:
        mine = records / f"ray-{second.pid}.json"  # written once its own Ray is up, after the leftovers were stopped
        wait_for(lambda: mine.exists() or second.poll() is not None, "the second run's Ray record", 300, 0.1)
        left = {key: title for key, title in victims.items() if _alive(*key)}
        assert not left, f"processes of the killed run's Ray still alive: {left}"
        assert not (records / f"ray-{first.pid}.json").exists()
        _, stderr = second.communicate(timeout=600)
    finally:
        if second.poll() is None:
            second.kill()
            second.wait()
    assert second.returncode == 0, stderr
    assert query(wh, "select count(*) from rollouts")[0][0] == committed + 2
    assert not list(records.glob("ray-*.json"))  # a run that ended shut its Ray down and dropped its record
    check_consistent(wh)
