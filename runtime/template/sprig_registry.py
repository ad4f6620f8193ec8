"""How the Sprig functions are registered and called, and Sprig's string conversions.

:class:`Registry` wraps each function with Go's checks: the number of arguments (``wrong
number of args: want 1 got 0``), a string result no longer than :data:`MAX_STRING`, and a
value nested too deeply for Python reported as a FunctionError.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, TypeVar

from bobravoz.runtime.template.errors import FunctionError
from bobravoz.runtime.template.sprig_args import check_length
from bobravoz.runtime.template.sprig_data import printed_size
from bobravoz.runtime.template.values import go_string, is_list, is_map

_Function = TypeVar("_Function", bound=Callable[..., Any])


def _arity(function: Callable[..., Any]) -> tuple[int, int | None]:
    """(fewest, most) positional arguments of ``function`` (most is None for ``*args``)."""
    fewest = most = 0
    for parameter in inspect.signature(function).parameters.values():
        if parameter.kind is inspect.Parameter.VAR_POSITIONAL:
            return fewest, None
        most += 1
        if parameter.default is inspect.Parameter.empty:
            fewest += 1
    return fewest, most


def guarded(function: Callable[..., Any]) -> Callable[..., Any]:
    """``function`` with Go's argument-count check, and its failures as FunctionError."""
    fewest, most = _arity(function)
    if most is None:
        want = f"at least {fewest}"
    elif fewest == most:
        want = str(fewest)
    else:
        want = f"{fewest} to {most}"

    def call(*args: Any) -> Any:
        if len(args) < fewest or (most is not None and len(args) > most):
            raise FunctionError(f"wrong number of args: want {want} got {len(args)}")
        try:
            result = function(*args)
        except RecursionError:
            raise FunctionError("value nested too deeply") from None
        if isinstance(result, str):
            check_length(len(result))
        return result

    call.__name__ = function.__name__
    call.__doc__ = function.__doc__
    return call


class Registry:
    """Functions by template name, each wrapped by :func:`guarded`."""

    __slots__ = ("_functions",)

    def __init__(self) -> None:
        self._functions: dict[str, Callable[..., Any]] = {}

    @property
    def functions(self) -> Mapping[str, Callable[..., Any]]:
        """A read-only, live view of the registered functions."""
        return MappingProxyType(self._functions)

    def register(self, *names: str) -> Callable[[_Function], _Function]:
        """Decorator: register the function under each of ``names`` (returned unchanged)."""

        def decorate(function: _Function) -> _Function:
            wrapped = guarded(function)
            for name in names:
                if name in self._functions:
                    raise ValueError(f"Sprig function {name!r} registered twice")
                self._functions[name] = wrapped
            return function

        return decorate


def printable(value: Any) -> str:
    """Go's ``%v`` of ``value``, refused when it would print longer than 1 MiB."""
    if is_list(value) or is_map(value):
        printed_size(value)
    return go_string(value)


def strval(value: Any) -> str:
    """Sprig's ``strval``: a string as it is, anything else as ``%v``."""
    return value if isinstance(value, str) else printable(value)


def strslice(value: Any) -> list[str]:
    """Sprig's ``strslice``: list items (nil ones dropped) as strings; a non-list value as
    a one-string list; nil as an empty list."""
    if is_list(value):
        return [strval(item) for item in value if item is not None]
    if value is None:
        return []
    return [strval(value)]
