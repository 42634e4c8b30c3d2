"""Errors the CLI turns into one-line messages.

Exit codes (architecture "Decided conventions"): 2 for a user mistake (bad flag or value, missing file,
unknown split/task/view/run), 1 for an infrastructure failure (backend down after retries, disk full, a
warehouse that cannot be opened). `--debug` or FACTORY_DEBUG=1 shows the traceback instead.

Every package has one root, in its `errors` module: `FactoryError` here, `search.errors.SearchError`,
`train.errors.TrainError`, `toolwoz.errors.ToolwozError`, `taubench.errors.TaubenchError` (the other packages
cannot import this one). `factory.cli.as_command_error` maps every root to a `CommandError` in one place, and
nothing else converts them. One-line text comes from `common.errors.first_line`.
"""

from __future__ import annotations

import click


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


class CommandError(click.ClickException, FactoryError):
    """What the user sees: a one-line `Error: ...` with the exit code the failure deserves."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code
