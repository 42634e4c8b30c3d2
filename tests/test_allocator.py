"""The allocator settings: applied once per process on glibc, never over the user's own MALLOC_* variables."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT

PROBE = "from search.backends import allocator; print(allocator.tune(), allocator.tune())"


def probe(**env: str) -> str:
    clean = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", PROBE], env={**clean, **env}, capture_output=True, text=True,
                            cwd=ROOT, check=True)
    return result.stdout.strip()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_applied_once_on_glibc():
    assert probe() == "True True"


def test_left_alone_when_asked_or_when_the_user_set_glibc_variables():
    assert probe(FACTORY_MALLOC="default") == "False False"
    assert probe(MALLOC_TOP_PAD_="1048576") == "False False"
