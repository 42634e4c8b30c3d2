"""Shared fixtures: the real MultiWOZ copy beside the checkout and an in-memory ToolWOZ database."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from toolwoz import multiwoz, tables
from toolwoz.tools import ToolEnv

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
MULTIWOZ_DIR = Path(os.environ.get("FACTORY_MULTIWOZ") or SHARED / "multiwoz")
REFERENCE_DIR = SHARED / "toolwoz-reference"
FACTORY = [sys.executable, "-m", "factory.cli"]


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
