"""Errors toolwoz raises to its caller (a tool call's own failures are data: see `tools.ErrorKind`)."""


class ToolwozError(Exception):
    """Base class; the message is one sentence a user can act on."""


class DataError(ToolwozError):
    """MultiWOZ is missing, unreadable or not in the expected layout."""


class UnknownTask(ToolwozError):
    """A task id that is not a ToolWOZ task."""


class UnknownSplit(ToolwozError):
    """A split name that does not exist."""
