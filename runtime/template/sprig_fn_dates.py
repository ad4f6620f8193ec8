"""Sprig's date functions over RFC 3339 strings (see :mod:`.sprig`)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, Final

from bobravoz.runtime.template.errors import FunctionError
from bobravoz.runtime.template.sprig_args import (
    INT64_MAX,
    INT64_MIN,
    string_arg,
)
from bobravoz.runtime.template.sprig_registry import Registry
from bobravoz.runtime.template.sprig_time import (
    RFC3339,
    Instant,
    format_time,
    load_zone,
    now,
    parse_duration,
    parse_time,
    to_rfc3339,
)
from bobravoz.runtime.template.values import go_type

_REGISTRY = Registry()
_register = _REGISTRY.register
FUNCTIONS: Final[Mapping[str, Callable[..., Any]]] = _REGISTRY.functions
"""This module's functions by template name."""


# --- dates ----------------------------------------------------------------------------------


_UNIX_LIMIT: Final = float(INT64_MAX)


def _instant(value: Any, *, default_now: bool) -> Instant:
    """A time argument: an RFC 3339 string or Unix seconds; anything else is the current
    time (``default_now``, as Sprig's ``date``) or an error (where Go wants a time.Time)."""
    if isinstance(value, int) and not isinstance(value, bool):
        if INT64_MIN <= value <= INT64_MAX:
            return Instant(value)
    elif isinstance(value, float):
        if math.isfinite(value) and abs(value) < _UNIX_LIMIT:
            whole = math.floor(value)
            return Instant(int(whole)).plus_nanos(round((value - whole) * 1e9))
    elif isinstance(value, str):
        try:
            return parse_time(RFC3339, value)
        except FunctionError:
            if not default_now:
                raise
    if default_now:
        return now()
    raise FunctionError(f"wrong type for value; expected time.Time; got {go_type(value)}")


@_register("now")
def _now() -> str:
    """The current time (RFC 3339 with nanoseconds, UTC)."""
    return to_rfc3339(now())


@_register("date")
def _date(layout: Any, value: Any) -> str:
    """``date LAYOUT TIME``: TIME formatted with a Go layout (``2006-01-02``), in UTC."""
    return format_time(string_arg(layout), _instant(value, default_now=True))


@_register("dateInZone", "date_in_zone")
def _date_in_zone(layout: Any, value: Any, zone: Any) -> str:
    """``dateInZone LAYOUT TIME ZONE`` (an unknown zone is UTC)."""
    pattern, where = string_arg(layout), string_arg(zone)
    return format_time(pattern, _instant(value, default_now=True), load_zone(where))


@_register("htmlDate")
def _html_date(value: Any) -> str:
    """``htmlDate TIME``: ``2006-01-02``."""
    return format_time("2006-01-02", _instant(value, default_now=True))


@_register("htmlDateInZone")
def _html_date_in_zone(value: Any, zone: Any) -> str:
    """``htmlDateInZone TIME ZONE``."""
    return format_time("2006-01-02", _instant(value, default_now=True), load_zone(string_arg(zone)))


@_register("toDate")
def _to_date(layout: Any, text: Any) -> str:
    """``toDate LAYOUT TEXT``: the time TEXT means; year 1 when it does not parse."""
    pattern, value = string_arg(layout), string_arg(text)
    try:
        return to_rfc3339(parse_time(pattern, value))
    except FunctionError:
        return "0001-01-01T00:00:00Z"


@_register("mustToDate")
def _must_to_date(layout: Any, text: Any) -> str:
    """``mustToDate LAYOUT TEXT``; an error when TEXT does not parse."""
    return to_rfc3339(parse_time(string_arg(layout), string_arg(text)))


@_register("unixEpoch")
def _unix_epoch(value: Any) -> str:
    """Seconds since the Unix epoch, as a string."""
    return str(_instant(value, default_now=False).seconds)


@_register("dateModify", "date_modify")
def _date_modify(change: Any, value: Any) -> str:
    """``dateModify "-1.5h" TIME``; TIME unchanged when the duration is invalid."""
    duration, instant = string_arg(change), _instant(value, default_now=False)
    try:
        return to_rfc3339(instant.plus_nanos(parse_duration(duration)))
    except FunctionError:
        return to_rfc3339(instant)


@_register("mustDateModify", "must_date_modify")
def _must_date_modify(change: Any, value: Any) -> str:
    """``mustDateModify DURATION TIME``; an error when the duration is invalid."""
    duration, instant = string_arg(change), _instant(value, default_now=False)
    return to_rfc3339(instant.plus_nanos(parse_duration(duration)))
