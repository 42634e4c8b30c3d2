"""Stopping a command: SIGINT (Ctrl-C) and SIGTERM end it the same way, what finished stays committed."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # asyncio is imported when a run starts its loop, not at every CLI start-up
    import asyncio


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
