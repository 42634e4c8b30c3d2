"""Shared fixtures: the real MultiWOZ copy beside the checkout and an in-memory ToolWOZ database."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from toolwoz import multiwoz, tables
from toolwoz.tools import ToolEnv

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
MULTIWOZ_DIR = Path(os.environ.get("FACTORY_MULTIWOZ") or SHARED / "multiwoz")
REFERENCE_DIR = SHARED / "toolwoz-reference"


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
