"""Argument checks, Go type names and work limits shared by the Sprig functions.

Go's ``text/template`` checks every argument against the Go parameter type before it calls a
function: a value of the wrong type is an error, never a silent conversion. These helpers do
the same for JSON-like Python values (None, bool, int, float, str, list, dict) and raise
:class:`FunctionError` with Go's wording. The limits bound the work of one function call, so
that a template can neither build an unbounded string nor walk an unbounded structure.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, MutableMapping
from typing import Any

from bobravoz.runtime.template.errors import FunctionError
from bobravoz.runtime.template.values import go_kind, go_type, is_list, is_map

MAX_STRING = 1 << 20
"""Longest string (in characters) a function may build: 1 MiB."""

MAX_LIST = 10_000
"""Most elements ``until``, ``untilStep`` and ``seq`` may produce."""

MAX_DEPTH = 256
"""Deepest nesting of lists and maps a deep walk (JSON, deepCopy, deepEqual, merge) follows."""

MAX_NODES = 1_000_000
"""Most values one deep walk may visit; a value shared N times counts N times."""

INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1


def _wrong_type(expected: str, value: Any) -> FunctionError:
    if value is None:
        return FunctionError(f"invalid value; expected {expected}")
    return FunctionError(f"wrong type for value; expected {expected}; got {go_type(value)}")


def string_arg(value: Any) -> str:
    """A Go ``string`` parameter: only a string is accepted."""
    if isinstance(value, str):
        return value
    raise _wrong_type("string", value)


def int_arg(value: Any) -> int:
    """A Go ``int`` parameter: an integer in the int64 range.

    A float with an integral value is accepted too (Go would refuse a float64 from data; JSON
    numbers arrive here as floats, so refusing them would make the parameter unusable).
    """
    if isinstance(value, bool):
        raise _wrong_type("int", value)
    if isinstance(value, float):
        if not math.isfinite(value) or value != math.floor(value):
            raise _wrong_type("int", value)
        value = int(value)
    if isinstance(value, int):
        if INT64_MIN <= value <= INT64_MAX:
            return value
        raise FunctionError(f"value {value} overflows int")
    raise _wrong_type("int", value)


def float_arg(value: Any) -> float:
    """A Go ``float64`` parameter: any number except a bool."""
    if isinstance(value, bool):
        raise _wrong_type("float64", value)
    if isinstance(value, float):
        return value
    if isinstance(value, int):
        return float(min(max(value, INT64_MIN), INT64_MAX))
    raise _wrong_type("float64", value)


def bool_arg(value: Any) -> bool:
    """A Go ``bool`` parameter: only True or False."""
    if isinstance(value, bool):
        return value
    raise _wrong_type("bool", value)


def map_arg(value: Any) -> Mapping[str, Any] | None:
    """A Go ``map[string]interface{}`` parameter: a mapping, or None for a nil map."""
    if value is None:
        return None
    if is_map(value):
        mapping: Mapping[str, Any] = value
        return mapping
    raise _wrong_type("map[string]interface {}", value)


def mutable_map_arg(value: Any) -> MutableMapping[str, Any] | None:
    """A map parameter a function changes in place (``set``, ``unset``, ``merge``); a
    read-only mapping is refused."""
    items = map_arg(value)
    if items is None or isinstance(items, MutableMapping):
        return items
    raise FunctionError("cannot change a read-only map")


def list_kind_arg(value: Any, message: str) -> list[Any]:
    """A value Sprig's list functions inspect with reflection: it must be a slice (returned
    as a list; do not change it).

    ``message`` is Sprig's error with ``{}`` for the kind, e.g. ``"Cannot find first on
    type {}"``; nil is an error too (Go's reflection panics on it).
    """
    if isinstance(value, list):
        return value
    if is_list(value):
        return list(value)
    if value is None:
        raise FunctionError("reflect: call of Kind on nil Type")
    raise FunctionError(message.format(go_kind_name(value)))


_KIND_NAMES = {"nil": "invalid"}


def go_kind_name(value: Any) -> str:
    """What Go's ``reflect.Kind.String`` says for the Go value behind ``value``."""
    kind = go_kind(value)
    if kind is None:
        return "struct"
    return _KIND_NAMES.get(kind, kind)


def check_length(length: int) -> None:
    """Refuse to build a string longer than :data:`MAX_STRING` characters."""
    if length > MAX_STRING:
        raise FunctionError(f"result of {length} characters is longer than {MAX_STRING}")


class WalkBudget:
    """Counts the values one deep walk visits; refuses past :data:`MAX_NODES` or
    :data:`MAX_DEPTH`, so shared sub-values or deep nesting cannot make one call unbounded."""

    __slots__ = ("remaining",)

    def __init__(self, limit: int = MAX_NODES) -> None:
        self.remaining = limit

    def visit(self, depth: int) -> None:
        """Account for one value at nesting ``depth`` (0 for the top)."""
        if depth > MAX_DEPTH:
            raise FunctionError(f"value nested deeper than {MAX_DEPTH} levels")
        self.remaining -= 1
        if self.remaining < 0:
            raise FunctionError("value too large to walk")


def utf8(text: str) -> bytes:
    """The UTF-8 bytes Go would hold for ``text`` (lone surrogates kept, never an error)."""
    return text.encode("utf-8", "surrogatepass")


def from_utf8(data: bytes) -> str:
    """Text from bytes Go would hold; invalid UTF-8 (e.g. a rune cut in half) becomes U+FFFD,
    as Go's own JSON and protobuf encoders would write it."""
    return data.decode("utf-8", "replace")
