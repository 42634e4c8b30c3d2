"""One error root per package, one first-line helper (`common.errors.first_line`), and the CLI's one mapping from
every root to a one-line `Error: ...` with its exit code."""

from __future__ import annotations

import importlib
import inspect
import re
import string

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from common.errors import first_line
from factory.cli import USER_ERRORS, as_command_error
from factory.errors import FactoryError
from search.errors import SearchError
from taubench.errors import TaubenchError
from tests.conftest import ROOT, build_warehouse, one_line_error, run
from tests.test_imports import project_modules
from toolwoz.errors import ToolwozError
from train.errors import TrainError

ROOTS = {"factory": FactoryError, "search": SearchError, "train": TrainError, "toolwoz": ToolwozError,
         "taubench": TaubenchError}  # common/ and sql/ raise only Python's own errors
TAUBENCH = ROOT.parent / "shared" / "taubench"


def exception_classes() -> dict[str, type[BaseException]]:
    """`module.Class` -> class, for every exception class defined in a project module (each module imported)."""
    found = {}
    for name in project_modules():
        if name.endswith("__main__"):  # `python -m factory.cli` runs the CLI on import
            continue
        module = importlib.import_module(name)
        for attr, value in vars(module).items():
            if inspect.isclass(value) and value.__module__ == name and issubclass(value, BaseException):
                found[f"{name}.{attr}"] = value
    return found


def test_every_exception_class_is_under_its_packages_root() -> None:
    found = exception_classes()
    # the scan sees the classes it is meant to judge (so it cannot pass by seeing none)
    assert {"factory.jobs.ray_harvest.WorkersLost", "search.backends.base.BackendError",
            "search.backends.parsing._Malformed", "train.errors.TrainInputError", "toolwoz.errors.UnknownSplit",
            "taubench.errors.DataNotFound", "factory.errors.CommandError"} <= set(found)
    stray = sorted(name for name, cls in found.items()
                   if (root := ROOTS.get(name.split(".")[0])) is None or not issubclass(cls, root))
    assert stray == []
    assert all(root.__module__ == f"{package}.errors" for package, root in ROOTS.items())


def test_the_cli_maps_every_root() -> None:
    assert {FactoryError, *USER_ERRORS} == set(ROOTS.values())


@pytest.mark.parametrize("error, code", [
    *((root("bad value\nwith details"), 2) for root in (SearchError, TrainError, ToolwozError, TaubenchError)),
    (FactoryError("bad value\nwith details"), 1),
])
def test_roots_become_one_line(error: Exception, code: int) -> None:
    mapped = as_command_error(error)
    assert (mapped.message, mapped.exit_code) == ("bad value", code)


def test_foreign_errors_keep_their_messages() -> None:
    assert as_command_error(RuntimeError("boom\nat line 3")).message == \
        "unexpected RuntimeError: boom (run with --debug for the traceback)"
    assert as_command_error(OSError("No space left on device\n")).message == \
        "No space left on device (run with --debug for details)"


messages = st.text(alphabet=st.characters(codec="utf-8"))
blank = st.text(alphabet=" \t\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")
types = st.sampled_from([ValueError, RuntimeError, OSError, FactoryError, ToolwozError])


@given(types, messages)
def test_first_line_is_one_line(kind: type[Exception], message: str) -> None:
    for line in (first_line(kind(message)), first_line(kind(message), with_type=True)):
        assert line and line.splitlines() == [line]
    assert first_line(kind(message)) in message or message.strip() == ""


@given(types, blank)
def test_first_line_of_an_empty_message_is_the_type_name(kind: type[Exception], message: str) -> None:
    assert first_line(kind(message)) == first_line(kind(message), with_type=True) == kind.__name__


@given(types, st.text(alphabet=string.ascii_letters + string.punctuation + " ", min_size=1))
def test_first_line_keeps_a_one_line_message(kind: type[Exception], message: str) -> None:
    assume(message.strip())
    assert first_line(kind(f"{message}\nmore")) == message.lstrip()  # only the message's ends are stripped
    assert first_line(kind(message), with_type=True) == f"{kind.__name__}: {message.strip()}"


def test_no_package_takes_first_lines_itself() -> None:
    """Every first line goes through common.errors.first_line (messages stay alike when it changes)."""
    inline = re.compile(r"str\(\w+\)(\.strip\(\))?\.splitlines\(\)")
    copies = sorted(name for name, path in project_modules().items()
                    if name != "common.errors" and inline.search(path.read_text()))
    assert copies == []


@pytest.fixture(scope="module")
def tau(tmp_path_factory):
    """A warehouse with τ-bench retail built (no ToolWOZ: cheap)."""
    return build_warehouse(tmp_path_factory.mktemp("tau"), ["env", "build", "--env", "retail", "--taubench",
                                                             str(TAUBENCH)])


def cases(tmp, tau) -> list[tuple[list[str], type[Exception], int, str]]:
    """A real command that fails with an error of each root: (args, root, exit code, part of the line)."""
    (tmp / "not.duckdb").write_text("not a database")
    (tmp / "empty_model").mkdir()
    return [
        (["toolwoz", "info", "-w", str(tmp / "none.duckdb")], FactoryError, 2, "no warehouse at"),
        (["toolwoz", "info", "-w", str(tmp / "not.duckdb")], FactoryError, 1, "not a valid DuckDB database file"),
        (["toolwoz", "build", "--multiwoz", str(tmp / "nope"), "-w", str(tmp / "w.duckdb")], ToolwozError, 2,
         "does not exist"),
        (["env", "build", "--env", "retail", "--taubench", str(tmp / "nope"), "-w", str(tmp / "w.duckdb")],
         TaubenchError, 2, "τ-bench data not found"),
        (["eval", "--env", "retail", "--agent", "openai:x", "--limit", "1", "-w", str(tau)], SearchError, 2,
         "needs --base-url"),
        (["train", "sft", "--model", str(tmp / "empty_model"), "--view", "nosuch", "--out", str(tmp / "out"),
          "-w", str(tau)], TrainError, 2, "no view 'nosuch'"),
    ]


def raised(result) -> tuple[type[BaseException], str]:
    """The class and message of the exception `factory --debug` ended with (the last `module.Class: ...` line)."""
    header = [m for m in re.finditer(r"^(\w+(?:\.\w+)+): (.*)$", result.stderr, re.MULTILINE)][-1]
    module, _, name = header[1].rpartition(".")
    return getattr(importlib.import_module(module), name), header[2]


def test_each_root_is_one_line_from_the_cli(tmp_path, tau) -> None:
    env = {"OPENAI_BASE_URL": "", "FACTORY_HOME": str(tmp_path / "home")}
    for args, root, code, fragment in cases(tmp_path, tau):
        result = run(*args, env=env)
        line = one_line_error(result)
        assert result.returncode == code and fragment in line, (args, result.stderr)
        assert [x for x in result.stderr.splitlines() if x.startswith("Error: ")] == [line]
        debug = run("--debug", *args, env=env)  # the same failure, as a traceback: which class it was
        kind, message = raised(debug)
        assert "Traceback" in debug.stderr and issubclass(kind, root), (args, debug.stderr[-2000:])
        assert line == f"Error: {message}"
