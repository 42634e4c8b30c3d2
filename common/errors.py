"""One-line error text, shared by every package (the CLI's `Error: ...` lines and the messages that wrap a
library's exception)."""

from __future__ import annotations


def first_line(e: BaseException, *, with_type: bool = False) -> str:
    """The first line of `e`'s message, or its type's name when the message is empty.

    `with_type=True` gives `Type: first line` (still only `Type` for an empty message), for wrapping a foreign
    exception whose type says what went wrong.
    """
    lines = str(e).strip().splitlines()
    if not lines:
        return type(e).__name__
    return f"{type(e).__name__}: {lines[0]}" if with_type else lines[0]
