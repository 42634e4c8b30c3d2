"""Shard rollouts over Ray workers; each worker runs the same engine with its own backend, the driver writes.

A worker is a Ray actor (`HarvestWorker`) holding one agent backend (one per GPU when the cluster has GPUs), an
in-memory ToolWOZ database rebuilt from Arrow tables the driver puts in the object store, and a `ToolRunner`.
Its `rollout` method is async, so the calls in flight on one worker share its event loop and its backend
batches their model turns together, exactly as a local harvest does. The driver (`WorkerPool.run`) keeps
`inflight` rollouts per worker, hands out the next job when one finishes (so fast workers take more), and
yields each finished rollout as Arrow tables of the rows `RolloutResult.tables()` gives; only the caller
writes them to the warehouse. A worker that dies loses its unfinished rollouts (reported as `WorkerLost`);
the others carry on with the jobs not yet handed out. No queue, RPC or scheduler of our own: Ray's actors,
object store and `ray.wait`.

Ray is imported only here, and only when a pool is started (`pip install 'josh-factory[ray]'`).
"""

from __future__ import annotations

import os
import socket
import threading
from collections import deque
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import urlsplit

import pyarrow as pa

from common.errors import first_line
from search.backends import BackendError, engine_info, load_backend
from search.backends.base import Backend
from search.josh import SearchConfig, run_rollout
from search.ray_local import RayRecord, stop_leftovers
from search.runner import ToolRunner
from toolwoz import tables
from toolwoz.environment import ToolWOZ
from toolwoz.tasks import Task
from toolwoz.tools import ToolEnv
from toolwoz.values import storable

RAY_MISSING = "--ray needs Ray, which is not installed: pip install 'josh-factory[ray]'"
UserFactory = Callable[[Task, int], Any]  # (task, sample) -> a user simulator


@dataclass
class WorkerSetup:
    """What every worker builds its engine from (put in the object store once, shared by all workers)."""

    agent: str
    base_url: str | None
    search: SearchConfig
    toolwoz: dict[str, pa.Table]  # tables.export_arrow of the driver's ToolWOZ copy
    make_users: Callable[[Backend | None], UserFactory]  # given the user backend (or None): the user factory
    user_model: str | None = None  # an LLM user's backend, loaded on the worker
    user_base_url: str | None = None
    concurrency: int = 16
    max_batch: int = 128
    request_timeout_s: float | None = None  # per HTTP request of an openai: backend
    chat_template: str | None = None  # the agent's, in place of its own (`load_backend`)


@dataclass(frozen=True)
class Job:
    """One rollout to run: ids are decided by the driver, so they are the same as in a local harvest."""

    rollout_id: str
    run_id: str
    task_id: str
    sample: int


@dataclass
class Finished:
    job: Job
    tables: dict[str, pa.Table]
    worker: int


@dataclass
class WorkerLost:
    worker: int
    error: str
    lost: list[Job]  # handed to it, never returned: not committed, a re-run does them


def rows_to_arrow(rows: list[dict[str, Any]]) -> pa.Table:
    """Rows as an Arrow table with the union of their keys, built as `factory.store.to_arrow` builds it
    (column by column), so the driver writes the very values a local harvest writes."""
    keys = dict.fromkeys(k for row in rows for k in row)
    try:
        return pa.table({k: [row.get(k) for row in rows] for k in keys})
    except UnicodeEncodeError:  # a lone surrogate from a model somewhere: store U+FFFD in its place
        return pa.table({k: [storable(row.get(k)) for row in rows] for k in keys})


class HarvestWorker:
    """The engine on one Ray worker. A setup failure is kept and reported by `info`, never raised from
    `__init__` (Ray would turn it into a dead actor with a multi-page traceback)."""

    def __init__(self, setup: WorkerSetup):
        self.setup = setup
        self.failure: tuple[str, str] | None = None
        try:
            self.env = ToolWOZ(ToolEnv.from_connection(tables.from_arrow(setup.toolwoz)))
            self.agent = load_backend(setup.agent, base_url=setup.base_url, rows=self.env.rows,
                                      concurrency=setup.concurrency, max_batch=setup.max_batch,
                                      request_timeout_s=setup.request_timeout_s, chat_template=setup.chat_template)
            user_backend = None
            if setup.user_model:
                user_backend = load_backend(setup.user_model, base_url=setup.user_base_url, rows=self.env.rows,
                                            concurrency=setup.concurrency, request_timeout_s=setup.request_timeout_s)
            self.make_user = setup.make_users(user_backend)
            self.tools = ToolRunner(self.env)
        except BackendError as e:
            self.failure = ("backend", str(e))
        except Exception as e:  # noqa: BLE001 - reported to the driver as one line
            self.failure = ("error", first_line(e, with_type=True))

    def info(self) -> dict[str, Any]:
        """pid, host, the engine description (`engine_info`) and the setup failure, if any."""
        return {"pid": os.getpid(), "host": socket.gethostname(), "failure": self.failure,
                "engine": engine_info(self.agent) if self.failure is None else {}}

    async def rollout(self, job: Job) -> dict[str, pa.Table]:
        """Run one rollout (its model turns batched with the others in flight here); its rows as Arrow."""
        task = self.env.tasks[job.task_id]
        result = await run_rollout(task, self.agent, self.make_user(task, job.sample), self.tools,
                                   self.setup.search, rollout_id=job.rollout_id, run_id=job.run_id,
                                   sample=job.sample)
        return {name: rows_to_arrow(rows) for name, rows in result.tables().items()}


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise BackendError(RAY_MISSING) from None
    return ray


def _preflight(address: str, timeout_s: float = 3.0) -> None:
    """A TCP connect to HOST:PORT first: `ray.init` on an address nobody answers retries for a minute."""
    parts = urlsplit(address if "://" in address else f"//{address}")
    if not parts.hostname or not parts.port:
        raise BackendError(f"Ray address {address!r} is not HOST:PORT (e.g. 10.0.0.5:6379 or ray://10.0.0.5:10001)")
    try:
        socket.create_connection((parts.hostname, parts.port), timeout=timeout_s).close()
    except OSError as e:
        raise BackendError(f"no Ray cluster answers at {address} ({e.strerror or type(e).__name__}); start one "
                           "with `ray start --head` there, or use --ray without an address for a local Ray") from None


def connect(address: str | None) -> Any:
    """Join the Ray cluster at `address` (`auto` = the one `ray start` made here); None = $RAY_ADDRESS if set,
    else a new local Ray. Already initialised (a test's `ray.init(num_cpus=2)`): kept as it is."""
    ray = _import_ray()
    if ray.is_initialized():
        return ray
    address = address or os.environ.get("RAY_ADDRESS") or "local"
    if address not in ("local", "auto"):
        _preflight(address)
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level="ERROR",
                 configure_logging=True)
    except Exception as e:  # noqa: BLE001 - Ray raises bare Exception when a local node does not come up
        first = first_line(e)
        if address == "local":  # not the user's doing: an infrastructure failure (exit 1)
            raise RuntimeError(f"a local Ray did not start: {first}") from None
        raise BackendError(f"cannot join the Ray cluster at {address}: {first}") from None
    return ray


@contextmanager
def local_ray(record_dir: Path, address: str | None = None) -> Iterator[RayRecord | None]:
    """A new local Ray, recorded in `record_dir` while it runs (`search/ray_local.py`: the next one stops what a
    killed driver left) and shut down at the end; yields its record. Several pools in a row (the loop's rollout
    stages) share it, each starting only its workers. Yields None and starts nothing where Ray is already
    initialised or `address` (else $RAY_ADDRESS) names a cluster: each pool joins that."""
    ray = _import_ray()
    if ray.is_initialized() or (address or os.environ.get("RAY_ADDRESS") or "local") != "local":
        yield None
        return
    stop_leftovers(record_dir)
    connect("local")
    record = RayRecord(record_dir)
    done = threading.Event()

    def watch() -> None:  # the workers each pool starts, recorded as they come
        while not done.wait(1.0):
            record.update()

    watcher = threading.Thread(target=watch, name="ray-record", daemon=True)
    record.update(force=True)
    watcher.start()
    try:
        yield record
    finally:
        done.set()
        watcher.join()
        ray.shutdown()
        record.remove()


class WorkerPool:
    """`workers` HarvestWorker actors (default: one per GPU of the cluster, else one per CPU)."""

    def __init__(self, setup: WorkerSetup, *, workers: int | None = None, address: str | None = None,
                 record_dir: Path | None = None):
        """`record_dir`: where a local Ray this pool starts is recorded, so that the next pool given the same
        folder stops what a killed driver left running (`search/ray_local.py`); it does so first."""
        self._own_ray = ExitStack()  # the local Ray this pool starts, if it starts one
        self.record: RayRecord | None = None
        if record_dir is not None:
            self.record = self._own_ray.enter_context(local_ray(record_dir, address))
            if self.record is None:  # someone else's Ray
                stop_leftovers(record_dir)
        self.ray = connect(address)
        resources = self.ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        count = workers or gpus or max(1, int(resources.get("CPU", 1)))
        options = {"num_gpus": 1} if gpus else {"num_cpus": 1}
        actor = self.ray.remote(HarvestWorker).options(**options, max_restarts=0)
        setup_ref = self.ray.put(setup)
        self.actors = [actor.remote(setup_ref) for _ in range(count)]
        self.alive = set(range(count))
        try:
            self.infos = self.ray.get([a.info.remote() for a in self.actors])
        except self.ray.exceptions.RayError as e:
            self.shutdown()
            raise RuntimeError(f"a Ray worker failed to start: {first_line(e, with_type=True)}") from None
        if self.record is not None:
            self.record.update(force=True)  # the workers' processes too
        failures = [i["failure"] for i in self.infos if i["failure"]]
        if failures:
            self.shutdown()
            kind, message = failures[0]
            raise BackendError(message) if kind == "backend" else RuntimeError(f"a Ray worker failed: {message}")

    @property
    def engine(self) -> dict[str, Any]:
        """The agent engine's description (the same on every worker: same package versions assumed)."""
        return self.infos[0]["engine"]

    def run(self, jobs: list[Job], *, inflight: int) -> Iterator[Finished | WorkerLost]:
        """Run `jobs` with at most `inflight` per live worker; yields results in completion order. When every
        worker has died, the jobs never handed out are left in `self.not_started`."""
        ray = self.ray
        queue = deque(jobs)
        self.not_started: list[Job] = []
        pending: dict[Any, tuple[int, Job]] = {}

        def fill(worker: int) -> None:
            while queue and sum(1 for w, _ in pending.values() if w == worker) < inflight:
                job = queue.popleft()
                pending[self.actors[worker].rollout.remote(job)] = (worker, job)

        for worker in sorted(self.alive):
            fill(worker)
        while pending:
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            if self.record is not None:
                self.record.update()  # workers Ray started since (at most once a second)
            worker, job = pending.pop(ref)
            try:
                result = ray.get(ref)
            except ray.exceptions.RayActorError as e:
                if worker not in self.alive:
                    continue
                self.alive.discard(worker)
                theirs = [r for r, (w, _) in pending.items() if w == worker]
                lost = [job, *(pending.pop(r)[1] for r in theirs)]
                yield WorkerLost(worker, first_line(e, with_type=True), lost)
                for other in sorted(self.alive):  # its share of the queue goes to the others
                    fill(other)
                continue
            yield Finished(job, result, worker)
            if worker in self.alive:
                fill(worker)
        self.not_started = list(queue)

    def shutdown(self) -> None:
        """Kill the actors (their backends go with them); a local Ray this pool started goes too."""
        for actor in self.actors:
            try:
                self.ray.kill(actor)
            except Exception:  # noqa: BLE001 - already dead
                pass
        self._own_ray.close()
        self.record = None
