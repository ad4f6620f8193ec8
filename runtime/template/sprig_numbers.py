"""Numbers as Sprig converts and computes them.

- :func:`to_int64` / :func:`to_float64` are spf13/cast's ``ToInt64`` / ``ToFloat64`` (v1.9):
  floats truncate, numeric strings parse with Go's rules (``"0x1F"``, ``"010"`` octal,
  ``"1_000"``, ``"5.7"`` → 5), anything else (or an out-of-range string) is 0.
- Integer results wrap around like Go's int64.
- :func:`decimal_op` is Sprig's ``execDecimalOp``: the float functions (``addf``...) compute
  in exact decimals made from each float's shortest text, so ``addf 0.1 0.2`` is ``0.3``;
  division keeps 16 decimal places, rounding half away from zero (shopspring/decimal).
- :func:`go_round`, :func:`go_max`, :func:`go_min`: Go's ``math`` semantics for NaN, ±Inf, ±0.
"""

from __future__ import annotations

import decimal
import math
import re
from collections.abc import Callable, Iterable
from typing import Any, Final

from bobravoz.runtime.template.errors import FunctionError
from bobravoz.runtime.template.sprig_args import INT64_MAX, INT64_MIN, MAX_LIST

_TWO64: Final = 1 << 64


def wrap_int64(value: int) -> int:
    """``value`` reduced to Go's int64 with two's-complement wrap-around."""
    value &= _TWO64 - 1
    return value - _TWO64 if value > INT64_MAX else value


def float_to_int64(value: float) -> int:
    """Go's ``int64(f)`` on amd64: truncation; NaN and out-of-range give the minimum int64."""
    if math.isnan(value) or not (-(2.0**63) <= value < 2.0**63):
        return INT64_MIN
    return int(value)


def _digit(char: str) -> int:
    if "0" <= char <= "9":
        return ord(char) - 48
    if "a" <= char <= "z":
        return ord(char) - 87
    if "A" <= char <= "Z":
        return ord(char) - 55
    return 99


def _underscores_ok(text: str) -> bool:
    """Go's ``underscoreOK``: each ``_`` sits between digits (or after a base prefix)."""
    saw = "^"
    if text[:1] in ("+", "-"):
        text = text[1:]
    hexadecimal = False
    start = 0
    if len(text) >= 2 and text[0] == "0" and text[1].lower() in "box":
        start = 2
        saw = "0"
        hexadecimal = text[1].lower() == "x"
    for char in text[start:]:
        if "0" <= char <= "9" or (hexadecimal and "a" <= char.lower() <= "f"):
            saw = "0"
            continue
        if char == "_":
            if saw != "0":
                return False
            saw = "_"
            continue
        if saw == "_":
            return False
        saw = "!"
    return saw != "_"


def parse_go_int(text: str, base: int = 0) -> int | None:
    """Go's ``strconv.ParseInt(text, base, 64)``; None where Go returns an error.

    Base 0 reads the prefix: ``0x`` hex, ``0o`` or a bare leading ``0`` octal, ``0b`` binary,
    and allows ``_`` between digits.
    """
    if not text:
        return None
    body = text
    negative = False
    if body[0] in "+-":
        negative = body[0] == "-"
        body = body[1:]
    if not body:
        return None
    unsigned = body
    if base == 0:
        base = 10
        if body[0] == "0":
            prefix = body[1:2].lower()
            if len(body) >= 3 and prefix in ("b", "o", "x"):
                base = {"b": 2, "o": 8, "x": 16}[prefix]
                body = body[2:]
            else:
                base = 8
                body = body[1:]
        allow_underscores = True
    else:
        allow_underscores = False
    value = 0
    underscores = False
    for char in body:
        if char == "_" and allow_underscores:
            underscores = True
            continue
        digit = _digit(char)
        if digit >= base:
            return None
        value = value * base + digit
    if underscores and not _underscores_ok(unsigned):
        return None
    if negative:
        value = -value
    if not INT64_MIN <= value <= INT64_MAX:
        return None
    return value


_DEC: Final = r"[0-9](?:_?[0-9])*"
_HEX: Final = r"[0-9a-fA-F](?:_?[0-9a-fA-F])*"
_DECIMAL_FLOAT: Final = re.compile(
    rf"[+-]?(?:{_DEC}(?:\.(?:{_DEC})?)?|\.{_DEC})(?:[eE][+-]?{_DEC})?", re.ASCII
)
_HEX_FLOAT: Final = re.compile(
    rf"[+-]?0[xX](?:_?{_HEX}(?:\.(?:{_HEX})?)?|\.{_HEX})[pP][+-]?{_DEC}", re.ASCII
)


def parse_go_float(text: str) -> float | None:
    """Go's ``strconv.ParseFloat(text, 64)``; None where Go returns an error (syntax, or a
    value out of the float64 range)."""
    lowered = text.lower()
    unsigned = lowered[1:] if lowered[:1] in ("+", "-") else lowered
    if unsigned in ("inf", "infinity"):
        return -math.inf if lowered.startswith("-") else math.inf
    if lowered == "nan":
        return math.nan
    if _DECIMAL_FLOAT.fullmatch(text):
        value = float(text.replace("_", ""))
    elif _HEX_FLOAT.fullmatch(text):
        try:
            value = float.fromhex(text.replace("_", ""))
        except OverflowError:
            return None
    else:
        return None
    return None if math.isinf(value) else value


_STRING_NUMBER: Final = re.compile(r"([-+]?[0-9]*)(\.[0-9]*)?", re.ASCII)


def _trim_decimal(text: str) -> str:
    """cast's ``trimDecimal``: ``"5.70"`` → ``"5"``, ``".5"`` → ``"0"``."""
    if "." not in text:
        return text
    found = _STRING_NUMBER.fullmatch(text)
    if found is None:
        return text
    whole = found.group(1)
    if whole in ("-", "+"):
        return whole + "0"
    return whole or "0"


def to_int64(value: Any) -> int:
    """spf13/cast ``ToInt64``: 0 for nil, anything unconvertible and unparsable strings."""
    if value is None:
        return 0
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return wrap_int64(value)
    if isinstance(value, float):
        return float_to_int64(value)
    if isinstance(value, str):
        if not value:
            return 0
        parsed = parse_go_int(_trim_decimal(value))
        return 0 if parsed is None else parsed
    return 0


def to_float64(value: Any) -> float:
    """spf13/cast ``ToFloat64``: 0 for nil, anything unconvertible and unparsable strings."""
    if value is None:
        return 0.0
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int):
        return float(wrap_int64(value))
    if isinstance(value, float):
        return value
    if isinstance(value, str):
        if not value:
            return 0.0
        parsed = parse_go_float(value)
        return 0.0 if parsed is None else parsed
    return 0.0


def go_div(left: int, right: int) -> int:
    """Go's int64 ``/``: truncates toward zero; division by zero is a runtime panic."""
    if right == 0:
        raise FunctionError("runtime error: integer divide by zero")
    quotient = abs(left) // abs(right)
    return wrap_int64(quotient if (left < 0) == (right < 0) else -quotient)


def go_mod(left: int, right: int) -> int:
    """Go's int64 ``%``: the result takes the sign of the dividend."""
    if right == 0:
        raise FunctionError("runtime error: integer divide by zero")
    remainder = abs(left) % abs(right)
    return -remainder if left < 0 else remainder


def fdiv(left: float, right: float) -> float:
    """IEEE-754 division (Go never raises: x/0 is ±Inf, 0/0 is NaN)."""
    if right != 0:
        return left / right
    if left == 0 or math.isnan(left):
        return math.nan
    return math.copysign(math.inf, left) * math.copysign(1.0, right)


def go_floor(value: float) -> float:
    """Go's ``math.Floor`` (NaN, ±Inf and ±0 returned as they are)."""
    if not math.isfinite(value) or value == 0:
        return value
    return float(math.floor(value))


def go_ceil(value: float) -> float:
    """Go's ``math.Ceil`` (``Ceil(-0.5)`` is ``-0``)."""
    if not math.isfinite(value) or value == 0:
        return value
    result = float(math.ceil(value))
    return math.copysign(0.0, value) if result == 0 else result


def _modf_fraction(value: float) -> float:
    """The fractional part of Go's ``math.Modf`` (NaN for ±Inf, same sign as ``value``)."""
    if math.isinf(value):
        return math.nan
    return math.modf(value)[0]


def _pow10(places: float) -> float:
    try:
        power: float = 10.0**places
    except OverflowError:
        return math.inf
    return power


def go_round(value: float, places: int, round_on: float) -> float:
    """Sprig's ``round``: scale by 10**places, take the ceiling when the fraction is at
    least ``round_on`` (else the floor), scale back. Negative values round as Sprig does:
    the fraction is negative, so ``round -1.2 0`` is -2."""
    power = _pow10(float(places))
    digit = power * value
    rounded = go_ceil(digit) if _modf_fraction(digit) >= round_on else go_floor(digit)
    return fdiv(rounded, power)


def go_max(values: Iterable[float]) -> float:
    """Go's ``math.Max`` folded over ``values``: +Inf wins, then NaN, and +0 beats -0."""
    result: float | None = None
    for value in values:
        if result is None:
            result = value
        elif math.inf in (result, value):
            result = math.inf
        elif math.isnan(result) or math.isnan(value):
            result = math.nan
        elif result == 0 and value == 0:
            result = 0.0 if math.copysign(1, result) > 0 or math.copysign(1, value) > 0 else -0.0
        elif value > result:
            result = value
    return 0.0 if result is None else result


def go_min(values: Iterable[float]) -> float:
    """Go's ``math.Min`` folded over ``values``: -Inf wins, then NaN, and -0 beats +0."""
    result: float | None = None
    for value in values:
        if result is None:
            result = value
        elif -math.inf in (result, value):
            result = -math.inf
        elif math.isnan(result) or math.isnan(value):
            result = math.nan
        elif result == 0 and value == 0:
            result = -0.0 if math.copysign(1, result) < 0 or math.copysign(1, value) < 0 else 0.0
        elif value < result:
            result = value
    return 0.0 if result is None else result


_CONTEXT: Final = decimal.Context(
    prec=2000,
    rounding=decimal.ROUND_HALF_EVEN,
    Emax=999_999,
    Emin=-999_999,
    traps=[decimal.InvalidOperation, decimal.DivisionByZero, decimal.Overflow],
)
_DIVISION_QUANTUM: Final = decimal.Decimal("1e-16")

DecimalOp = Callable[[decimal.Decimal, decimal.Decimal], decimal.Decimal]


def _as_decimal(value: Any) -> decimal.Decimal:
    number = to_float64(value)
    if not math.isfinite(number):
        raise FunctionError(f"cannot create a Decimal from {number!r}")
    return decimal.Decimal(repr(number))


def decimal_add(left: decimal.Decimal, right: decimal.Decimal) -> decimal.Decimal:
    """Exact sum."""
    return _CONTEXT.add(left, right)


def decimal_sub(left: decimal.Decimal, right: decimal.Decimal) -> decimal.Decimal:
    """Exact difference."""
    return _CONTEXT.subtract(left, right)


def decimal_mul(left: decimal.Decimal, right: decimal.Decimal) -> decimal.Decimal:
    """Exact product."""
    return _CONTEXT.multiply(left, right)


def decimal_div(left: decimal.Decimal, right: decimal.Decimal) -> decimal.Decimal:
    """Quotient to 16 decimal places, half away from zero (shopspring ``Div``)."""
    if right.is_zero():
        raise FunctionError("decimal division by zero")
    return _CONTEXT.divide(left, right).quantize(
        _DIVISION_QUANTUM, rounding=decimal.ROUND_HALF_UP, context=_CONTEXT
    )


def decimal_op(first: Any, rest: Iterable[Any], operation: DecimalOp) -> float:
    """Sprig's ``execDecimalOp``: fold ``operation`` over the decimals of the arguments."""
    try:
        result = _as_decimal(first)
        for value in rest:
            result = operation(result, _as_decimal(value))
    except decimal.DecimalException as exc:
        raise FunctionError(f"decimal arithmetic failed: {type(exc).__name__}") from None
    number = float(result)
    return 0.0 if number == 0 else number


def until_step(start: int, stop: int, step: int) -> list[int]:
    """Sprig's ``untilStep``: like Python's ``range`` but empty for a step pointing away
    from ``stop``; more than :data:`MAX_LIST` elements is an error."""
    if stop < start:
        if step >= 0:
            return []
        count = _ceil_div(start - stop, -step)
    else:
        if step <= 0:
            return []
        count = _ceil_div(stop - start, step)
    if count > MAX_LIST:
        raise FunctionError(f"range of {count} elements is longer than {MAX_LIST}")
    return list(range(start, stop, step))


def _ceil_div(numerator: int, denominator: int) -> int:
    return -(-numerator // denominator)


def seq(params: list[int]) -> str:
    """Sprig's ``seq`` (like the shell's): 1 to 3 integers, space-separated output."""
    if len(params) == 1:
        start, end = 1, params[0]
        step = -1 if end < start else 1
        return _joined(until_step(start, end + step, step))
    if len(params) == 2:
        start, end = params
        step = -1 if end < start else 1
        return _joined(until_step(start, end + step, step))
    if len(params) == 3:
        start, step, end = params
        increment = 1
        if end < start:
            increment = -1
            if step > 0:
                return ""
        return _joined(until_step(start, end + increment, step))
    return ""


def _joined(numbers: list[int]) -> str:
    return " ".join(str(number) for number in numbers)
