"""Errors a user can act on: each message names the problem and the fix."""

import traceback


class BilateralError(Exception):
    """Base class: the launchers print these without a traceback and exit non-zero."""


class ConfigError(BilateralError):
    """A config key, preset, model kind or seed list that does not exist or does not parse."""


class DataError(BilateralError):
    """A dataset that is missing, corrupt, incomplete or inconsistent."""


class CheckpointError(BilateralError):
    """A checkpoint that does not match the model it is loaded into."""


def describe_failure(exc: BaseException) -> str:
    """A user error is its message; anything else keeps its traceback for the run's error.txt."""
    if isinstance(exc, BilateralError):
        return f"{type(exc).__name__}: {exc}"
    return "".join(traceback.format_exception(exc))
