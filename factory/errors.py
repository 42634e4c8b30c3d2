"""Errors the CLI turns into one-line messages.

Exit codes (architecture "Decided conventions"): 2 for a user mistake (bad flag or value, missing file,
unknown split/task/view/run), 1 for an infrastructure failure (backend down after retries, disk full, a
warehouse that cannot be opened). `--debug` or FACTORY_DEBUG=1 shows the traceback instead.

The other packages cannot import this one, so they raise their own roots (`toolwoz.errors.ToolwozError`,
`train.recipes.TrainInputError`, `search.backends.base.BackendError`); `factory.cli` maps every one of them to
a `CommandError` in one place, and nothing else converts them.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:  # asyncio is imported when a run starts its loop, not at every CLI start-up
    import asyncio


class FactoryError(Exception):
    """Base class; `exit_code` says whose fault it is."""

    exit_code = 1


class UserError(FactoryError):
    """The user can fix this by changing what they typed."""

    exit_code = 2


class WarehouseError(FactoryError):
    """The warehouse cannot be opened or written."""


class WarehouseBusy(UserError):
    """Another process holds the warehouse for writing."""


class NotBuilt(UserError):
    """The warehouse has no ToolWOZ tables yet."""


class Interrupted(FactoryError):
    """Ctrl-C: what finished is committed; re-running the command resumes."""

    exit_code = 130


# Set by the SIGINT/SIGTERM handler. A library may catch the KeyboardInterrupt that handler raises: DuckDB turns
# one that lands during a query into RuntimeError("Query interrupted"), which a rollout keeps as data (its tool
# call failed) and the run would go on. Commits check this, so the stop still happens.
STOP_REQUESTED = threading.Event()
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def stop_requested(signum: int, frame: object) -> None:
    """Signal handler: remember the request, then stop as Ctrl-C does (KeyboardInterrupt)."""
    STOP_REQUESTED.set()
    # Raised inside whatever asyncio task runs then; asyncio would log that task's "exception never retrieved"
    # with a traceback at exit, which says nothing to the user: the one-line "interrupted" error does.
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    raise KeyboardInterrupt(signal.Signals(signum).name)


@contextlib.contextmanager
def signals_cancel(task: asyncio.Task) -> Iterator[None]:
    """Inside a running event loop: SIGINT/SIGTERM set STOP_REQUESTED and cancel `task` from the loop (never
    from inside a query or a tool call), so it unwinds in order and its progress bar closes before the error is
    printed; `stop_requested` handles both again afterwards."""
    loop = task.get_loop()

    def cancel() -> None:
        STOP_REQUESTED.set()
        task.cancel()

    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, cancel)
    try:
        yield
    finally:
        for signum in STOP_SIGNALS:
            loop.remove_signal_handler(signum)
            signal.signal(signum, stop_requested)


def raise_if_stop_requested() -> None:
    """KeyboardInterrupt if a signal asked this process to stop, even if the one it raised was caught."""
    if STOP_REQUESTED.is_set():
        raise KeyboardInterrupt("stop requested")


class CommandError(click.ClickException):
    """What the user sees: a one-line `Error: ...` with the exit code the failure deserves."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (its type's name when it has none): for one-line errors."""
    return (str(e).strip().splitlines() or [type(e).__name__])[0]
