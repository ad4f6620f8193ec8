"""Go's ``time`` formatting, parsing and durations, for Sprig's date functions.

A time crosses function boundaries as an RFC 3339 string in UTC with nanoseconds
(``2006-01-02T15:04:05.999999999Z``, Go's RFC3339Nano): JSON-like values have no time type.

- :func:`format_time`: Go's ``Time.Format`` with Go layouts (``2006-01-02T15:04:05Z07:00``,
  ``Jan _2``, ``.000``, ``MST``, ``002``...).
- :func:`parse_time`: Go's ``time.Parse`` for the same layouts (a zone abbreviation other
  than UTC parses as offset 0, as Go does for an abbreviation the local zone does not know).
- :func:`parse_duration`: Go's ``time.ParseDuration``.
- :func:`load_zone`: ``UTC``, ``Local`` (this process runs in UTC) and ``""`` are UTC; other
  names come from the system time zone database; an unknown name is UTC, as Sprig falls back.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final, Protocol
from zoneinfo import ZoneInfo

from bobravoz.runtime.template.errors import FunctionError

_NANOS: Final = 1_000_000_000
_DAY: Final = 86_400
_LONG_MONTHS: Final = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
_SHORT_MONTHS: Final = tuple(name[:3] for name in _LONG_MONTHS)
_LONG_DAYS: Final = ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")
_SHORT_DAYS: Final = tuple(name[:3] for name in _LONG_DAYS)
_DAYS_BEFORE: Final = (0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334, 365)

RFC3339: Final = "2006-01-02T15:04:05Z07:00"
RFC3339_NANO: Final = "2006-01-02T15:04:05.999999999Z07:00"


@dataclass(frozen=True, slots=True)
class Instant:
    """A point in time: whole seconds since the Unix epoch and nanoseconds (0..1e9-1)."""

    seconds: int
    nanos: int = 0

    def plus_nanos(self, nanos: int) -> Instant:
        """This instant moved by ``nanos`` nanoseconds."""
        total = self.seconds * _NANOS + self.nanos + nanos
        return Instant(*divmod(total, _NANOS))


def now() -> Instant:
    """The current time."""
    return Instant(*divmod(time.time_ns(), _NANOS))


class Zone(Protocol):
    """A time zone: the UTC offset in seconds and the abbreviation in force at an instant."""

    def lookup(self, seconds: int) -> tuple[int, str]:
        """Offset and abbreviation at ``seconds`` since the epoch."""
        ...


@dataclass(frozen=True, slots=True)
class FixedZone:
    """A zone with one offset (UTC, or a parsed ``+02:00``)."""

    offset: int
    name: str

    def lookup(self, seconds: int) -> tuple[int, str]:
        """Always the same offset and name."""
        return self.offset, self.name


UTC_ZONE: Final = FixedZone(0, "UTC")
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_FIRST: Final = int((datetime(1, 1, 2, tzinfo=UTC) - _EPOCH).total_seconds())
_LAST: Final = int((datetime(9999, 12, 30, tzinfo=UTC) - _EPOCH).total_seconds())


@dataclass(frozen=True, slots=True)
class _DatabaseZone:
    zone: ZoneInfo

    def lookup(self, seconds: int) -> tuple[int, str]:
        if not _FIRST <= seconds <= _LAST:
            return 0, "UTC"
        local = (_EPOCH + timedelta(seconds=seconds)).astimezone(self.zone)
        offset = local.utcoffset()
        return (int(offset.total_seconds()) if offset else 0), local.tzname() or ""


def load_zone(name: str) -> Zone:
    """Go's ``time.LoadLocation``, with Sprig's fallback to UTC for an unknown name."""
    if name in ("", "UTC", "Local"):
        return UTC_ZONE
    try:
        return _DatabaseZone(ZoneInfo(name))
    except (KeyError, ValueError, OSError):
        return UTC_ZONE


# --- calendar -------------------------------------------------------------------------------


def _civil(days: int) -> tuple[int, int, int]:
    """(year, month, day) of ``days`` since 1970-01-01 in the proleptic Gregorian calendar."""
    shifted = days + 719_468
    era = shifted // 146_097
    day_of_era = shifted - era * 146_097
    year_of_era = (
        day_of_era - day_of_era // 1460 + day_of_era // 36_524 - day_of_era // 146_096
    ) // 365
    day_of_year = day_of_era - (365 * year_of_era + year_of_era // 4 - year_of_era // 100)
    month_index = (5 * day_of_year + 2) // 153
    day = day_of_year - (153 * month_index + 2) // 5 + 1
    month = month_index + 3 if month_index < 10 else month_index - 9
    return year_of_era + era * 400 + (month <= 2), month, day


def _days(year: int, month: int, day: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date."""
    year -= month <= 2
    era = year // 400
    year_of_era = year - era * 400
    day_of_year = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    return era * 146_097 + day_of_era - 719_468


def _is_leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


def _days_in(month: int, year: int) -> int:
    if month == 2 and _is_leap(year):
        return 29
    return _DAYS_BEFORE[month] - _DAYS_BEFORE[month - 1]


@dataclass(frozen=True, slots=True)
class _Fields:
    year: int
    month: int
    day: int
    hour: int
    minute: int
    second: int
    nanos: int
    weekday: int
    yday: int
    offset: int
    zone_name: str


def _fields(instant: Instant, zone: Zone) -> _Fields:
    offset, name = zone.lookup(instant.seconds)
    days, second_of_day = divmod(instant.seconds + offset, _DAY)
    year, month, day = _civil(days)
    return _Fields(
        year=year,
        month=month,
        day=day,
        hour=second_of_day // 3600,
        minute=second_of_day // 60 % 60,
        second=second_of_day % 60,
        nanos=instant.nanos,
        weekday=(days + 4) % 7,
        yday=days - _days(year, 1, 1) + 1,
        offset=offset,
        zone_name=name,
    )


# --- layouts --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Chunk:
    """One element of a Go layout: ``kind`` names it; fractions carry digits and separator."""

    kind: str
    digits: int = 0
    separator: str = "."


_ZERO_PREFIXED: Final = ("zero_month", "zero_day", "zero_hour12", "zero_minute", "zero_second")
_NUMERIC_ZONES: Final = (
    ("-070000", "num_seconds_tz"),
    ("-07:00:00", "num_colon_seconds_tz"),
    ("-0700", "num_tz"),
    ("-07:00", "num_colon_tz"),
    ("-07", "num_short_tz"),
)
_ISO_ZONES: Final = (
    ("Z070000", "iso_seconds_tz"),
    ("Z07:00:00", "iso_colon_seconds_tz"),
    ("Z0700", "iso_tz"),
    ("Z07:00", "iso_colon_tz"),
    ("Z07", "iso_short_tz"),
)


def _starts_lower(text: str) -> bool:
    return bool(text) and "a" <= text[0] <= "z"


def _chunk_at(layout: str, index: int) -> tuple[_Chunk, int] | None:
    """Go's ``nextStdChunk`` at ``index``: the element starting there and its length."""
    rest = layout[index:]
    char = rest[0]
    if char == "J" and rest.startswith("Jan"):
        if rest.startswith("January"):
            return _Chunk("long_month"), 7
        if not _starts_lower(rest[3:]):
            return _Chunk("month"), 3
    elif char == "M":
        if rest.startswith("Mon"):
            if rest.startswith("Monday"):
                return _Chunk("long_weekday"), 6
            if not _starts_lower(rest[3:]):
                return _Chunk("weekday"), 3
        if rest.startswith("MST"):
            return _Chunk("tz"), 3
    elif char == "0":
        if len(rest) >= 2 and "1" <= rest[1] <= "6":
            kinds = (*_ZERO_PREFIXED, "year")
            return _Chunk(kinds[int(rest[1]) - 1]), 2
        if rest.startswith("002"):
            return _Chunk("zero_yday"), 3
    elif char == "1":
        if rest.startswith("15"):
            return _Chunk("hour"), 2
        return _Chunk("num_month"), 1
    elif char == "2":
        if rest.startswith("2006"):
            return _Chunk("long_year"), 4
        return _Chunk("day"), 1
    elif char == "_":
        if rest.startswith("_2"):
            if rest.startswith("_2006"):
                return None  # a literal "_" followed by the long year
            return _Chunk("under_day"), 2
        if rest.startswith("__2"):
            return _Chunk("under_yday"), 3
    elif char in "345":
        return _Chunk({"3": "hour12", "4": "minute", "5": "second"}[char]), 1
    elif char == "P" and rest.startswith("PM"):
        return _Chunk("PM"), 2
    elif char == "p" and rest.startswith("pm"):
        return _Chunk("pm"), 2
    elif char == "-":
        for text, kind in _NUMERIC_ZONES:
            if rest.startswith(text):
                return _Chunk(kind), len(text)
    elif char == "Z":
        for text, kind in _ISO_ZONES:
            if rest.startswith(text):
                return _Chunk(kind), len(text)
    elif char in ".," and len(rest) >= 2 and rest[1] in "09":
        digit = rest[1]
        end = 1
        while end < len(rest) and rest[end] == digit:
            end += 1
        if not (end < len(rest) and rest[end].isascii() and rest[end].isdigit()):
            kind = "frac0" if digit == "0" else "frac9"
            return _Chunk(kind, end - 1, char), end
    return None


def _split_layout(layout: str) -> list[str | _Chunk]:
    """The layout as literal texts and elements, in order."""
    parts: list[str | _Chunk] = []
    literal_start = index = 0
    while index < len(layout):
        found = _chunk_at(layout, index)
        if found is None:
            index += 1
            continue
        chunk, length = found
        if literal_start < index:
            parts.append(layout[literal_start:index])
        parts.append(chunk)
        index += length
        literal_start = index
    if literal_start < len(layout):
        parts.append(layout[literal_start:])
    return parts


def _pad(value: int, width: int) -> str:
    """Go's ``appendInt``: a sign, then at least ``width`` digits."""
    if value < 0:
        return "-" + str(-value).rjust(width, "0")
    return str(value).rjust(width, "0")


def _long_year(year: int) -> str:
    if year < 0:
        return "-" + str(-year).rjust(4, "0")
    return str(year).rjust(4, "0")


def _zone_text(kind: str, offset: int) -> str:
    if offset == 0 and kind.startswith("iso"):
        return "Z"
    minutes = abs(offset) // 60
    text = ("-" if offset < 0 else "+") + _pad(minutes // 60, 2)
    if kind in ("iso_colon_tz", "num_colon_tz", "iso_colon_seconds_tz", "num_colon_seconds_tz"):
        text += ":"
    if kind not in ("num_short_tz", "iso_short_tz"):
        text += _pad(minutes % 60, 2)
    if kind in ("iso_seconds_tz", "num_seconds_tz", "num_colon_seconds_tz", "iso_colon_seconds_tz"):
        if "colon" in kind:
            text += ":"
        text += _pad(abs(offset) % 60, 2)
    return text


def _fraction(chunk: _Chunk, nanos: int) -> str:
    if chunk.kind == "frac9" and (chunk.digits == 0 or nanos == 0):
        return ""
    digits = str(nanos).rjust(9, "0")[: min(chunk.digits, 9)]
    if chunk.kind == "frac9":
        digits = digits.rstrip("0")
        if not digits:
            return ""
    return chunk.separator + digits


def _format_chunk(chunk: _Chunk, fields: _Fields) -> str:
    kind = chunk.kind
    if kind == "year":
        return _pad(fields.year % 100 if fields.year >= 0 else -(-fields.year % 100), 2)
    if kind == "long_year":
        return _long_year(fields.year)
    if kind in ("month", "long_month"):
        name = _LONG_MONTHS[fields.month - 1]
        return name if kind == "long_month" else name[:3]
    if kind in ("weekday", "long_weekday"):
        name = _LONG_DAYS[fields.weekday]
        return name if kind == "long_weekday" else name[:3]
    hour12 = fields.hour % 12 or 12
    numbers = {
        "num_month": (fields.month, 0),
        "zero_month": (fields.month, 2),
        "day": (fields.day, 0),
        "zero_day": (fields.day, 2),
        "zero_yday": (fields.yday, 3),
        "hour": (fields.hour, 2),
        "hour12": (hour12, 0),
        "zero_hour12": (hour12, 2),
        "minute": (fields.minute, 0),
        "zero_minute": (fields.minute, 2),
        "second": (fields.second, 0),
        "zero_second": (fields.second, 2),
    }
    if kind in numbers:
        value, width = numbers[kind]
        return _pad(value, width)
    if kind == "under_day":
        return str(fields.day).rjust(2)
    if kind == "under_yday":
        return str(fields.yday).rjust(3)
    if kind in ("PM", "pm"):
        text = "PM" if fields.hour >= 12 else "AM"
        return text if kind == "PM" else text.lower()
    if kind == "tz":
        if fields.zone_name:
            return fields.zone_name
        minutes = abs(fields.offset) // 60
        return ("-" if fields.offset < 0 else "+") + _pad(minutes // 60, 2) + _pad(minutes % 60, 2)
    if kind in ("frac0", "frac9"):
        return _fraction(chunk, fields.nanos)
    return _zone_text(kind, fields.offset)


def format_time(layout: str, instant: Instant, zone: Zone = UTC_ZONE) -> str:
    """Go's ``Time.Format(layout)`` of ``instant`` shown in ``zone``."""
    fields = _fields(instant, zone)
    return "".join(
        part if isinstance(part, str) else _format_chunk(part, fields)
        for part in _split_layout(layout)
    )


def to_rfc3339(instant: Instant) -> str:
    """The string form of a time passed between functions (RFC3339Nano, UTC)."""
    return format_time(RFC3339_NANO, instant)


# --- parsing --------------------------------------------------------------------------------


class _Bad(Exception):
    """The value does not match the layout element being parsed."""


def _is_digit(text: str, index: int) -> bool:
    return index < len(text) and "0" <= text[index] <= "9"


def _fraction_length(text: str) -> int:
    """Length of the fraction ``text`` starts with (``.`` or ``,`` and digits), 0 if none."""
    if len(text) < 2 or text[0] not in ".," or not _is_digit(text, 1):
        return 0
    length = 2
    while _is_digit(text, length):
        length += 1
    return length


def _getnum(text: str, fixed: bool) -> tuple[int, str]:
    if not _is_digit(text, 0):
        raise _Bad
    if not _is_digit(text, 1):
        if fixed:
            raise _Bad
        return int(text[0]), text[1:]
    return int(text[:2]), text[2:]


def _getnum3(text: str, fixed: bool) -> tuple[int, str]:
    count = 0
    while count < 3 and _is_digit(text, count):
        count += 1
    if count == 0 or (fixed and count != 3):
        raise _Bad
    return int(text[:count]), text[count:]


def _atoi(text: str) -> int:
    """The time package's ``atoi``: an optional sign then only digits (none is 0)."""
    negative = text[:1] == "-"
    if text[:1] in ("-", "+"):
        text = text[1:]
    if text and not (text.isascii() and text.isdigit()):
        raise _Bad
    value = int(text) if text else 0
    return -value if negative else value


def _lookup(names: tuple[str, ...], text: str) -> tuple[int, str]:
    for index, name in enumerate(names):
        if len(text) >= len(name) and text[: len(name)].lower() == name.lower():
            return index, text[len(name) :]
    raise _Bad


def _skip(text: str, prefix: str) -> str:
    """Go's ``skip``: remove ``prefix`` from ``text``, runs of spaces matching runs of spaces."""
    while prefix:
        if prefix[0] == " ":
            if text and text[0] != " ":
                raise _Bad
            prefix = prefix.lstrip(" ")
            text = text.lstrip(" ")
            continue
        if not text or text[0] != prefix[0]:
            raise _Bad
        prefix, text = prefix[1:], text[1:]
    return text


def _nanoseconds(text: str, length: int) -> int:
    if text[0] not in ".,":
        raise _Bad
    length = min(length, 10)
    value = _atoi(text[1:length])
    if value < 0:
        raise _Bad
    scale: int = 10 ** (10 - length)
    return value * scale


def _zone_name_length(text: str) -> int:
    """Go's ``parseTimeZone``: how many characters of ``text`` name a zone (0: none)."""
    if len(text) < 3:
        return 0
    if text[:4] in ("ChST", "MeST"):
        return 4
    if text.startswith("GMT"):
        return 3 + _signed_offset_length(text[3:], hours_only=True)
    if text[0] in "+-":
        return _signed_offset_length(text, hours_only=False)
    upper = 0
    while upper < 6 and upper < len(text) and "A" <= text[upper] <= "Z":
        upper += 1
    if upper == 3:
        return 3
    if upper == 4 and (text[3] == "T" or text[:4] == "WITA"):
        return 4
    if upper == 5 and text[4] == "T":
        return 5
    return 0


def _signed_offset_length(text: str, *, hours_only: bool) -> int:
    """Go's ``parseSignedOffset`` (``parseGMT``): ``+h``/``-hh`` offsets up to 23 hours."""
    if not text or text[0] not in "+-":
        return 0
    digits = 1
    while digits < len(text) and "0" <= text[digits] <= "9":
        digits += 1
    if digits == 1:
        return 0
    value = int(text[1:digits])
    if value > 23 or (hours_only and value > 12):
        return 0
    return digits


@dataclass
class _Parsed:
    year: int = 0
    month: int = -1
    day: int = -1
    yday: int = -1
    hour: int = 0
    minute: int = 0
    second: int = 0
    nanos: int = 0
    pm: bool = False
    am: bool = False
    utc: bool = False
    offset: int | None = None
    zone_name: str = ""


def _parse_zone_offset(kind: str, text: str, parsed: _Parsed) -> str:
    if kind.startswith("iso") and text[:1] == "Z":
        parsed.utc = True
        return text[1:]
    seconds = "00"
    if kind in ("iso_colon_tz", "num_colon_tz"):
        if len(text) < 6 or text[3] != ":":
            raise _Bad
        sign, hours, minutes, text = text[0], text[1:3], text[4:6], text[6:]
    elif kind in ("num_short_tz", "iso_short_tz"):
        if len(text) < 3:
            raise _Bad
        sign, hours, minutes, text = text[0], text[1:3], "00", text[3:]
    elif kind in ("iso_colon_seconds_tz", "num_colon_seconds_tz"):
        if len(text) < 9 or text[3] != ":" or text[6] != ":":
            raise _Bad
        sign, hours, minutes, seconds, text = text[0], text[1:3], text[4:6], text[7:9], text[9:]
    elif kind in ("iso_seconds_tz", "num_seconds_tz"):
        if len(text) < 7:
            raise _Bad
        sign, hours, minutes, seconds, text = text[0], text[1:3], text[3:5], text[5:7], text[7:]
    else:
        if len(text) < 5:
            raise _Bad
        sign, hours, minutes, text = text[0], text[1:3], text[3:5], text[5:]
    hour_value = _getnum(hours, True)[0]
    minute_value = _getnum(minutes, True)[0]
    second_value = _getnum(seconds, True)[0]
    if hour_value > 24 or minute_value > 60 or second_value > 60:
        raise _Bad
    offset = (hour_value * 60 + minute_value) * 60 + second_value
    if sign == "-":
        offset = -offset
    elif sign != "+":
        raise _Bad
    parsed.offset = offset
    return text


def _next_is_fraction(parts: list[str | _Chunk], position: int) -> bool:
    """Whether the next layout element after ``position`` (literals skipped) is a fraction."""
    for part in parts[position + 1 :]:
        if isinstance(part, _Chunk):
            return part.kind in ("frac0", "frac9")
    return False


def _parse_chunk(
    chunk: _Chunk, text: str, parsed: _Parsed, parts: list[str | _Chunk], position: int
) -> str:
    kind = chunk.kind
    if kind == "year":
        if len(text) < 2:
            raise _Bad
        year = _atoi(text[:2])
        parsed.year = year + (1900 if year >= 69 else 2000)
        return text[2:]
    if kind == "long_year":
        if len(text) < 4 or not _is_digit(text, 0):
            raise _Bad
        parsed.year = _atoi(text[:4])
        return text[4:]
    if kind in ("month", "long_month"):
        month, text = _lookup(_LONG_MONTHS if kind == "long_month" else _SHORT_MONTHS, text)
        parsed.month = month + 1
        return text
    if kind in ("num_month", "zero_month"):
        parsed.month, text = _getnum(text, kind == "zero_month")
        if not 1 <= parsed.month <= 12:
            raise _Bad
        return text
    if kind in ("weekday", "long_weekday"):
        return _lookup(_LONG_DAYS if kind == "long_weekday" else _SHORT_DAYS, text)[1]
    if kind in ("day", "under_day", "zero_day"):
        if kind == "under_day" and text[:1] == " ":
            text = text[1:]
        parsed.day, text = _getnum(text, kind == "zero_day")
        return text
    if kind in ("under_yday", "zero_yday"):
        for _ in range(2):
            if kind == "under_yday" and text[:1] == " ":
                text = text[1:]
        parsed.yday, text = _getnum3(text, kind == "zero_yday")
        return text
    if kind == "hour":
        parsed.hour, text = _getnum(text, False)
        if parsed.hour >= 24:
            raise _Bad
        return text
    if kind in ("hour12", "zero_hour12"):
        parsed.hour, text = _getnum(text, kind == "zero_hour12")
        if parsed.hour > 12:
            raise _Bad
        return text
    if kind in ("minute", "zero_minute"):
        parsed.minute, text = _getnum(text, kind == "zero_minute")
        if parsed.minute >= 60:
            raise _Bad
        return text
    if kind in ("second", "zero_second"):
        parsed.second, text = _getnum(text, kind == "zero_second")
        if parsed.second >= 60:
            raise _Bad
        # A fraction in the value but not in the layout is read anyway.
        length = _fraction_length(text)
        if length == 0 or _next_is_fraction(parts, position):
            return text
        parsed.nanos = _nanoseconds(text, length)
        return text[length:]
    if kind in ("PM", "pm"):
        marker = text[:2]
        if len(text) < 2 or marker not in (("PM", "AM") if kind == "PM" else ("pm", "am")):
            raise _Bad
        parsed.pm = marker.upper() == "PM"
        parsed.am = not parsed.pm
        return text[2:]
    if kind == "tz":
        if text.startswith("UTC"):
            parsed.utc = True
            return text[3:]
        length = _zone_name_length(text)
        if length == 0:
            raise _Bad
        parsed.zone_name = text[:length]
        return text[length:]
    if kind == "frac0":
        length = 1 + chunk.digits
        if len(text) < length:
            raise _Bad
        parsed.nanos = _nanoseconds(text, length)
        return text[length:]
    if kind == "frac9":
        length = _fraction_length(text)
        if length == 0:
            return text
        parsed.nanos = _nanoseconds(text, length)
        return text[length:]
    return _parse_zone_offset(kind, text, parsed)


def _calendar_date(parsed: _Parsed) -> tuple[int, int]:
    """(month, day) from the parsed fields, resolving a day of the year."""
    month, day, yday = parsed.month, parsed.day, parsed.yday
    if yday < 0:
        return (1 if month < 0 else month), (1 if day < 0 else day)
    leap_month = 0
    leap_day = 0
    if _is_leap(parsed.year):
        if yday == 31 + 29:
            leap_month, leap_day = 2, 29
        elif yday > 31 + 29:
            yday -= 1
    if not 1 <= yday <= 365:
        raise FunctionError("day-of-year out of range")
    derived_month, derived_day = leap_month, leap_day
    if derived_month == 0:
        derived_month = (yday - 1) // 31 + 1
        if _DAYS_BEFORE[derived_month] < yday:
            derived_month += 1
        derived_day = yday - _DAYS_BEFORE[derived_month - 1]
    if month >= 0 and month != derived_month:
        raise FunctionError("day-of-year does not match month")
    if day >= 0 and day != derived_day:
        raise FunctionError("day-of-year does not match day")
    return derived_month, derived_day


def parse_time(layout: str, value: str) -> Instant:
    """Go's ``time.ParseInLocation(layout, value, UTC)``; raises FunctionError."""
    parts = _split_layout(layout)
    parsed = _Parsed()
    text = value
    for position, part in enumerate(parts):
        try:
            if isinstance(part, str):
                text = _skip(text, part)
            else:
                text = _parse_chunk(part, text, parsed, parts, position)
        except _Bad:
            shown = part if isinstance(part, str) else "element"
            raise FunctionError(
                f"parsing time {value!r} as {layout!r}: cannot parse {text!r} as {shown!r}"
            ) from None
    if text:
        raise FunctionError(f"parsing time {value!r}: extra text: {text!r}")
    hour = parsed.hour
    if parsed.pm and hour < 12:
        hour += 12
    elif parsed.am and hour == 12:
        hour = 0
    month, day = _calendar_date(parsed)
    if not 1 <= day <= _days_in(month, parsed.year):
        raise FunctionError(f"parsing time {value!r}: day out of range")
    seconds = (
        _days(parsed.year, month, day) * _DAY + hour * 3600 + parsed.minute * 60 + parsed.second
    )
    if parsed.offset is not None and not parsed.utc:
        seconds -= parsed.offset
    return Instant(seconds, parsed.nanos)


# --- durations ------------------------------------------------------------------------------

_UNITS: Final = {
    "ns": 1,
    "us": 1_000,
    "\u00b5s": 1_000,
    "\u03bcs": 1_000,
    "ms": 1_000_000,
    "s": _NANOS,
    "m": 60 * _NANOS,
    "h": 3600 * _NANOS,
}
_MAX_DURATION: Final = 1 << 63


def _leading_fraction(text: str) -> tuple[int, float, int]:
    """Go's ``leadingFraction``: (digits as an integer, 10**used digits, digits consumed);
    digits past what an int64 holds are consumed but ignored."""
    value, scale, count = 0, 1.0, 0
    overflow = False
    while _is_digit(text, count):
        digit = int(text[count])
        count += 1
        if overflow:
            continue
        if value > (_MAX_DURATION - 1) // 10 or value * 10 + digit > _MAX_DURATION:
            overflow = True
            continue
        value = value * 10 + digit
        scale *= 10
    return value, scale, count


def parse_duration(text: str) -> int:
    """Go's ``time.ParseDuration`` in nanoseconds (``"-1.5h"``, ``"1h10m10s"``, ``"300ms"``)."""
    original = text
    invalid = FunctionError(f"time: invalid duration {original!r}")
    negative = False
    if text[:1] in ("-", "+"):
        negative = text[0] == "-"
        text = text[1:]
    if text == "0":
        return 0
    if not text:
        raise invalid
    total = 0
    while text:
        if not (text[0] == "." or "0" <= text[0] <= "9"):
            raise invalid
        digits = 0
        while _is_digit(text, digits):
            digits += 1
        significant = text[:digits].lstrip("0")
        if len(significant) > 19 or int(significant or "0") > _MAX_DURATION:
            raise invalid
        whole = int(significant or "0")
        text = text[digits:]
        fraction, scale, fraction_digits = 0, 1.0, 0
        if text[:1] == ".":
            fraction, scale, fraction_digits = _leading_fraction(text[1:])
            text = text[1 + fraction_digits :]
        if digits == 0 and fraction_digits == 0:
            raise invalid
        unit_length = 0
        while unit_length < len(text) and not (
            text[unit_length] == "." or "0" <= text[unit_length] <= "9"
        ):
            unit_length += 1
        if unit_length == 0:
            raise FunctionError(f"time: missing unit in duration {original!r}")
        unit_name, text = text[:unit_length], text[unit_length:]
        unit = _UNITS.get(unit_name)
        if unit is None:
            raise FunctionError(f"time: unknown unit {unit_name!r} in duration {original!r}")
        if whole > _MAX_DURATION // unit:
            raise invalid
        value = whole * unit
        if fraction:
            value += int(float(fraction) * (float(unit) / scale))
            if value > _MAX_DURATION:
                raise invalid
        total += value
        if total > _MAX_DURATION:
            raise invalid
    if negative:
        return -total
    if total > _MAX_DURATION - 1:
        raise invalid
    return total
