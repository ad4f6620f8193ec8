"""JSON exactly as Go's ``encoding/json`` writes and reads it (Sprig's toJson and fromJson).

Writing: map keys sorted; floats in Go's form (``1`` not ``1.0``, ``1e+21``, ``1e-7``); ``<``,
``>``, ``&`` escaped as ``\\u003c``... unless ``escape_html`` is false (``toRawJson``);
U+2028 and U+2029 always escaped; NaN and ±Inf are an error; ``indent`` gives
``json.MarshalIndent``'s layout (empty lists and maps stay ``[]`` and ``{}``).

Reading: every number is a float64 (as Go decodes into ``interface{}``); NaN, Infinity and
numbers out of range are errors; a lone surrogate escape becomes U+FFFD.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

from bobravoz.runtime.template.errors import FunctionError
from bobravoz.runtime.template.sprig_args import MAX_STRING, WalkBudget
from bobravoz.runtime.template.values import is_list, is_map

_ESCAPE_HTML: Final = re.compile('[\\x00-\\x1f"\\\\<>&\u2028\u2029\ud800-\udfff]')
_ESCAPE_PLAIN: Final = re.compile('[\\x00-\\x1f"\\\\\u2028\u2029\ud800-\udfff]')
_SHORT: Final = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_SHORT_CONTROL: Final = {"\b": "\\b", "\f": "\\f"}


class UnsupportedValue(Exception):
    """A value Go's JSON encoder refuses (NaN, ±Inf, a non-JSON type): ``json.Marshal``
    returns an error, which ``toJson`` turns into "" and ``mustToJson`` reports."""


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    short = _SHORT.get(char) or _SHORT_CONTROL.get(char)
    if short is not None:
        return short
    code = ord(char)
    if 0xD800 <= code <= 0xDFFF:
        return "\ufffd"
    return f"\\u{code:04x}"


def go_json_float(value: float) -> str:
    """Go's JSON text of a float64: shortest digits, plain notation from 1e-6 to 1e21."""
    if value == 0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    text = repr(value)
    magnitude = abs(value)
    if magnitude < 1e-6 or magnitude >= 1e21:
        # repr uses the exponent form throughout this range, with the same digits as Go.
        mantissa, _, exponent = text.partition("e")
        sign = "-" if exponent.startswith("-") else "+"
        digits = exponent.lstrip("+-").lstrip("0") or "0"
        if sign == "+" and len(digits) < 2:
            digits = digits.rjust(2, "0")
        return f"{mantissa}e{sign}{digits}"
    if "e" not in text:
        return text.removesuffix(".0")
    mantissa, _, exponent_text = text.partition("e")
    negative = mantissa.startswith("-")
    whole, _, fraction = mantissa.lstrip("-").partition(".")
    digits = whole + fraction
    point = len(whole) + int(exponent_text)
    if point >= len(digits):
        plain = digits + "0" * (point - len(digits))
    elif point <= 0:
        plain = "0." + "0" * -point + digits
    else:
        plain = digits[:point] + "." + digits[point:]
    return ("-" if negative else "") + plain


class _Writer:
    __slots__ = ("budget", "escape", "indent", "parts", "size")

    def __init__(self, escape_html: bool, indent: str | None) -> None:
        self.parts: list[str] = []
        self.size = 0
        self.escape = _ESCAPE_HTML if escape_html else _ESCAPE_PLAIN
        self.indent = indent
        self.budget = WalkBudget()

    def put(self, text: str) -> None:
        self.parts.append(text)
        self.size += len(text)
        if self.size > MAX_STRING:
            raise FunctionError(f"json: result longer than {MAX_STRING} characters")

    def string(self, text: str) -> None:
        self.put('"' + self.escape.sub(_escape, text) + '"')

    def newline(self, depth: int) -> None:
        if self.indent is not None:
            self.put("\n" + self.indent * depth)

    def value(self, value: Any, depth: int) -> None:
        self.budget.visit(depth)
        if value is None:
            self.put("null")
        elif value is True:
            self.put("true")
        elif value is False:
            self.put("false")
        elif isinstance(value, int):
            self.put(str(value))
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise UnsupportedValue(f"json: unsupported value: {_go_special(value)}")
            self.put(go_json_float(value))
        elif isinstance(value, str):
            self.string(value)
        elif is_list(value):
            self.sequence(value, depth)
        elif is_map(value):
            self.mapping(value, depth)
        else:
            raise UnsupportedValue(f"json: unsupported type: {type(value).__name__}")

    def sequence(self, items: Sequence[Any], depth: int) -> None:
        if not items:
            self.put("[]")
            return
        self.put("[")
        for position, item in enumerate(items):
            if position:
                self.put(",")
            self.newline(depth + 1)
            self.value(item, depth + 1)
        self.newline(depth)
        self.put("]")

    def mapping(self, items: Mapping[Any, Any], depth: int) -> None:
        if not items:
            self.put("{}")
            return
        if not all(isinstance(key, str) for key in items):
            raise UnsupportedValue("json: unsupported type: map with non-string keys")
        separator = ":" if self.indent is None else ": "
        self.put("{")
        for position, key in enumerate(sorted(items)):
            if position:
                self.put(",")
            self.newline(depth + 1)
            self.string(key)
            self.put(separator)
            self.value(items[key], depth + 1)
        self.newline(depth)
        self.put("}")


def _go_special(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    return "+Inf" if value > 0 else "-Inf"


def encode(value: Any, *, escape_html: bool = True, indent: str | None = None) -> str:
    """Go's ``json.Marshal`` (``MarshalIndent`` with ``indent``); raises UnsupportedValue
    for what Go refuses (NaN, ±Inf, non-JSON values) and FunctionError for a result too
    deep or too large."""
    writer = _Writer(escape_html, indent)
    writer.value(value, 0)
    return "".join(writer.parts)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"invalid character {name[0]!r} looking for beginning of value")


def _go_number(text: str) -> float:
    number = float(text)
    if math.isinf(number):
        raise ValueError(f"json: cannot unmarshal number {text} into Go value of type float64")
    return number


_SURROGATE: Final = re.compile("[\ud800-\udfff]")


def _clean(value: Any) -> Any:
    """Replace lone surrogates (from ``\\ud800`` escapes) with U+FFFD, as Go decodes them."""
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, list):
        return [_clean(item) for item in value]
    if isinstance(value, dict):
        return {_clean(key): _clean(item) for key, item in value.items()}
    return value


def decode(text: str) -> Any:
    """Go's ``json.Unmarshal`` into ``interface{}``; raises FunctionError on invalid JSON."""
    try:
        value = json.loads(
            text, parse_float=_go_number, parse_int=_go_number, parse_constant=_reject_constant
        )
    except RecursionError:
        raise FunctionError("json: exceeded max depth") from None
    except ValueError as exc:
        raise FunctionError(str(exc)) from None
    if _SURROGATE.search(text) or "\\u" in text:
        value = _clean(value)
    return value
