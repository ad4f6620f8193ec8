"""Go's predefined template functions over JSON-like Python values.

``and``, ``or``, ``not``, ``len``, ``index``, ``slice``, ``eq``, ``ne``, ``lt``, ``le``,
``gt``, ``ge``, ``print``, ``printf``, ``println``, ``html``, ``js``, ``urlquery``. (``and``
and ``or`` short-circuit in the evaluator; the versions here serve calls with evaluated
arguments.) ``call`` is not provided: template data holds no functions.

Comparisons follow Go's rules for basic kinds: bool, number, string. Values of different
kinds are an error (``eq 1 "1"``), except that ``eq``/``ne`` with ``nil`` on either side are
simply false/true; lists and maps cannot be compared (an error, unless against ``nil``);
``lt``/``le``/``gt``/``ge`` accept only numbers and strings. Numbers: Go compares an int
constant with a float64 (every JSON number in Go) as an error, ``incompatible types for
comparison``; here JSON integers stay ``int``, so ``int`` and ``float`` are one kind and
compare by value (``eq 1 1.0`` is true), which is what a Story author means and never fails
where Go would have succeeded.

Strings are measured and indexed in UTF-8 bytes as in Go (``len "é"`` is 2, ``index "abc" 0``
is 97); a ``slice`` that cuts a character leaves U+FFFD in its place.

Failures raise :class:`Failure` with a reason label (``type_error``,
``index_out_of_range``) or :class:`~.errors.FunctionError` (wrong number or type of
arguments); the evaluator turns both into ``TemplateEvalError``.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, Final

from .errors import FunctionError
from .gofmt import sprint, sprintf, sprintln
from .values import go_type, truth


class Failure(Exception):
    """An evaluation failure with its reason label (the evaluator adds the position)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def _arity(args: tuple[Any, ...], want: int) -> None:
    if len(args) != want:
        raise FunctionError(f"wrong number of args: want {want} got {len(args)}")


def _kind(value: Any) -> str:
    """Go's basic kind of a value: ``bool``, ``number``, ``string``, or ``other`` (nil too)."""
    kind = type(value)
    if kind is str:
        return "string"
    if kind is bool:
        return "bool"
    if kind is int or kind is float:
        return "number"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "other"


def eq(*args: Any) -> bool:
    """``eq a b c...``: whether ``a`` equals any of the others (Go's comparison rules)."""
    if len(args) == 2:
        first, other = args
        kind = type(first)
        if kind is type(other) and (kind is str or kind is int or kind is float):
            return bool(first == other)
    elif len(args) < 2:
        raise FunctionError("missing argument for comparison")
    first = args[0]
    first_kind = _kind(first)
    for other in args[1:]:
        other_kind = _kind(other)
        if first_kind != other_kind:
            if first is not None and other is not None:
                raise Failure("type_error", "incompatible types for comparison")
            equal = False
        elif first_kind == "other":
            if first is not None and other is not None:
                raise Failure(
                    "type_error", f"non-comparable types {go_type(first)}, {go_type(other)}"
                )
            equal = first is None and other is None
        else:
            equal = first == other
        if equal:
            return True
    return False


def ne(*args: Any) -> bool:
    """``ne a b``: not ``eq a b``."""
    _arity(args, 2)
    return not eq(*args)


def _ordered(left: Any, right: Any) -> None:
    left_kind = _kind(left)
    right_kind = _kind(right)
    if left_kind in ("other", "bool") or right_kind in ("other", "bool"):
        raise Failure("type_error", "invalid type for comparison")
    if left_kind != right_kind:
        raise Failure("type_error", "incompatible types for comparison")


def lt(*args: Any) -> bool:
    """``lt a b``: ``a < b`` for two numbers or two strings."""
    _arity(args, 2)
    _ordered(args[0], args[1])
    return bool(args[0] < args[1])


def le(*args: Any) -> bool:
    """``le a b``: ``a <= b`` for two numbers or two strings."""
    _arity(args, 2)
    _ordered(args[0], args[1])
    return bool(args[0] <= args[1])


def gt(*args: Any) -> bool:
    """``gt a b``: ``a > b`` for two numbers or two strings."""
    _arity(args, 2)
    _ordered(args[0], args[1])
    return bool(args[0] > args[1])


def ge(*args: Any) -> bool:
    """``ge a b``: ``a >= b`` for two numbers or two strings."""
    _arity(args, 2)
    _ordered(args[0], args[1])
    return bool(args[0] >= args[1])


def and_(*args: Any) -> Any:
    """``and a b...``: the first empty argument, or the last one."""
    if not args:
        raise FunctionError("wrong number of args: want at least 1 got 0")
    for value in args:
        if not truth(value):
            return value
    return args[-1]


def or_(*args: Any) -> Any:
    """``or a b...``: the first non-empty argument, or the last one."""
    if not args:
        raise FunctionError("wrong number of args: want at least 1 got 0")
    for value in args:
        if truth(value):
            return value
    return args[-1]


def not_(*args: Any) -> bool:
    """``not a``: whether ``a`` is empty (false, 0, nil, "", empty list or map)."""
    _arity(args, 1)
    return not truth(args[0])


def length(*args: Any) -> int:
    """``len x``: bytes of a string, items of a list or map."""
    _arity(args, 1)
    value = args[0]
    if isinstance(value, str):
        return len(value) if value.isascii() else len(value.encode("utf-8", "surrogatepass"))
    if isinstance(value, Mapping | Sequence):
        return len(value)
    if value is None:
        raise Failure("type_error", "len of nil")
    raise Failure("type_error", f"len of type {go_type(value)}")


def _index_arg(index: Any, cap: int) -> int:
    if index is None:
        raise Failure("type_error", "cannot index slice/array with nil")
    if isinstance(index, bool) or not isinstance(index, int):
        raise Failure("type_error", f"cannot index slice/array with type {go_type(index)}")
    if index < 0 or index > cap:
        raise Failure("index_out_of_range", f"index out of range: {index}")
    return index


def index(*args: Any) -> Any:
    """``index x 1 2``: ``x[1][2]`` over lists, maps and strings (a string yields a byte).

    A missing map key yields nil; indexing nil yields nil (Go refuses it: BubuStack treats
    missing data as zero values).
    """
    if not args:
        raise FunctionError("wrong number of args: want at least 1 got 0")
    item = args[0]
    if len(args) == 2 and type(item) in (dict, MappingProxyType) and type(args[1]) is str:
        return item.get(args[1])
    for key in args[1:]:
        if item is None:
            return None
        if isinstance(item, Mapping):
            if isinstance(key, str):
                item = item.get(key)
                continue
            raise Failure("type_error", f"value has type {go_type(key)}; should be string")
        if isinstance(item, str):
            data = item.encode("utf-8", "surrogatepass")
            position = _index_arg(key, len(data))
            if position == len(data):
                raise Failure("index_out_of_range", f"index out of range: {position}")
            item = data[position]
            continue
        if isinstance(item, Sequence):
            position = _index_arg(key, len(item))
            if position == len(item):
                raise Failure("index_out_of_range", f"index out of range: {position}")
            item = item[position]
            continue
        raise Failure("type_error", f"can't index item of type {go_type(item)}")
    return item


def slice_(*args: Any) -> Any:
    """``slice x 1 2``: ``x[1:2]`` of a string (in bytes) or a list; ``slice x 1 2 3`` too."""
    if not args:
        raise FunctionError("wrong number of args: want at least 1 got 0")
    item, bounds = args[0], args[1:]
    if item is None:
        raise Failure("type_error", "slice of untyped nil")
    if len(bounds) > 3:
        raise FunctionError(f"too many slice indexes: {len(bounds)}")
    if isinstance(item, str):
        if len(bounds) == 3:
            raise Failure("type_error", "cannot 3-index slice a string")
        data: str | bytes | Sequence[Any] = (
            item if item.isascii() else item.encode("utf-8", "surrogatepass")
        )
    elif isinstance(item, Sequence) and not isinstance(item, Mapping):
        data = item
    else:
        raise Failure("type_error", f"can't slice item of type {go_type(item)}")
    cap = len(data)
    positions = [0, cap, cap]
    for number, bound in enumerate(bounds):
        positions[number] = _index_arg(bound, cap)
    if positions[0] > positions[1]:
        raise Failure("index_out_of_range", f"invalid slice index: {positions[0]} > {positions[1]}")
    if len(bounds) == 3 and positions[1] > positions[2]:
        raise Failure("index_out_of_range", f"invalid slice index: {positions[1]} > {positions[2]}")
    part = data[positions[0] : positions[1]]
    if isinstance(part, bytes):
        return part.decode("utf-8", "replace")
    if isinstance(part, str):
        return part
    return list(part)


def _joined(args: tuple[Any, ...]) -> str:
    """Go's ``evalArgs``: a single string as is, else ``fmt.Sprint`` (nil prints as "")."""
    if len(args) == 1 and isinstance(args[0], str):
        return args[0]
    return sprint(*("" if arg is None else arg for arg in args))


def html(*args: Any) -> str:
    """``html``: the text with ``< > & ' "`` escaped as HTML entities (NUL as U+FFFD)."""
    text = _joined(args)
    return (
        text.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace("'", "&#39;")
        .replace('"', "&#34;")
        .replace("\0", "\ufffd")
    )


_JS_ESCAPES: Final = {
    "\\": "\\\\",
    "'": "\\'",
    '"': '\\"',
    "<": "\\u003C",
    ">": "\\u003E",
    "&": "\\u0026",
    "=": "\\u003D",
}


def js(*args: Any) -> str:
    """``js``: the text escaped for a JavaScript string (Go's ``JSEscapeString``)."""
    text = _joined(args)
    out: list[str] = []
    for char in text:
        code = ord(char)
        if char in _JS_ESCAPES:
            out.append(_JS_ESCAPES[char])
        elif code < 0x20:
            out.append(f"\\u00{code:02X}")
        elif code < 0x80 or char.isprintable():
            out.append(char)
        else:
            out.append(f"\\u{code:04X}")
    return "".join(out)


def urlquery(*args: Any) -> str:
    """``urlquery``: the text escaped for a URL query (Go's ``url.QueryEscape``)."""
    return urllib.parse.quote_plus(_joined(args), safe="", errors="surrogatepass")


def printf(*args: Any) -> str:
    """``printf format args...``: Go's ``fmt.Sprintf``."""
    if not args:
        raise FunctionError("wrong number of args: want at least 1 got 0")
    if not isinstance(args[0], str):
        raise FunctionError(f"format must be a string, not {go_type(args[0])}")
    return sprintf(args[0], *args[1:])


def print_(*args: Any) -> str:
    """``print args...``: Go's ``fmt.Sprint``."""
    return sprint(*args)


def println(*args: Any) -> str:
    """``println args...``: Go's ``fmt.Sprintln``."""
    return sprintln(*args)


BUILTINS: Final[Mapping[str, Callable[..., Any]]] = {
    "and": and_,
    "or": or_,
    "not": not_,
    "len": length,
    "index": index,
    "slice": slice_,
    "eq": eq,
    "ne": ne,
    "lt": lt,
    "le": le,
    "gt": gt,
    "ge": ge,
    "print": print_,
    "printf": printf,
    "println": println,
    "html": html,
    "js": js,
    "urlquery": urlquery,
}
