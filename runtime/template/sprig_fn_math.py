"""Sprig's integer and float math and conversion functions (see :mod:`.sprig`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

from bobravoz.runtime.template.sprig_args import (
    float_arg,
    int_arg,
    string_arg,
)
from bobravoz.runtime.template.sprig_numbers import (
    decimal_add,
    decimal_div,
    decimal_mul,
    decimal_op,
    decimal_sub,
    go_ceil,
    go_div,
    go_floor,
    go_max,
    go_min,
    go_mod,
    go_round,
    parse_go_int,
    seq,
    to_float64,
    to_int64,
    until_step,
    wrap_int64,
)
from bobravoz.runtime.template.sprig_registry import Registry, strval

_REGISTRY = Registry()
_register = _REGISTRY.register
FUNCTIONS: Final[Mapping[str, Callable[..., Any]]] = _REGISTRY.functions
"""This module's functions by template name."""


# --- integer math ---------------------------------------------------------------------------


@_register("add")
def _add(*values: Any) -> int:
    """The int64 sum."""
    return wrap_int64(sum(to_int64(value) for value in values))


@_register("add1")
def _add1(value: Any) -> int:
    """VALUE + 1 as int64."""
    return wrap_int64(to_int64(value) + 1)


@_register("sub")
def _sub(left: Any, right: Any) -> int:
    """LEFT - RIGHT as int64."""
    return wrap_int64(to_int64(left) - to_int64(right))


@_register("div")
def _div(left: Any, right: Any) -> int:
    """Integer division truncating toward zero; by zero is an error."""
    return go_div(to_int64(left), to_int64(right))


@_register("mod")
def _mod(left: Any, right: Any) -> int:
    """Remainder with the sign of LEFT; by zero is an error."""
    return go_mod(to_int64(left), to_int64(right))


@_register("mul")
def _mul(first: Any, *rest: Any) -> int:
    """The int64 product."""
    product = to_int64(first)
    for value in rest:
        product = wrap_int64(product * to_int64(value))
    return product


@_register("max", "biggest")
def _max(first: Any, *rest: Any) -> int:
    """The largest, as int64."""
    return max(to_int64(value) for value in (first, *rest))


@_register("min")
def _min(first: Any, *rest: Any) -> int:
    """The smallest, as int64."""
    return min(to_int64(value) for value in (first, *rest))


@_register("floor")
def _floor(value: Any) -> float:
    """The greatest integer value not above VALUE, as a float."""
    return go_floor(to_float64(value))


@_register("ceil")
def _ceil(value: Any) -> float:
    """The least integer value not below VALUE, as a float."""
    return go_ceil(to_float64(value))


_ABSENT: Final = object()


@_register("round")
def _round(value: Any, places: Any, round_on: Any = _ABSENT) -> float:
    """``round VALUE PLACES [ROUND_ON=0.5]``."""
    digits = int_arg(places)
    threshold = 0.5 if round_on is _ABSENT else float_arg(round_on)
    return go_round(to_float64(value), digits, threshold)


@_register("int")
def _int(value: Any) -> int:
    """VALUE converted to an integer (0 when it cannot be)."""
    return to_int64(value)


@_register("int64")
def _int64(value: Any) -> int:
    """VALUE converted to an int64 (0 when it cannot be)."""
    return to_int64(value)


@_register("float64")
def _float64(value: Any) -> float:
    """VALUE converted to a float64 (0 when it cannot be)."""
    return to_float64(value)


@_register("atoi")
def _atoi(text: Any) -> int:
    """A decimal integer string as an integer (0 when it is not one)."""
    parsed = parse_go_int(string_arg(text), 10)
    return 0 if parsed is None else parsed


@_register("toDecimal")
def _to_decimal(value: Any) -> int:
    """An octal string (``"0777"``) as an integer (0 when it is not one)."""
    parsed = parse_go_int(strval(value), 8)
    return 0 if parsed is None else parsed


@_register("seq")
def _seq(*params: Any) -> str:
    """``seq [START [STEP]] END``: the integers, space-separated, like the shell's seq."""
    return seq([int_arg(param) for param in params])


@_register("until")
def _until(count: Any) -> list[int]:
    """``until N``: 0 up to N (exclusive), or down for a negative N."""
    stop = int_arg(count)
    return until_step(0, stop, -1 if stop < 0 else 1)


@_register("untilStep")
def _until_step(start: Any, stop: Any, step: Any) -> list[int]:
    """``untilStep START STOP STEP``."""
    return until_step(int_arg(start), int_arg(stop), int_arg(step))


# --- float math -----------------------------------------------------------------------------


@_register("addf")
def _addf(*values: Any) -> float:
    """The sum, in exact decimals."""
    return decimal_op(0.0, values, decimal_add)


@_register("add1f")
def _add1f(value: Any) -> float:
    """VALUE + 1, in exact decimals."""
    return decimal_op(value, [1], decimal_add)


@_register("subf")
def _subf(first: Any, *rest: Any) -> float:
    """FIRST minus each of REST, in exact decimals."""
    return decimal_op(first, rest, decimal_sub)


@_register("mulf")
def _mulf(first: Any, *rest: Any) -> float:
    """The product, in exact decimals."""
    return decimal_op(first, rest, decimal_mul)


@_register("divf")
def _divf(first: Any, *rest: Any) -> float:
    """FIRST divided by each of REST (16 decimal places); by zero is an error."""
    return decimal_op(first, rest, decimal_div)


@_register("maxf")
def _maxf(first: Any, *rest: Any) -> float:
    """The largest, as a float."""
    return go_max(to_float64(value) for value in (first, *rest))


@_register("minf")
def _minf(first: Any, *rest: Any) -> float:
    """The smallest, as a float."""
    return go_min(to_float64(value) for value in (first, *rest))
