"""Go's ``regexp`` for Sprig's regex functions, on Google's RE2 (``google-re2``).

Go's regexp implements RE2 syntax with linear-time matching; this module compiles patterns
with the RE2 library itself (same syntax, same leftmost-first semantics, no backtracking, so
no pattern can take exponential time) and reproduces Go's iteration rules on top:

- ``find_all``/``split`` skip an empty match right after the previous match, as Go does
  (Python's ``re`` keeps it);
- ``replace_all`` expands ``$1``, ``${1}``, ``$name``, ``${name}`` and ``$$`` with Go's rules
  (``$1x`` is the group named ``1x``, an unknown group is empty);
- positions are UTF-8 byte offsets, as in Go.

Deliberate limits: ``\\C`` (match any byte) is refused, since it can split characters; a
pattern longer than :data:`MAX_PATTERN` or a text longer than :data:`MAX_TEXT` characters is
an error. Unicode tables are RE2's (their version may differ slightly from Go's).
"""

from __future__ import annotations

import functools
import unicodedata
from collections.abc import Iterator
from typing import Any, Final

import re2

from bobravoz.runtime.template.errors import FunctionError
from bobravoz.runtime.template.sprig_args import check_length, from_utf8, utf8

MAX_PATTERN: Final = 4096
"""Longest pattern accepted (characters)."""

MAX_TEXT: Final = 64 * 1024
"""Longest text a regex function searches (characters)."""

_META: Final = frozenset("\\.+*?()|[]{}^$")


def quote_meta(text: str) -> str:
    """Go's ``regexp.QuoteMeta``: a backslash before each of ``\\.+*?()|[]{}^$``."""
    return "".join("\\" + char if char in _META else char for char in text)


def _uses_any_byte(pattern: str) -> bool:
    position = 0
    while position < len(pattern) - 1:
        if pattern[position] == "\\":
            if pattern[position + 1] == "C":
                return True
            position += 2
        else:
            position += 1
    return False


def _rune_width(data: bytes, position: int) -> int:
    """Bytes of the UTF-8 character at ``position`` (1 for an invalid byte), as Go steps."""
    lead = data[position]
    if lead < 0x80:
        return 1
    width = 2 if 0xC2 <= lead <= 0xDF else 3 if 0xE0 <= lead <= 0xEF else 4 if lead <= 0xF4 else 1
    if width == 1 or position + width > len(data):
        return 1
    if all(0x80 <= byte <= 0xBF for byte in data[position + 1 : position + width]):
        return width
    return 1


@functools.lru_cache(maxsize=256)
def compile_go(pattern: str) -> GoRegexp:
    """The compiled ``pattern``; raises FunctionError for a pattern Go (or this port)
    refuses. Compiled patterns are cached."""
    return GoRegexp(pattern)


def _text(text: str) -> bytes:
    if len(text) > MAX_TEXT:
        raise FunctionError(f"text of {len(text)} characters is longer than {MAX_TEXT}")
    return utf8(text)


class GoRegexp:
    """One compiled pattern with Go's ``regexp.Regexp`` string methods."""

    __slots__ = ("_groups", "_names", "_regexp", "pattern")

    def __init__(self, pattern: str) -> None:
        if len(pattern) > MAX_PATTERN:
            raise FunctionError(
                f"pattern of {len(pattern)} characters is longer than {MAX_PATTERN}"
            )
        if _uses_any_byte(pattern):
            raise FunctionError(r"error parsing regexp: invalid escape sequence: `\C`")
        options = re2.Options()
        options.log_errors = False
        try:
            self._regexp: Any = re2.compile(utf8(pattern), options)
        except re2.error as exc:
            detail = exc.args[0] if exc.args else exc
            if isinstance(detail, bytes):
                detail = detail.decode("utf-8", "replace")
            raise FunctionError(f"error parsing regexp: {detail}") from None
        self.pattern = pattern
        self._groups: int = self._regexp.groups
        self._names: dict[str, int] = {
            (name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name)): index
            for name, index in self._regexp.groupindex.items()
        }

    def _search(self, data: bytes, position: int) -> Any:
        return self._regexp.search(data, position)

    def _matches(self, data: bytes, limit: int) -> Iterator[Any]:
        """Go's ``allMatches``: successive matches, no empty match right after a match."""
        end = len(data)
        if limit < 0:
            limit = end + 1
        position, found, previous_end = 0, 0, -1
        while found < limit and position <= end:
            match = self._search(data, position)
            if match is None:
                break
            start, stop = match.span()
            accept = True
            if stop == position:
                if start == previous_end:
                    accept = False
                position += _rune_width(data, position) if position < end else 1
            else:
                position = stop
            previous_end = stop
            if accept:
                found += 1
                yield match

    def match(self, text: str) -> bool:
        """Go's ``MatchString``: does ``text`` contain a match?"""
        return self._search(_text(text), 0) is not None

    def find(self, text: str) -> str:
        """Go's ``FindString``: the leftmost match, or ""."""
        data = _text(text)
        match = self._search(data, 0)
        if match is None:
            return ""
        start, stop = match.span()
        return from_utf8(data[start:stop])

    def find_all(self, text: str, limit: int) -> list[str]:
        """Go's ``FindAllString``: at most ``limit`` matches (all when negative)."""
        data = _text(text)
        if limit == 0:
            return []
        found = []
        for match in self._matches(data, limit):
            start, stop = match.span()
            found.append(from_utf8(data[start:stop]))
        return found

    def split(self, text: str, limit: int) -> list[str]:
        """Go's ``Split``: the texts between matches, at most ``limit`` of them."""
        data = _text(text)
        if limit == 0:
            return []
        if self.pattern and not data:
            return [""]
        pieces: list[bytes] = []
        begin = end = 0
        for match in self._matches(data, limit):
            if limit > 0 and len(pieces) == limit - 1:
                break
            start, stop = match.span()
            end = start
            if stop != 0:
                pieces.append(data[begin:end])
            begin = stop
        if end != len(data):
            pieces.append(data[begin:])
        return [from_utf8(piece) for piece in pieces]

    def replace_all(self, text: str, replacement: str, *, literal: bool) -> str:
        """Go's ``ReplaceAllString`` (``ReplaceAllLiteralString`` with ``literal``)."""
        data = _text(text)
        template: list[bytes | int] = (
            [utf8(replacement)] if literal else self._template(replacement)
        )
        out = bytearray()
        last = search = 0
        end = len(data)
        while search <= end:
            match = self._search(data, search)
            if match is None:
                break
            start, stop = match.span()
            out += data[last:start]
            if stop > last or start == 0:
                for piece in template:
                    if isinstance(piece, bytes):
                        out += piece
                    elif piece >= 0:
                        group_start, group_stop = match.span(piece)
                        if group_start >= 0:
                            out += data[group_start:group_stop]
            last = stop
            width = _rune_width(data, search) if search < end else 0
            if search + width > stop:
                search += width
            elif search + 1 > stop:
                search += 1
            else:
                search = stop
            check_length(len(out))
        out += data[last:]
        check_length(len(out))
        return from_utf8(bytes(out))

    def _template(self, replacement: str) -> list[bytes | int]:
        """Go's ``Expand`` template as literal pieces and group numbers (-1: no group)."""
        pieces: list[bytes | int] = []
        rest = replacement
        while rest:
            before, dollar, after = rest.partition("$")
            if before:
                pieces.append(utf8(before))
            if not dollar:
                break
            if after.startswith("$"):
                pieces.append(b"$")
                rest = after[1:]
                continue
            reference = _reference(after)
            if reference is None:
                pieces.append(b"$")
                rest = after
                continue
            name, rest = reference
            pieces.append(self._group_number(name))
        return pieces

    def _group_number(self, name: str) -> int:
        number = _number(name)
        if number >= 0:
            return number if number <= self._groups else -1
        return self._names.get(name, -1)


def _is_name_char(char: str) -> bool:
    category = unicodedata.category(char)
    return category[0] == "L" or category == "Nd" or char == "_"


def _reference(text: str) -> tuple[str, str] | None:
    """Go's ``extract``: (name, rest) after a ``$``, or None when malformed."""
    brace = text.startswith("{")
    body = text[1:] if brace else text
    length = 0
    while length < len(body) and _is_name_char(body[length]):
        length += 1
    if length == 0:
        return None
    name = body[:length]
    if brace:
        if length >= len(body) or body[length] != "}":
            return None
        length += 1
    return name, body[length:]


def _number(name: str) -> int:
    """The group number a name spells (digits, no leading zero, below 1e8), else -1."""
    if not name.isascii() or not name.isdigit():
        return -1
    if len(name) > 1 and name[0] == "0":
        return -1
    if len(name) > 8:
        return -1
    return int(name)
