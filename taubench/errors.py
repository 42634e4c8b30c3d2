"""Errors taubench raises to its caller (a tool call's own failures are observations: see `env.TauCall`)."""


class TaubenchError(Exception):
    """Base class; the message is one line a user can act on."""


class DataNotFound(TaubenchError):
    """The τ-bench folder is missing."""


class DataError(TaubenchError):
    """A τ-bench data or task file does not parse or is not in the expected layout."""


class UnknownTool(TaubenchError):
    """A tool name the domain does not have (raised by replay; an agent's unknown tool is an observation)."""


class UnknownTask(TaubenchError):
    """A task id that is not a τ-bench task."""
