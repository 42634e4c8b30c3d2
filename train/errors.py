"""Errors train/ raises to its caller."""


class TrainError(Exception):
    """Base class; the message is one line a user can act on."""


class TrainInputError(TrainError, ValueError):
    """The data, model or settings given to a trainer cannot work; the message names the fix."""


class NoRowsLeft(TrainInputError):
    """TRL's preprocessing dropped every row (each too long for `max_length`, or no trainable token left once cut)."""
