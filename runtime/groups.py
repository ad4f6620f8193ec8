"""Unwrapping the exception groups that nurseries raise around a single failure."""

from __future__ import annotations


def lone_exception(error: BaseException) -> BaseException:
    """The single leaf of nested one-member exception groups; anything else unchanged."""
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    return error
