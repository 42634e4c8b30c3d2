"""Every fixture the tests share, one per concept (data: MultiWOZ, ToolWOZ, τ-bench; warehouses; the tiny model;
$FACTORY_HOME), and the helpers that run the CLI and wait on rows, files and output instead of time."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, TypeVar

import duckdb
import pytest

from taubench import data as tau_data
from taubench.env import TauEnv
from toolwoz import multiwoz, tables
from toolwoz.corpus import build_corpus
from toolwoz.teacher import Teacher
from toolwoz.tools import ToolEnv
from train import tiny_model

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
MULTIWOZ_DIR = Path(os.environ.get("FACTORY_MULTIWOZ") or SHARED / "multiwoz")
REFERENCE_DIR = SHARED / "toolwoz-reference"
TAUBENCH_DIR = Path(os.environ.get("FACTORY_TAUBENCH") or SHARED / "taubench")
FACTORY = [sys.executable, "-m", "factory.cli"]
SERVING_MODULES = ("fastapi", "uvicorn", "openai", "starlette")  # transformers[serving]
T = TypeVar("T")


def run(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
        input: str | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run `factory ARGS` in a subprocess and return the finished process (text output)."""
    full_env = {**os.environ, "FACTORY_DEBUG": "", **(env or {})}
    return subprocess.run([*FACTORY, *args], capture_output=True, text=True, env=full_env, cwd=cwd,
                          input=input, timeout=timeout)



@pytest.fixture(scope="session")
def mw() -> multiwoz.MultiWOZ:
    if not (MULTIWOZ_DIR / "data.json").exists():
        pytest.fail(f"MultiWOZ not found at {MULTIWOZ_DIR}; set FACTORY_MULTIWOZ")
    return multiwoz.load(MULTIWOZ_DIR)


@pytest.fixture(scope="session")
def con(mw) -> duckdb.DuckDBPyConnection:
    """The ToolWOZ tables built from `mw` in an in-memory DuckDB."""
    return tables.in_memory(mw)


@pytest.fixture(scope="session")
def env(con) -> ToolEnv:
    """The ToolWOZ tools on `con`."""
    return ToolEnv.from_connection(con)


@pytest.fixture(scope="session")
def teacher(env) -> Teacher:
    """The rule-based ToolWOZ agent, its lexicon from the real tables (stateless: one for the session)."""
    return Teacher.from_rows(env.rows)


@pytest.fixture()
def home(tmp_path, monkeypatch) -> Path:
    """$FACTORY_HOME set to a fresh TMP/home (models, the remembered MultiWOZ path, Ray records) for the test."""
    monkeypatch.setenv("FACTORY_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture(scope="module")
def tau_con() -> duckdb.DuckDBPyConnection:
    """Both τ-bench domains in a fresh in-memory DuckDB, one per test module (tests write branches into it)."""
    if not (TAUBENCH_DIR / "retail" / "orders.json").exists():
        pytest.fail(f"τ-bench data not found at {TAUBENCH_DIR}; set FACTORY_TAUBENCH")
    return tau_data.in_memory(folder=TAUBENCH_DIR)


@pytest.fixture(scope="module")
def retail(tau_con) -> TauEnv:
    """τ-bench retail on `tau_con`."""
    return TauEnv.open(tau_con, "retail")


@pytest.fixture(scope="module")
def airline(tau_con) -> TauEnv:
    """τ-bench airline on `tau_con`."""
    return TauEnv.open(tau_con, "airline")


def one_line_error(result: subprocess.CompletedProcess) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("Error: "), result.stderr
    assert "Traceback" not in result.stderr
    return lines[-1]


TINY_VOCAB = 2000  # the test model's vocabulary: small and quick (the default is tiny_model.DEFAULT_VOCAB)


def tiny_corpus(env: ToolEnv) -> list[str]:
    """The test model's corpus: the first 200 tasks and 500 rows of each domain."""
    tasks = sorted(env.tasks.values(), key=lambda t: t.task_id)[:200]
    return build_corpus({d: rows[:500] for d, rows in env.rows.items()}, tasks)


@pytest.fixture(scope="session")
def model_dir(env, tmp_path_factory) -> Path:
    """An untrained tiny model (seed 0) on `tiny_corpus`, made once; tests read it, never write it."""
    return tiny_model.init_model(tmp_path_factory.mktemp("model") / "tiny", tiny_corpus(env), vocab_size=TINY_VOCAB,
                                 seed=0)


@pytest.fixture(scope="session")
def openai_server(model_dir, tmp_path_factory):
    """`transformers serve` on a copy of the tiny model whose tokenizer has no response template (so malformed
    tool-call JSON comes back as text instead of HTTP 500)."""
    served = Path(shutil.copytree(model_dir, tmp_path_factory.mktemp("served") / "tiny"))
    config = json.loads((served / "tokenizer_config.json").read_text())
    config.pop("response_template", None)
    (served / "tokenizer_config.json").write_text(json.dumps(config))
    with serve(served) as url:
        yield str(served), url


@contextlib.contextmanager
def serve(model: Path) -> Iterator[str]:
    """`transformers serve MODEL` on 127.0.0.1 (a free port) until the block ends; yields its `/v1` URL."""
    import httpx2

    missing = [m for m in SERVING_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"`transformers serve` needs {', '.join(missing)} (pip install 'transformers[serving]')")
    port = free_port()
    cli = str(Path(sys.executable).with_name("transformers"))
    proc = subprocess.Popen([cli, "serve", str(model), "--device", "cpu", "--host", "127.0.0.1", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    def healthy() -> bool:
        if proc.poll() is not None:
            pytest.fail(f"transformers serve exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            return httpx2.get(f"{base}/health", timeout=1).status_code == 200
        except httpx2.TransportError:
            return False

    try:
        wait_for(healthy, "transformers serve answering /health", 90, poll_s=0.2)
        yield f"{base}/v1"
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_warehouse(directory: Path, *commands: list[str]) -> Path:
    """DIRECTORY/warehouse.duckdb after each CLI command (given `-w` it) succeeded."""
    path = directory / "warehouse.duckdb"
    for command in commands:
        result = run(*command, "-w", str(path))
        assert result.returncode == 0, result.stderr
    return path


def copy_warehouse(template: Path, directory: Path) -> Path:
    """A copy of the warehouse `template` at DIRECTORY/warehouse.duckdb."""
    path = directory / "warehouse.duckdb"
    shutil.copy(template, path)
    return path


@pytest.fixture(scope="session")
def template(tmp_path_factory) -> Path:
    """A warehouse with the ToolWOZ tables, built once; tests copy it."""
    return build_warehouse(tmp_path_factory.mktemp("template"), ["toolwoz", "build", "--multiwoz", str(MULTIWOZ_DIR)])


@pytest.fixture()
def wh(template, tmp_path) -> Path:
    """A copy of `template` (ToolWOZ built, no runs) at TMP/warehouse.duckdb: tests write it."""
    return copy_warehouse(template, tmp_path)


@pytest.fixture(scope="session")
def small_template(tmp_path_factory) -> Path:
    """A warehouse with the schema and one run (`eval-a`, no rollouts, no ToolWOZ), written through the real
    writer (closed: checkpointed, no .wal); `small` copies it."""
    from factory.store.writer import Writer

    path = tmp_path_factory.mktemp("small") / "w.duckdb"
    with Writer(path, "test") as writer:
        writer.append({"runs": [{"run_id": "eval-a", "kind": "eval", "created_at": "2026-01-01 00:00:00",
                                 "status": "done", "config": "{}", "agent_model": "teacher", "split": "val"}]})
    return path


@pytest.fixture()
def small(small_template, tmp_path) -> Path:
    """A copy of `small_template` at TMP/w.duckdb, alone in its folder: tests write it."""
    return Path(shutil.copy(small_template, tmp_path / "w.duckdb"))


def query(path: Path, sql: str, params: list | None = None) -> list[tuple]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()


def mark_deepest_golden(path: Path, run_id: str) -> int:
    """Mark each rollout's deepest branch of `run_id` golden and its reward 1, as if the harvest had succeeded
    (the untrained test model never earns a reward). Returns the run's rollout count."""
    con = duckdb.connect(str(path))
    try:
        con.execute("""
            UPDATE nodes SET is_golden = true
            FROM (SELECT n.rollout_id, unnest(arg_max(n.path, n.depth)) AS node_id
                  FROM nodes AS n JOIN rollouts AS o USING (rollout_id) WHERE o.run_id = $run
                  GROUP BY n.rollout_id) AS g
            WHERE nodes.rollout_id = g.rollout_id AND nodes.node_id = g.node_id""", {"run": run_id})
        con.execute("UPDATE rollouts SET reward = 1.0 WHERE run_id = $run", {"run": run_id})
        return con.execute("SELECT count(*) FROM rollouts WHERE run_id = $run", {"run": run_id}).fetchone()[0]
    finally:
        con.close()


def check_consistent(path: Path) -> None:
    """No half rollout: every stored node/message/call belongs to a committed rollout whose counts match."""
    assert query(path, "select count(*) from nodes where rollout_id not in (select rollout_id from rollouts)") == [(0,)]
    assert query(path, "select count(*) from messages where rollout_id not in (select rollout_id from rollouts)") \
        == [(0,)]
    assert query(path, """select count(*) from rollouts o
                          where n_nodes <> (select count(*) from nodes n where n.rollout_id = o.rollout_id)""") == [(0,)]
    assert query(path, "select count(*) - count(distinct (run_id, task_id, sample)) from rollouts") == [(0,)]


def wait_for(predicate: Callable[[], T], what: str, timeout: float = 120, poll_s: float = 0.05) -> T:
    """Poll `predicate` until it returns something truthy, and return that; fail naming `what` after `timeout`
    seconds (a deadline for a hung test, never a condition of the result)."""
    deadline = time.monotonic() + timeout
    while not (found := predicate()):
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout} s")
        time.sleep(poll_s)
    return found


def read_until(stream: IO, text: str, timeout: float = 60) -> str:
    """What a child process wrote to `stream` (its stdout or stderr pipe) up to and including `text`; fails after
    `timeout` s without it, or when the stream closes first."""
    seen, deadline = "", time.monotonic() + timeout
    while text not in seen:
        ready, _, _ = select.select([stream], [], [], max(deadline - time.monotonic(), 0))
        assert ready, f"no {text!r} within {timeout} s: {seen[-500:]!r}"
        chunk = os.read(stream.fileno(), 4096).decode(errors="replace")
        assert chunk, f"closed before {text!r}: {seen[-500:]!r}"
        seen += chunk
    return seen


def wait_for_rollouts(wh: Path, proc: subprocess.Popen, n: int, timeout: float = 120) -> None:
    """Wait until the warehouse holds `n` rollouts, read while `proc` (the writer) keeps running."""
    def holds_n() -> bool:
        assert proc.poll() is None, proc.stderr.read()
        try:
            return query(wh, "select count(*) from rollouts")[0][0] >= n
        except duckdb.Error:
            return False  # the writer is in a write session right now

    wait_for(holds_n, f"{n} rollouts in {wh}", timeout, poll_s=0.2)
