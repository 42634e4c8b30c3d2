"""Errors search/ raises to its caller (a failed generation is data: see `backends.base.Completion`)."""


class SearchError(Exception):
    """Base class; the message is one line a user can act on."""
