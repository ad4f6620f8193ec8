"""Go value semantics over JSON-like Python values (None, bool, int, float, str, list, dict).

Shared by the evaluator and the function library: what Go's ``text/template`` treats as
true, and how ``fmt``'s ``%v`` prints a value.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any


def is_map(value: Any) -> bool:
    """Whether ``value`` stands for a Go map: a dict, or any other Mapping."""
    return type(value) is dict or isinstance(value, Mapping)


def is_list(value: Any) -> bool:
    """Whether ``value`` stands for a Go slice: a list, or another Sequence (a tuple) that is
    not a string."""
    return isinstance(value, list) or (
        isinstance(value, Sequence) and not isinstance(value, str | bytes | bytearray)
    )


def go_kind(value: Any) -> str | None:
    """The Go kind a JSON-like value stands for: ``nil``, ``bool``, ``int``, ``float64``,
    ``string``, ``slice`` or ``map``; None for any other Python value."""
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float64"
    if isinstance(value, str):
        return "string"
    if is_list(value):
        return "slice"
    if is_map(value):
        return "map"
    return None


_GO_TYPES = {
    "nil": "<nil>",
    "slice": "[]interface {}",
    "map": "map[string]interface {}",
}


def go_type(value: Any) -> str:
    """What Go's ``%T`` prints for the Go value a JSON-like Python value stands for (another
    Python value: its class name)."""
    kind = go_kind(value)
    if kind is None:
        return type(value).__name__
    return _GO_TYPES.get(kind, kind)


def truth(value: Any) -> bool:
    """Go template truth: false, 0, nil, and empty strings, lists and maps are false."""
    if value is None or value is False:
        return False
    if isinstance(value, bool):
        return True
    if isinstance(value, int | float):
        return value != 0
    if isinstance(value, str | bytes | Sequence | Mapping):
        return len(value) > 0
    return True


def format_float_g(value: float) -> str:
    """Go's ``strconv.FormatFloat(value, 'g', -1, 64)``, which is also ``%v`` of a float64:
    the shortest digits that round-trip, in exponent form when the decimal exponent is
    below -4 or at least 6 (``1e+06``, ``1.5e-05``, ``123456``), ``NaN``, ``+Inf``, ``-Inf``."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    sign = "-" if math.copysign(1.0, value) < 0 else ""
    if value == 0:
        return sign + "0"
    mantissa, _, exponent_text = repr(abs(value)).partition("e")
    whole, _, fraction = mantissa.partition(".")
    every = whole + fraction
    stripped = every.lstrip("0")
    # value = 0.<digits> * 10**point
    point = len(whole) - (len(every) - len(stripped)) + (int(exponent_text or "0"))
    digits = stripped.rstrip("0")
    exponent = point - 1
    if exponent < -4 or exponent >= 6:
        tail = "." + digits[1:] if len(digits) > 1 else ""
        return f"{sign}{digits[0]}{tail}e{'-' if exponent < 0 else '+'}{abs(exponent):02d}"
    if point <= 0:
        return f"{sign}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return sign + digits + "0" * (point - len(digits))
    return f"{sign}{digits[:point]}.{digits[point:]}"


def _go_float(value: float) -> str:
    """``%v`` of a float64 (see :func:`format_float_g`)."""
    return format_float_g(value)


def go_string(value: Any) -> str:
    """How ``fmt.Sprint`` (``%v``) prints ``value``: nil as ``<no value>`` is the caller's
    choice; here None prints ``<nil>``, lists ``[a b]``, maps ``map[k:v]`` sorted by key."""
    if value is None:
        return "<nil>"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _go_float(value)
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, Mapping):
        items = " ".join(f"{go_string(k)}:{go_string(value[k])}" for k in sorted(value, key=str))
        return f"map[{items}]"
    if isinstance(value, Sequence):
        return "[" + " ".join(go_string(item) for item in value) + "]"
    return str(value)
