"""Sprig's default, flow, string and regex functions (see :mod:`.sprig`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

from bobravoz.runtime.template.errors import FunctionError
from bobravoz.runtime.template.gofmt import quote as go_quote
from bobravoz.runtime.template.sprig_args import (
    bool_arg,
    check_length,
    int_arg,
    string_arg,
)
from bobravoz.runtime.template.sprig_data import (
    is_empty,
)
from bobravoz.runtime.template.sprig_regex import compile_go, quote_meta
from bobravoz.runtime.template.sprig_registry import Registry, printable, strslice, strval
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
from bobravoz.runtime.template.values import is_list

_REGISTRY = Registry()
_register = _REGISTRY.register
FUNCTIONS: Final[Mapping[str, Callable[..., Any]]] = _REGISTRY.functions
"""This module's functions by template name."""


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
    return " ".join(go_quote(strval(value)) for value in values if value is not None)


@_register("squote")
def _squote(*values: Any) -> str:
    """Each non-nil value in single quotes (no escaping), space-separated."""
    return " ".join(f"'{printable(value)}'" for value in values if value is not None)


@_register("cat")
def _cat(*values: Any) -> str:
    """The non-nil values printed and joined with spaces."""
    return " ".join(printable(value) for value in values if value is not None)


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
    return strval(value)


@_register("toStrings")
def _to_strings(value: Any) -> list[str]:
    """A list's items (nil dropped) as strings."""
    return strslice(value)


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
    pieces = strslice(values)
    check_length(sum(len(piece) for piece in pieces) + len(sep) * max(len(pieces) - 1, 0))
    return sep.join(pieces)


@_register("sortAlpha")
def _sort_alpha(values: Any) -> list[str]:
    """A list's items as strings, sorted (a non-list value: that value as a 1-item list)."""
    if is_list(values):
        return sorted(strslice(values))
    return [strval(values)]


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
