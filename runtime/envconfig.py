"""Reading typed settings from environment variables, with errors naming the variable.

Durations use Go's syntax (``250ms``, ``10s``, ``1m30s``) because the Go transport's
environment contract does; a bare number means seconds.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final, final

_DURATION_PART: Final = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS: Final = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}


@final
class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the variable and the fix."""


def parse_duration(text: str) -> float:
    """Seconds in a Go duration string (``1m30s``) or a bare number of seconds.

    Raises ``ValueError`` for anything else, including negative values.
    """
    value = text.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        if not seconds >= 0:  # NaN too (trio's timeouts refuse it)
            raise ValueError(f"duration {text!r} is negative or not a number")
        return seconds
    position = 0
    total = 0.0
    for match in _DURATION_PART.finditer(value):
        if match.start() != position:
            break
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        position = match.end()
    if position != len(value) or not value:
        raise ValueError(f"{text!r} is not a duration like 250ms, 10s or 1m30s")
    return total


@final
class EnvReader:
    """Typed, validated lookups in one environment mapping."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def text(self, name: str, default: str | None = None) -> str:
        """The trimmed value of ``name``; a missing required variable is a ConfigError."""
        value = self._environ.get(name, "").strip()
        if value:
            return value
        if default is None:
            raise ConfigError(f"environment variable {name} is required")
        return default

    def optional(self, name: str) -> str | None:
        """The trimmed value of ``name`` or None when unset or blank."""
        value = self._environ.get(name, "").strip()
        return value or None

    def integer(
        self, name: str, default: int, *, minimum: int = 0, maximum: int = 2**31 - 1
    ) -> int:
        """An integer in ``minimum..maximum``; malformed values are a ConfigError."""
        raw = self.optional(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(f"{name}={raw!r} is not an integer") from None
        if not minimum <= value <= maximum:
            raise ConfigError(f"{name}={value} is outside {minimum}..{maximum}")
        return value

    def duration(self, name: str, default: float) -> float:
        """Seconds from a Go duration (``500ms``); malformed values are a ConfigError."""
        raw = self.optional(name)
        if raw is None:
            return default
        try:
            return parse_duration(raw)
        except ValueError as error:
            raise ConfigError(f"{name}: {error}") from None

    def flag(self, name: str, default: bool = False) -> bool:
        """A boolean: true/1/yes/y or false/0/no/n (case-insensitive)."""
        raw = self.optional(name)
        if raw is None:
            return default
        lowered = raw.lower()
        if lowered in {"true", "1", "yes", "y"}:
            return True
        if lowered in {"false", "0", "no", "n"}:
            return False
        raise ConfigError(f"{name}={raw!r} is not a boolean (true/false)")
