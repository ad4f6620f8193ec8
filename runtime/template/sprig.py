"""The safe subset of Sprig (Masterminds/sprig v3) for BubuStack templates.

``FUNCTIONS`` maps each function name to a Python callable taking the template arguments
positionally, in Sprig's order (the piped value is the last argument: ``{{ "a" | upper }}``
calls ``upper("a")``, ``{{ .x | default "none" }}`` calls ``default("none", x)``). Values are
JSON-like: None, bool, int, float, str, list, dict. A bad call (wrong number or Go type of
arguments, or what would be a Go error or panic) raises :class:`FunctionError`, never
another exception.

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

import base64
import hashlib
import inspect
import math
import uuid
import zlib
from collections.abc import Callable, Mapping, MutableMapping
from types import MappingProxyType
from typing import Any, Final, TypeVar

from bobravoz.runtime.template.errors import FunctionError
from bobravoz.runtime.template.gofmt import quote as go_quote
from bobravoz.runtime.template.sprig_args import (
    INT64_MAX,
    INT64_MIN,
    bool_arg,
    check_length,
    float_arg,
    from_utf8,
    go_kind_name,
    go_type_name,
    int_arg,
    is_list,
    is_map,
    list_kind_arg,
    map_arg,
    mutable_map_arg,
    string_arg,
    utf8,
)
from bobravoz.runtime.template.sprig_data import (
    EqualityKeys,
    deep_copy,
    deep_equal,
    is_empty,
    merge,
    printed_size,
)
from bobravoz.runtime.template.sprig_encoding import b32decode, b64decode
from bobravoz.runtime.template.sprig_json import UnsupportedValue
from bobravoz.runtime.template.sprig_json import decode as json_decode
from bobravoz.runtime.template.sprig_json import encode as json_encode
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
from bobravoz.runtime.template.sprig_regex import compile_go, quote_meta
from bobravoz.runtime.template.sprig_text import (
    abbreviate,
    delete_space,
    initials,
    lower,
    lower_words,
    pascal_case,
    substr,
    swapcase,
    title,
    trim_space,
    trunc,
    untitle,
    upper,
    wrap,
)
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
from bobravoz.runtime.template.values import go_string

__all__ = ["FUNCTIONS"]

_Function = TypeVar("_Function", bound=Callable[..., Any])
_REGISTRY: dict[str, Callable[..., Any]] = {}


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


def _guarded(function: Callable[..., Any]) -> Callable[..., Any]:
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


def _register(*names: str) -> Callable[[_Function], _Function]:
    """Add the decorated function to ``FUNCTIONS`` under each of ``names``."""

    def decorate(function: _Function) -> _Function:
        guarded = _guarded(function)
        for name in names:
            _REGISTRY[name] = guarded
        return function

    return decorate


def _printable(value: Any) -> str:
    """Go's ``%v`` of ``value``, refused when it would print longer than 1 MiB."""
    if is_list(value) or is_map(value):
        printed_size(value)
    return go_string(value)


def _strval(value: Any) -> str:
    """Sprig's ``strval``: a string as it is, anything else as ``%v``."""
    return value if isinstance(value, str) else _printable(value)


def _strslice(value: Any) -> list[str]:
    """Sprig's ``strslice``: list items (nil ones dropped) as strings; a non-list value as
    a one-string list; nil as an empty list."""
    if is_list(value):
        return [_strval(item) for item in value if item is not None]
    if value is None:
        return []
    return [_strval(value)]


# --- defaults and flow ----------------------------------------------------------------------


@_register("default")
def _default(fallback: Any, *given: Any) -> Any:
    """``default FALLBACK VALUE``: VALUE unless it is empty (or absent)."""
    if not given or is_empty(given[0]):
        return fallback
    return given[0]


@_register("empty")
def _empty(value: Any) -> bool:
    """True for nil, false, 0, "", [] and {}."""
    return is_empty(value)


@_register("coalesce")
def _coalesce(*values: Any) -> Any:
    """The first non-empty value, or nil."""
    return next((value for value in values if not is_empty(value)), None)


@_register("all")
def _all(*values: Any) -> bool:
    """True when no value is empty."""
    return not any(is_empty(value) for value in values)


@_register("any")
def _any(*values: Any) -> bool:
    """True when some value is not empty."""
    return any(not is_empty(value) for value in values)


@_register("ternary")
def _ternary(if_true: Any, if_false: Any, condition: Any) -> Any:
    """``ternary A B COND``: A when COND (a bool) is true, else B."""
    return if_true if bool_arg(condition) else if_false


@_register("fail")
def _fail(message: Any) -> str:
    """Fail the evaluation with ``message``."""
    raise FunctionError(string_arg(message))


# --- strings --------------------------------------------------------------------------------


@_register("trim")
def _trim(text: Any) -> str:
    """Whitespace removed from both ends."""
    return trim_space(string_arg(text))


@_register("trimAll", "trimall")
def _trim_all(cutset: Any, text: Any) -> str:
    """``trimAll CUTSET TEXT``: characters of CUTSET removed from both ends."""
    return string_arg(text).strip(string_arg(cutset))


@_register("trimPrefix")
def _trim_prefix(prefix: Any, text: Any) -> str:
    """``trimPrefix PREFIX TEXT``."""
    return string_arg(text).removeprefix(string_arg(prefix))


@_register("trimSuffix")
def _trim_suffix(suffix: Any, text: Any) -> str:
    """``trimSuffix SUFFIX TEXT``."""
    return string_arg(text).removesuffix(string_arg(suffix))


@_register("upper")
def _upper(text: Any) -> str:
    """Upper case."""
    return upper(string_arg(text))


@_register("lower")
def _lower(text: Any) -> str:
    """Lower case."""
    return lower(string_arg(text))


@_register("title")
def _title(text: Any) -> str:
    """Each word's first letter in title case (Go's ``strings.Title``)."""
    return title(string_arg(text))


@_register("untitle")
def _untitle(text: Any) -> str:
    """Each word's first letter in lower case."""
    return untitle(string_arg(text))


@_register("repeat")
def _repeat(count: Any, text: Any) -> str:
    """``repeat COUNT TEXT``; a negative count is an error, as in Go."""
    times, value = int_arg(count), string_arg(text)
    if times < 0:
        raise FunctionError("strings: negative Repeat count")
    if value:
        check_length(times * len(value))
    return value * times


@_register("substr")
def _substr(start: Any, end: Any, text: Any) -> str:
    """``substr START END TEXT`` over bytes, as Sprig slices them."""
    first, last, value = int_arg(start), int_arg(end), string_arg(text)
    result = substr(first, last, value)
    if result is None:
        raise FunctionError(f"runtime error: slice bounds out of range [{first}:{last}]")
    return result


@_register("nospace")
def _nospace(text: Any) -> str:
    """All whitespace removed."""
    return delete_space(string_arg(text))


@_register("trunc")
def _trunc(count: Any, text: Any) -> str:
    """``trunc N TEXT``: the first N bytes, or the last -N bytes when N is negative."""
    return trunc(int_arg(count), string_arg(text))


@_register("abbrev")
def _abbrev(width: Any, text: Any) -> str:
    """``abbrev WIDTH TEXT``: at most WIDTH bytes, ending in ``...`` when cut."""
    size, value = int_arg(width), string_arg(text)
    if size < 4:
        return value
    return abbreviate(value, 0, size)


@_register("abbrevboth")
def _abbrevboth(left: Any, right: Any, text: Any) -> str:
    """``abbrevboth OFFSET WIDTH TEXT``: ``...`` on both sides around OFFSET."""
    offset, width, value = int_arg(left), int_arg(right), string_arg(text)
    if width < 4 or (offset > 0 and width < 7):
        return value
    return abbreviate(value, offset, width)


@_register("initials")
def _initials(text: Any) -> str:
    """The first letter of each word."""
    return initials(string_arg(text))


@_register("contains")
def _contains(needle: Any, text: Any) -> bool:
    """``contains NEEDLE TEXT``."""
    return string_arg(needle) in string_arg(text)


@_register("hasPrefix")
def _has_prefix(prefix: Any, text: Any) -> bool:
    """``hasPrefix PREFIX TEXT``."""
    return string_arg(text).startswith(string_arg(prefix))


@_register("hasSuffix")
def _has_suffix(suffix: Any, text: Any) -> bool:
    """``hasSuffix SUFFIX TEXT``."""
    return string_arg(text).endswith(string_arg(suffix))


@_register("quote")
def _quote(*values: Any) -> str:
    """Each non-nil value as a Go double-quoted string, space-separated."""
    return " ".join(go_quote(_strval(value)) for value in values if value is not None)


@_register("squote")
def _squote(*values: Any) -> str:
    """Each non-nil value in single quotes (no escaping), space-separated."""
    return " ".join(f"'{_printable(value)}'" for value in values if value is not None)


@_register("cat")
def _cat(*values: Any) -> str:
    """The non-nil values printed and joined with spaces."""
    return " ".join(_printable(value) for value in values if value is not None)


@_register("indent")
def _indent(spaces: Any, text: Any) -> str:
    """``indent N TEXT``: N spaces before every line."""
    return _indented(int_arg(spaces), string_arg(text))


@_register("nindent")
def _nindent(spaces: Any, text: Any) -> str:
    """Like ``indent``, after a leading newline."""
    return "\n" + _indented(int_arg(spaces), string_arg(text))


def _indented(spaces: int, text: str) -> str:
    if spaces < 0:
        raise FunctionError("strings: negative Repeat count")
    check_length(len(text) + spaces * (text.count("\n") + 1))
    pad = " " * spaces
    return pad + text.replace("\n", "\n" + pad)


@_register("replace")
def _replace(old: Any, new: Any, text: Any) -> str:
    """``replace OLD NEW TEXT``: every OLD replaced."""
    before, after, value = string_arg(old), string_arg(new), string_arg(text)
    count = len(value) + 1 if before == "" else value.count(before)
    check_length(len(value) + count * max(len(after) - len(before), 0))
    return value.replace(before, after)


@_register("plural")
def _plural(one: Any, many: Any, count: Any) -> str:
    """``plural ONE MANY COUNT``: ONE when COUNT is 1."""
    singular, plural = string_arg(one), string_arg(many)
    return singular if int_arg(count) == 1 else plural


@_register("snakecase")
def _snakecase(text: Any) -> str:
    """``FirstName`` → ``first_name``."""
    return lower_words(string_arg(text), "_")


@_register("kebabcase")
def _kebabcase(text: Any) -> str:
    """``FirstName`` → ``first-name``."""
    return lower_words(string_arg(text), "-")


@_register("camelcase")
def _camelcase(text: Any) -> str:
    """``http_server`` → ``HttpServer``."""
    return pascal_case(string_arg(text))


@_register("swapcase")
def _swapcase(text: Any) -> str:
    """``This Is A.Test`` → ``tHIS iS a.tEST``."""
    return swapcase(string_arg(text))


@_register("wrap")
def _wrap(width: Any, text: Any) -> str:
    """``wrap WIDTH TEXT``: lines broken at spaces before WIDTH bytes."""
    return wrap(string_arg(text), int_arg(width), "\n", False)


@_register("wrapWith")
def _wrap_with(width: Any, separator: Any, text: Any) -> str:
    """``wrapWith WIDTH SEP TEXT``: like ``wrap`` with SEP for newline; long words cut."""
    size, newline = int_arg(width), string_arg(separator)
    return wrap(string_arg(text), size, newline, True)


@_register("toString")
def _to_string(value: Any) -> str:
    """The value printed as Go's ``%v`` (a string unchanged)."""
    return _strval(value)


@_register("toStrings")
def _to_strings(value: Any) -> list[str]:
    """A list's items (nil dropped) as strings."""
    return _strslice(value)


@_register("split")
def _split(separator: Any, text: Any) -> dict[str, str]:
    """``split SEP TEXT``: a dict ``{_0: ..., _1: ...}``."""
    return _indexed(_split_list(separator, text))


@_register("splitList")
def _split_list(separator: Any, text: Any) -> list[str]:
    """``splitList SEP TEXT``: the pieces as a list."""
    sep, value = string_arg(separator), string_arg(text)
    return list(value) if sep == "" else value.split(sep)


@_register("splitn")
def _splitn(separator: Any, count: Any, text: Any) -> dict[str, str]:
    """``splitn SEP N TEXT``: at most N pieces, as a dict ``{_0: ..., _1: ...}``."""
    sep, limit, value = string_arg(separator), int_arg(count), string_arg(text)
    if limit == 0:
        return {}
    if limit < 0:
        return _indexed(list(value) if sep == "" else value.split(sep))
    if sep == "":
        pieces = list(value[: limit - 1])
        if len(value) >= limit:
            pieces.append(value[limit - 1 :])
        return _indexed(pieces)
    return _indexed(value.split(sep, limit - 1))


def _indexed(pieces: list[str]) -> dict[str, str]:
    return {f"_{index}": piece for index, piece in enumerate(pieces)}


@_register("join")
def _join(separator: Any, values: Any) -> str:
    """``join SEP LIST``: the items (nil dropped) as strings, joined."""
    sep = string_arg(separator)
    pieces = _strslice(values)
    check_length(sum(len(piece) for piece in pieces) + len(sep) * max(len(pieces) - 1, 0))
    return sep.join(pieces)


@_register("sortAlpha")
def _sort_alpha(values: Any) -> list[str]:
    """A list's items as strings, sorted (a non-list value: that value as a 1-item list)."""
    if is_list(values):
        return sorted(_strslice(values))
    return [_strval(values)]


# --- regular expressions --------------------------------------------------------------------


@_register("regexMatch")
def _regex_match(pattern: Any, text: Any) -> bool:
    """Whether TEXT contains a match; an invalid pattern is false."""
    source, value = string_arg(pattern), string_arg(text)
    try:
        regexp = compile_go(source)
    except FunctionError:
        return False
    return regexp.match(value)


@_register("mustRegexMatch")
def _must_regex_match(pattern: Any, text: Any) -> bool:
    """Like ``regexMatch``; an invalid pattern is an error."""
    return compile_go(string_arg(pattern)).match(string_arg(text))


@_register("regexFind", "mustRegexFind")
def _regex_find(pattern: Any, text: Any) -> str:
    """The leftmost match, or ""."""
    return compile_go(string_arg(pattern)).find(string_arg(text))


@_register("regexFindAll", "mustRegexFindAll")
def _regex_find_all(pattern: Any, text: Any, count: Any) -> list[str]:
    """``regexFindAll RE TEXT N``: at most N matches (-1: all)."""
    source, value, limit = string_arg(pattern), string_arg(text), int_arg(count)
    return compile_go(source).find_all(value, limit)


@_register("regexReplaceAll", "mustRegexReplaceAll")
def _regex_replace_all(pattern: Any, text: Any, replacement: Any) -> str:
    """``regexReplaceAll RE TEXT REPL``: ``$1``/``${name}`` in REPL expanded."""
    source, value, repl = string_arg(pattern), string_arg(text), string_arg(replacement)
    return compile_go(source).replace_all(value, repl, literal=False)


@_register("regexReplaceAllLiteral", "mustRegexReplaceAllLiteral")
def _regex_replace_all_literal(pattern: Any, text: Any, replacement: Any) -> str:
    """``regexReplaceAllLiteral RE TEXT REPL``: REPL inserted as it is."""
    source, value, repl = string_arg(pattern), string_arg(text), string_arg(replacement)
    return compile_go(source).replace_all(value, repl, literal=True)


@_register("regexSplit", "mustRegexSplit")
def _regex_split(pattern: Any, text: Any, count: Any) -> list[str]:
    """``regexSplit RE TEXT N``: at most N pieces (-1: all)."""
    source, value, limit = string_arg(pattern), string_arg(text), int_arg(count)
    return compile_go(source).split(value, limit)


@_register("regexQuoteMeta")
def _regex_quote_meta(text: Any) -> str:
    """TEXT with the regex metacharacters escaped."""
    return quote_meta(string_arg(text))


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
    parsed = parse_go_int(_strval(value), 8)
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


# --- lists ----------------------------------------------------------------------------------


@_register("list", "tuple")
def _list(*values: Any) -> list[Any]:
    """The arguments as a list."""
    return list(values)


@_register("first", "mustFirst")
def _first(values: Any) -> Any:
    """The first item, or nil for an empty list."""
    items = list_kind_arg(values, "Cannot find first on type {}")
    return items[0] if items else None


@_register("last", "mustLast")
def _last(values: Any) -> Any:
    """The last item, or nil for an empty list."""
    items = list_kind_arg(values, "Cannot find last on type {}")
    return items[-1] if items else None


@_register("rest", "mustRest")
def _rest(values: Any) -> list[Any]:
    """All items but the first."""
    return list_kind_arg(values, "Cannot find rest on type {}")[1:]


@_register("initial", "mustInitial")
def _initial(values: Any) -> list[Any]:
    """All items but the last."""
    return list_kind_arg(values, "Cannot find initial on type {}")[:-1]


@_register("append", "push", "mustAppend", "mustPush")
def _append(values: Any, item: Any) -> list[Any]:
    """A new list with ITEM added at the end."""
    return [*list_kind_arg(values, "Cannot push on type {}"), item]


@_register("prepend", "mustPrepend")
def _prepend(values: Any, item: Any) -> list[Any]:
    """A new list with ITEM added at the front."""
    return [item, *list_kind_arg(values, "Cannot prepend on type {}")]


@_register("concat")
def _concat(*lists: Any) -> list[Any]:
    """The lists joined into one."""
    joined: list[Any] = []
    for values in lists:
        joined.extend(list_kind_arg(values, "Cannot concat type {} as list"))
    return joined


@_register("reverse", "mustReverse")
def _reverse(values: Any) -> list[Any]:
    """A new list in reverse order."""
    return list_kind_arg(values, "Cannot find reverse on type {}")[::-1]


@_register("uniq", "mustUniq")
def _uniq(values: Any) -> list[Any]:
    """The items without duplicates (Go's DeepEqual), first occurrence kept."""
    items = list_kind_arg(values, "Cannot find uniq on type {}")
    keys = EqualityKeys()
    seen: set[Any] = set()
    unique = []
    for item in items:
        key = keys.key(item)
        if key not in seen:
            seen.add(key)
            unique.append(item)
    return unique


@_register("without", "mustWithout")
def _without(values: Any, *omitted: Any) -> list[Any]:
    """``without LIST A B...``: the items not deeply equal to any of A, B..."""
    items = list_kind_arg(values, "Cannot find without on type {}")
    keys = EqualityKeys()
    dropped = {keys.key(value) for value in omitted}
    return [item for item in items if keys.key(item) not in dropped]


@_register("has", "mustHas")
def _has(needle: Any, haystack: Any) -> bool:
    """``has ITEM LIST``: whether LIST holds an item deeply equal to ITEM (nil: false)."""
    if haystack is None:
        return False
    items = list_kind_arg(haystack, "Cannot find has on type {}")
    return any(deep_equal(needle, item) for item in items)


@_register("compact", "mustCompact")
def _compact(values: Any) -> list[Any]:
    """The items that are not empty."""
    return [
        item for item in list_kind_arg(values, "Cannot compact on type {}") if not is_empty(item)
    ]


@_register("slice", "mustSlice")
def _slice(values: Any, *indices: Any) -> Any:
    """``slice LIST [START [END]]``: LIST[START:END]; nil for an empty list."""
    if not is_list(values):
        kind = "<nil>" if values is None else go_kind_name(values)
        raise FunctionError(f"list should be type of slice or array but {kind}")
    if not values:
        return None
    values = list(values)
    start = to_int64(indices[0]) if indices else 0
    end = to_int64(indices[1]) if len(indices) >= 2 else len(values)
    if not 0 <= start <= end <= len(values):
        raise FunctionError(f"reflect: slice index out of range [{start}:{end}]")
    return values[start:end]


@_register("chunk", "mustChunk")
def _chunk(size: Any, values: Any) -> list[list[Any]]:
    """``chunk SIZE LIST``: LIST cut into lists of SIZE items (the last may be shorter)."""
    length = int_arg(size)
    items = list_kind_arg(values, "Cannot chunk type {}")
    if length <= 0:
        raise FunctionError("runtime error: makeslice: len out of range")
    return [items[start : start + length] for start in range(0, len(items), length)]


# --- dicts ----------------------------------------------------------------------------------


@_register("dict")
def _dict(*pairs: Any) -> dict[str, Any]:
    """``dict K1 V1 K2 V2...``: keys printed as strings; a key without value gets ""."""
    result: dict[str, Any] = {}
    for index in range(0, len(pairs), 2):
        key = _strval(pairs[index])
        result[key] = pairs[index + 1] if index + 1 < len(pairs) else ""
    return result


@_register("get")
def _get(mapping: Any, key: Any) -> Any:
    """``get DICT KEY``: the value, or "" when the key is absent."""
    items, name = map_arg(mapping), string_arg(key)
    if items is not None and name in items:
        return items[name]
    return ""


@_register("set")
def _set(mapping: Any, key: Any, value: Any) -> MutableMapping[str, Any]:
    """``set DICT KEY VALUE``: DICT itself, changed in place (as in Go)."""
    items, name = mutable_map_arg(mapping), string_arg(key)
    if items is None:
        raise FunctionError("assignment to entry in nil map")
    items[name] = value
    return items


@_register("unset")
def _unset(mapping: Any, key: Any) -> MutableMapping[str, Any]:
    """``unset DICT KEY``: DICT itself without KEY, changed in place (as in Go)."""
    items, name = mutable_map_arg(mapping), string_arg(key)
    if items is None:
        return {}
    items.pop(name, None)
    return items


@_register("hasKey")
def _has_key(mapping: Any, key: Any) -> bool:
    """``hasKey DICT KEY``."""
    items, name = map_arg(mapping), string_arg(key)
    return items is not None and name in items


@_register("pluck")
def _pluck(key: Any, *mappings: Any) -> list[Any]:
    """``pluck KEY DICT...``: the values of KEY in each dict that has it."""
    name = string_arg(key)
    found = []
    for mapping in mappings:
        items = map_arg(mapping)
        if items is not None and name in items:
            found.append(items[name])
    return found


@_register("keys")
def _keys(*mappings: Any) -> list[str]:
    """The keys of each dict (each dict's keys sorted; Go's order is random)."""
    names: list[str] = []
    for mapping in mappings:
        items = map_arg(mapping)
        if items:
            names.extend(sorted(items, key=str))
    return names


@_register("values")
def _values(mapping: Any) -> list[Any]:
    """The values, in sorted key order (Go's order is random)."""
    items = map_arg(mapping)
    return [items[key] for key in sorted(items, key=str)] if items else []


@_register("pick")
def _pick(mapping: Any, *names: Any) -> dict[str, Any]:
    """``pick DICT K...``: a new dict with only the keys K..."""
    items = map_arg(mapping) or {}
    wanted = [string_arg(name) for name in names]
    return {name: items[name] for name in wanted if name in items}


@_register("omit")
def _omit(mapping: Any, *names: Any) -> dict[str, Any]:
    """``omit DICT K...``: a new dict without the keys K..."""
    items = map_arg(mapping) or {}
    unwanted = {string_arg(name) for name in names}
    return {key: value for key, value in items.items() if key not in unwanted}


def _merged(target: Any, sources: tuple[Any, ...], overwrite: bool) -> MutableMapping[str, Any]:
    destination = mutable_map_arg(target)
    checked = [map_arg(source) for source in sources]
    if destination is None:
        destination = {}
    for source in checked:
        if source:
            merge(destination, source, overwrite=overwrite)
    return destination


@_register("merge", "mustMerge")
def _merge(target: Any, *sources: Any) -> MutableMapping[str, Any]:
    """``merge DST SRC...``: fill DST (in place) from each SRC; DST's values win."""
    return _merged(target, sources, overwrite=False)


@_register("mergeOverwrite", "mustMergeOverwrite")
def _merge_overwrite(target: Any, *sources: Any) -> MutableMapping[str, Any]:
    """``mergeOverwrite DST SRC...``: like ``merge`` but later values win."""
    return _merged(target, sources, overwrite=True)


@_register("dig")
def _dig(*args: Any) -> Any:
    """``dig K1 K2... DEFAULT DICT``: the value at the key path, or DEFAULT."""
    if len(args) < 3:
        raise FunctionError("dig needs at least three arguments")
    names = [string_arg(name) for name in args[:-2]]
    fallback, current = args[-2], args[-1]
    for name in names:
        if not is_map(current):
            raise FunctionError(
                f"interface conversion: interface {{}} is {go_type_name(current)}, "
                "not map[string]interface {}"
            )
        if name not in current:
            return fallback
        current = current[name]
    return current


@_register("deepCopy", "mustDeepCopy")
def _deep_copy(value: Any) -> Any:
    """A copy sharing no list or dict with VALUE."""
    return deep_copy(value)


# --- encodings and hashes -------------------------------------------------------------------


def _json(value: Any, *, lenient: bool, escape_html: bool = True, indent: str | None = None) -> str:
    """Go's JSON of VALUE; what Go's encoder refuses is "" (``lenient``) or an error."""
    try:
        return json_encode(value, escape_html=escape_html, indent=indent)
    except UnsupportedValue as exc:
        if lenient:
            return ""
        raise FunctionError(str(exc)) from None


@_register("toJson")
def _to_json(value: Any) -> str:
    """Go's ``json.Marshal``; "" when VALUE cannot be encoded (NaN, ±Inf)."""
    return _json(value, lenient=True)


@_register("toPrettyJson")
def _to_pretty_json(value: Any) -> str:
    """Go's ``json.MarshalIndent`` with two spaces; "" when VALUE cannot be encoded."""
    return _json(value, lenient=True, indent="  ")


@_register("mustToJson")
def _must_to_json(value: Any) -> str:
    """Go's ``json.Marshal``; an error when VALUE cannot be encoded."""
    return _json(value, lenient=False)


@_register("mustToPrettyJson")
def _must_to_pretty_json(value: Any) -> str:
    """Go's ``json.MarshalIndent``; an error when VALUE cannot be encoded."""
    return _json(value, lenient=False, indent="  ")


@_register("toRawJson", "mustToRawJson")
def _to_raw_json(value: Any) -> str:
    """JSON without escaping ``<``, ``>``, ``&``; an error when VALUE cannot be encoded
    (Sprig's ``toRawJson`` panics there)."""
    return _json(value, lenient=False, escape_html=False)


@_register("fromJson")
def _from_json(text: Any) -> Any:
    """The value of a JSON text (numbers are floats); nil for invalid JSON."""
    try:
        return json_decode(string_arg(text))
    except FunctionError:
        if not isinstance(text, str):
            raise
        return None


@_register("mustFromJson")
def _must_from_json(text: Any) -> Any:
    """The value of a JSON text; an error for invalid JSON."""
    return json_decode(string_arg(text))


@_register("b64enc")
def _b64enc(text: Any) -> str:
    """Standard base64 of the UTF-8 bytes."""
    return base64.b64encode(utf8(string_arg(text))).decode("ascii")


@_register("b64dec")
def _b64dec(text: Any) -> str:
    """Decoded standard base64; Go's error text when the input is invalid."""
    decoded, error = b64decode(utf8(string_arg(text)))
    if error is not None:
        return f"illegal base64 data at input byte {error}"
    return from_utf8(decoded)


@_register("b32enc")
def _b32enc(text: Any) -> str:
    """Standard base32 of the UTF-8 bytes."""
    return base64.b32encode(utf8(string_arg(text))).decode("ascii")


@_register("b32dec")
def _b32dec(text: Any) -> str:
    """Decoded standard base32; Go's error text when the input is invalid."""
    decoded, error = b32decode(utf8(string_arg(text)))
    if error is not None:
        return f"illegal base32 data at input byte {error}"
    return from_utf8(decoded)


@_register("sha1sum")
def _sha1sum(text: Any) -> str:
    """Hex SHA-1 of the UTF-8 bytes."""
    return hashlib.sha1(utf8(string_arg(text)), usedforsecurity=False).hexdigest()


@_register("sha256sum")
def _sha256sum(text: Any) -> str:
    """Hex SHA-256 of the UTF-8 bytes."""
    return hashlib.sha256(utf8(string_arg(text))).hexdigest()


@_register("sha512sum")
def _sha512sum(text: Any) -> str:
    """Hex SHA-512 of the UTF-8 bytes."""
    return hashlib.sha512(utf8(string_arg(text))).hexdigest()


@_register("adler32sum")
def _adler32sum(text: Any) -> str:
    """Adler-32 checksum of the UTF-8 bytes, in decimal."""
    return str(zlib.adler32(utf8(string_arg(text))))


@_register("uuidv4")
def _uuidv4() -> str:
    """A random UUID (version 4)."""
    return str(uuid.uuid4())


# --- types ----------------------------------------------------------------------------------


@_register("typeOf")
def _type_of(value: Any) -> str:
    """Go's ``%T`` of the value (``string``, ``float64``, ``[]interface {}``...)."""
    return go_type_name(value)


@_register("typeIs")
def _type_is(name: Any, value: Any) -> bool:
    """``typeIs NAME VALUE``."""
    return string_arg(name) == go_type_name(value)


@_register("typeIsLike")
def _type_is_like(name: Any, value: Any) -> bool:
    """``typeIsLike NAME VALUE`` (a pointer to NAME counts; there are none here)."""
    target, actual = string_arg(name), go_type_name(value)
    return target in (actual, "*" + actual)


@_register("kindOf")
def _kind_of(value: Any) -> str:
    """Go's reflect kind (``string``, ``float64``, ``int``, ``bool``, ``slice``, ``map``,
    ``invalid`` for nil)."""
    return go_kind_name(value)


@_register("kindIs")
def _kind_is(name: Any, value: Any) -> bool:
    """``kindIs NAME VALUE``."""
    return string_arg(name) == go_kind_name(value)


@_register("deepEqual")
def _deep_equal(left: Any, right: Any) -> bool:
    """Go's ``reflect.DeepEqual`` (``1`` and ``1.0`` differ: int and float64)."""
    return deep_equal(left, right)


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
    raise FunctionError(f"wrong type for value; expected time.Time; got {go_type_name(value)}")


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


FUNCTIONS: Final[Mapping[str, Callable[..., Any]]] = MappingProxyType(
    dict(sorted(_REGISTRY.items()))
)
"""Every Sprig function of the safe subset, by template name."""
