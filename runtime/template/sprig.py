"""The safe subset of Sprig (Masterminds/sprig v3) for BubuStack templates.

``FUNCTIONS`` maps each function name to a Python callable taking the template arguments
positionally, in Sprig's order (the piped value is the last argument: ``{{ "a" | upper }}``
calls ``upper("a")``, ``{{ .x | default "none" }}`` calls ``default("none", x)``). Values are
JSON-like: None, bool, int, float, str, list, dict. A bad call (wrong number or Go type of
arguments, or what would be a Go error or panic) raises :class:`FunctionError`, never
another exception.

The functions live in ``sprig_fn_text`` (defaults, flow, strings, regexes), ``sprig_fn_math``,
``sprig_fn_collections`` (lists, dicts), ``sprig_fn_encoding`` (JSON, base64/32, hashes,
types) and ``sprig_fn_dates``; Go's semantics they rest on are in ``sprig_numbers`` (spf13/cast,
decimals), ``sprig_text``, ``sprig_data`` (empty, DeepEqual, mergo), ``sprig_json``,
``sprig_encoding``, ``sprig_regex`` (RE2) and ``sprig_time`` (Go layouts and durations).

As in Go, ``set``, ``unset``, ``merge`` and ``mergeOverwrite`` change their dict argument in
place (the ``{{ $_ := set $d "k" "v" }}`` idiom relies on it); a read-only Mapping is refused.

Left out because they are not safe or not deterministic: environment (``env``,
``expandenv``), files and paths of the host, network (``getHostByName``), crypto keys and
random values (``genPrivateKey``, ``randAlpha``..., ``shuffle``, ``randInt``), ``semver``,
``urlParse``/``urlJoin``, ``ago``, ``duration``, ``durationRound``. ``uuidv4`` and ``now``
are kept.

Deliberate differences from Go (each one documented where it is implemented):

- Go types: a JSON number is a float64 in Go and a Python int or float here. Int parameters
  (``trunc 5``, ``repeat``, ``until``...) also accept integral floats (Go refuses a float64
  there). ``typeOf`` of a list is always ``[]interface {}`` (Go's ``splitList`` gives
  ``[]string``), ``typeOf`` of a template integer is ``int`` (Go's ``add`` gives ``int64``).
- Times are RFC 3339 strings in UTC (``now``, ``toDate``, ``dateModify`` return one; the
  date functions accept one, or a number of Unix seconds, a float too). Go's ``date`` takes
  a ``time.Time`` or an integer and formats anything else (a string!) as the current time.
  ``Local`` is UTC. Zones other than UTC come from the system's time zone database.
- ``keys`` and ``values`` are in sorted key order (Go's map order is random).
- ``fromJson`` of invalid JSON is nil (Sprig's code; its documentation says "").
- Bounds: strings built longer than 1 MiB, ``until``/``untilStep``/``seq`` longer than
  10,000 elements, regex texts over 64 KiB and patterns over 4 KiB, values nested deeper
  than 256 levels or walks over a million values are errors (Go has no bounds).
- Regexes run on RE2 itself (Go's syntax and semantics, linear time); ``\\C`` is refused.
- ``initials`` and ``nospace`` work on characters (Go's goutils walks bytes and garbles
  non-ASCII text); byte-counting functions (``trunc``, ``substr``, ``abbrev``, ``wrap``) turn
  a character they cut in half into U+FFFD.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Final

from bobravoz.runtime.template import (
    sprig_fn_collections,
    sprig_fn_dates,
    sprig_fn_encoding,
    sprig_fn_math,
    sprig_fn_text,
)

__all__ = ["FUNCTIONS"]

_GROUPS: Final = (
    sprig_fn_text,
    sprig_fn_math,
    sprig_fn_collections,
    sprig_fn_encoding,
    sprig_fn_dates,
)


def _all_functions() -> dict[str, Callable[..., Any]]:
    table: dict[str, Callable[..., Any]] = {}
    for group in _GROUPS:
        for name, function in group.FUNCTIONS.items():
            if name in table:
                raise ValueError(f"Sprig function {name!r} defined twice")
            table[name] = function
    return dict(sorted(table.items()))


FUNCTIONS: Final[Mapping[str, Callable[..., Any]]] = MappingProxyType(_all_functions())
"""Every Sprig function of the safe subset, by template name."""
