"""Shared fixtures: the real MultiWOZ copy beside the checkout and an in-memory ToolWOZ database."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from toolwoz import multiwoz, tables
from toolwoz.corpus import build_corpus
from toolwoz.tools import ToolEnv
from train import tiny_model

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
MULTIWOZ_DIR = Path(os.environ.get("FACTORY_MULTIWOZ") or SHARED / "multiwoz")
REFERENCE_DIR = SHARED / "toolwoz-reference"
FACTORY = [sys.executable, "-m", "factory.cli"]
SERVING_MODULES = ("fastapi", "uvicorn", "openai", "starlette")  # transformers[serving]


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
def con(mw):
    return tables.in_memory(mw)


@pytest.fixture(scope="session")
def env(con) -> ToolEnv:
    return ToolEnv.from_connection(con)


def one_line_error(result: subprocess.CompletedProcess) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("Error: "), result.stderr
    assert "Traceback" not in result.stderr
    return lines[-1]


@pytest.fixture(scope="session")
def model_dir(env, tmp_path_factory) -> Path:
    tasks = sorted(env.tasks.values(), key=lambda t: t.task_id)[:200]
    rows = {d: r[:500] for d, r in env.rows.items()}
    return tiny_model.init_model(tmp_path_factory.mktemp("backends") / "tiny", build_corpus(rows, tasks),
                                 vocab_size=2000)


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
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                pytest.fail(f"transformers serve exited: {proc.stderr.read().decode()[-2000:]}")
            try:
                if httpx2.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx2.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("transformers serve did not come up within 90 s")
            time.sleep(0.2)
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
    return copy_warehouse(template, tmp_path)


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


def wait_for_rollouts(wh: Path, proc: subprocess.Popen, n: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read()
        try:
            if query(wh, "select count(*) from rollouts")[0][0] >= n:
                return
        except duckdb.Error:
            pass  # the writer is in a write session right now
        time.sleep(0.2)
    pytest.fail(f"fewer than {n} rollouts after {timeout} s")
