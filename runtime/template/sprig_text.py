"""Go's text rules used by Sprig's string functions.

Character classes follow Go's ``unicode`` package (``IsSpace`` is Go's list, not Python's
``str.isspace``); case mapping is per character, like Go's simple mapping (a character whose
Python mapping is several characters, like ``ß`` → ``SS``, is left as it is).

Where Go counts bytes (``trunc``, ``substr``, ``abbrev``, ``wrap``) these work on the UTF-8
bytes too, so lengths match Go exactly; a character cut in half becomes U+FFFD (Go would keep
the broken bytes, which its JSON encoder would then write as U+FFFD). ``initials`` and
``nospace`` work on characters: Go's goutils walks them byte by byte and garbles non-ASCII
text, which is not reproduced.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from typing import Final

from bobravoz.runtime.template.sprig_args import check_length, from_utf8, utf8

_GO_SPACE: Final = frozenset(
    "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009"
    "\u200a\u2028\u2029\u202f\u205f\u3000"
)
_RUNE_ERROR: Final = "\ufffd"


def is_space(char: str) -> bool:
    """Go's ``unicode.IsSpace``."""
    return char in _GO_SPACE


def is_upper(char: str) -> bool:
    """Go's ``unicode.IsUpper`` (category Lu)."""
    return unicodedata.category(char) == "Lu"


def is_lower(char: str) -> bool:
    """Go's ``unicode.IsLower`` (category Ll)."""
    return unicodedata.category(char) == "Ll"


def is_title(char: str) -> bool:
    """Go's ``unicode.IsTitle`` (category Lt)."""
    return unicodedata.category(char) == "Lt"


def is_letter(char: str) -> bool:
    """Go's ``unicode.IsLetter`` (categories L*)."""
    return unicodedata.category(char)[0] == "L"


def is_digit(char: str) -> bool:
    """Go's ``unicode.IsDigit`` (category Nd)."""
    return unicodedata.category(char) == "Nd"


def is_number(char: str) -> bool:
    """Go's ``unicode.IsNumber`` (categories N*)."""
    return unicodedata.category(char)[0] == "N"


def is_punct(char: str) -> bool:
    """Go's ``unicode.IsPunct`` (categories P*)."""
    return unicodedata.category(char)[0] == "P"


def _single(mapped: str, char: str) -> str:
    return mapped if len(mapped) == 1 else char


def to_upper_char(char: str) -> str:
    """Go's ``unicode.ToUpper`` of one character."""
    return _single(char.upper(), char)


def to_lower_char(char: str) -> str:
    """Go's ``unicode.ToLower`` of one character."""
    return _single(char.lower(), char)


def to_title_char(char: str) -> str:
    """Go's ``unicode.ToTitle`` of one character."""
    return _single(char.title(), char)


def upper(text: str) -> str:
    """Go's ``strings.ToUpper``."""
    if text.isascii():
        return text.upper()
    return "".join(to_upper_char(char) for char in text)


def lower(text: str) -> str:
    """Go's ``strings.ToLower`` (no final-sigma rule: each character maps alone)."""
    if text.isascii():
        return text.lower()
    return "".join(to_lower_char(char) for char in text)


def trim_space(text: str) -> str:
    """Go's ``strings.TrimSpace``."""
    start, end = 0, len(text)
    while start < end and text[start] in _GO_SPACE:
        start += 1
    while end > start and text[end - 1] in _GO_SPACE:
        end -= 1
    return text[start:end]


def _title_separator(char: str) -> bool:
    if char <= "\x7f":
        return not (char.isalnum() or char == "_")
    if is_letter(char) or is_digit(char):
        return False
    return is_space(char)


def title(text: str) -> str:
    """Go's ``strings.Title``: the first letter of each word in title case, the rest kept."""
    out = []
    previous = " "
    for char in text:
        out.append(to_title_char(char) if _title_separator(previous) else char)
        previous = char
    return "".join(out)


def untitle(text: str) -> str:
    """goutils ``Uncapitalize``: the first letter after whitespace in lower case."""
    out = []
    at_start = True
    for char in text:
        if is_space(char):
            at_start = True
            out.append(char)
        elif at_start:
            out.append(to_lower_char(char))
            at_start = False
        else:
            out.append(char)
    return "".join(out)


def swapcase(text: str) -> str:
    """goutils ``SwapCase``: upper and title case to lower; lower case to title case after
    whitespace (or at the start), else to upper case."""
    out = []
    after_space = True
    for char in text:
        if is_upper(char) or is_title(char):
            out.append(to_lower_char(char))
            after_space = False
        elif is_lower(char):
            if after_space:
                out.append(to_title_char(char))
                after_space = False
            else:
                out.append(to_upper_char(char))
        else:
            after_space = is_space(char)
            out.append(char)
    return "".join(out)


def initials(text: str) -> str:
    """goutils ``Initials``: the first character of each whitespace-separated word."""
    out = []
    after_gap = True
    for char in text:
        if is_space(char):
            after_gap = True
        elif after_gap:
            out.append(char)
            after_gap = False
    return "".join(out)


def delete_space(text: str) -> str:
    """goutils ``DeleteWhiteSpace``: ``text`` without any Go whitespace."""
    return "".join(char for char in text if char not in _GO_SPACE)


# --- snakecase, kebabcase, camelcase: huandu/xstrings v1.5 ----------------------------------

_INVALID, _NUMBER, _UPPER_CASE, _ALPHABET, _CONNECTOR, _PUNCT, _OTHER = range(7)


def is_connector(char: str) -> bool:
    """xstrings: ``-``, ``_`` and whitespace join words."""
    return char in "-_" or char in _GO_SPACE


def _is_alphabet(char: str) -> bool:
    """xstrings ``isAlphabet``: a letter that is not a common CJK ideograph."""
    if not is_letter(char):
        return False
    code = ord(char)
    if code < 0x3400:
        return True
    return not (0x4E00 <= code <= 0x9FCC or 0x3400 <= code <= 0x4D85 or 0x20000 <= code <= 0x2B81D)


def _next_valid(text: str, previous: str) -> tuple[str, int]:
    """The first character that is not U+FFFD and how many characters that took."""
    for position, char in enumerate(text):
        if char != _RUNE_ERROR:
            return char, position + 1
    return previous, len(text)


def _scan(
    remaining: str, char: str, offset: int, stop: Callable[[str], bool]
) -> tuple[str, int, str]:
    """Extend a word while ``stop(char)`` is false; returns (last char, offset, rest)."""
    while remaining:
        char, size = _next_valid(remaining, char)
        if stop(char):
            break
        offset += size
        remaining = remaining[size:]
    return char, offset, remaining


def _next_word(text: str) -> tuple[int, str, str]:
    """xstrings ``nextWord``: the kind of the next word, the word, and the rest."""
    if not text:
        return _INVALID, "", ""
    char, size = _next_valid(text, _RUNE_ERROR)
    offset = size
    if char == _RUNE_ERROR:
        return _INVALID, text[:offset], text[offset:]
    remaining = text[size:]
    if is_connector(char):
        kind = _CONNECTOR
        _, offset, remaining = _scan(remaining, char, offset, lambda c: not is_connector(c))
    elif is_punct(char):
        kind = _PUNCT
        _, offset, remaining = _scan(remaining, char, offset, lambda c: not is_punct(c))
    elif is_upper(char):
        kind = _UPPER_CASE
        if remaining:
            char, size = _next_valid(remaining, char)
            if is_upper(char):
                last_size = size
                offset += size
                remaining = remaining[size:]
                while remaining:
                    char, size = _next_valid(remaining, char)
                    if not is_upper(char):
                        break
                    last_size = size
                    offset += size
                    remaining = remaining[size:]
                # "HTTPStatus" is "HTTP" then "Status": the last upper letter starts a word.
                if remaining and _is_alphabet(char):
                    offset -= last_size
                    remaining = text[offset:]
            elif _is_alphabet(char):
                offset += size
                remaining = remaining[size:]
                _, offset, remaining = _scan(
                    remaining, char, offset, lambda c: not _is_alphabet(c) or is_upper(c)
                )
    elif _is_alphabet(char):
        kind = _ALPHABET
        _, offset, remaining = _scan(
            remaining, char, offset, lambda c: not _is_alphabet(c) or is_upper(c)
        )
    elif is_number(char):
        kind = _NUMBER
        _, offset, remaining = _scan(remaining, char, offset, lambda c: not is_number(c))
    else:
        kind = _OTHER
        _, offset, remaining = _scan(
            remaining,
            char,
            offset,
            lambda c: is_connector(c) or _is_alphabet(c) or is_number(c) or is_punct(c),
        )
    return kind, text[:offset], remaining


def _lower_word(out: list[str], kind: int, word: str, connector: str) -> None:
    if kind not in (_UPPER_CASE, _CONNECTOR):
        out.append(word)
        return
    for char in word:
        if is_connector(char):
            out.append(connector)
        elif is_upper(char):
            out.append(to_lower_char(char))
        else:
            out.append(char)


def lower_words(text: str, connector: str) -> str:
    """xstrings ``camelCaseToLowerCase``: ``snakecase`` (``_``) and ``kebabcase`` (``-``)."""
    if not text:
        return ""
    out: list[str] = []
    kind, word, remaining = _next_word(text)
    while remaining:
        if kind != _CONNECTOR:
            _lower_word(out, kind, word, connector)
        previous, last = kind, word
        kind, word, remaining = _next_word(remaining)
        if previous == _NUMBER:
            while kind in (_ALPHABET, _NUMBER):
                _lower_word(out, kind, word, connector)
                kind, word, remaining = _next_word(remaining)
            if kind not in (_INVALID, _PUNCT, _CONNECTOR):
                out.append(connector)
        elif previous == _CONNECTOR:
            _lower_word(out, previous, last, connector)
        elif previous == _PUNCT:
            pass
        elif kind != _NUMBER:
            if kind not in (_CONNECTOR, _PUNCT):
                out.append(connector)
        elif remaining:
            number = word
            kind, word, remaining = _next_word(remaining)
            if kind != _ALPHABET:
                # A number ends the previous word: "Bld4Floor" is "bld4_floor".
                _lower_word(out, _NUMBER, number, connector)
                if kind not in (_CONNECTOR, _PUNCT):
                    out.append(connector)
            else:
                # Letters after a number start a word with it: "HTTP2xx" is "http_2xx".
                out.append(connector)
                _lower_word(out, _NUMBER, number, connector)
                while kind in (_ALPHABET, _NUMBER):
                    _lower_word(out, kind, word, connector)
                    kind, word, remaining = _next_word(remaining)
                if kind not in (_INVALID, _CONNECTOR, _PUNCT):
                    out.append(connector)
    _lower_word(out, kind, word, connector)
    return "".join(out)


def pascal_case(text: str) -> str:
    """xstrings ``ToPascalCase`` (Sprig's ``camelcase``): connectors removed, each word's
    first letter upper case, an all-upper-case word lowered after its first letter."""
    if not text:
        return ""
    out: list[str] = []
    position = 0
    current = ""
    first_upper = False
    while position < len(text):
        current = text[position]
        position += 1
        if not is_connector(current):
            first_upper = is_upper(current)
            current = to_upper_char(current)
            break
        out.append(current)
    if position >= len(text):
        out.append(current)
        return "".join(out)
    while position < len(text):
        previous, current = current, text[position]
        position += 1
        if is_connector(current) and is_connector(previous):
            out.append(previous)
            continue
        if is_connector(previous):
            first_upper = is_upper(current)
            current = to_upper_char(current)
        else:
            if first_upper:
                if is_upper(current):
                    current = to_lower_char(current)
                else:
                    first_upper = False
            out.append(previous)
    out.append(current)
    return "".join(out)


# --- byte-counted functions -----------------------------------------------------------------


def trunc(count: int, text: str) -> str:
    """Sprig ``trunc``: the first ``count`` bytes, or the last ``-count`` bytes."""
    data = utf8(text)
    if count < 0 and len(data) + count > 0:
        return from_utf8(data[len(data) + count :])
    if count >= 0 and len(data) > count:
        return from_utf8(data[:count])
    return text


def substr(start: int, end: int, text: str) -> str | None:
    """Sprig ``substr`` over bytes; None where Go's slice expression would panic."""
    data = utf8(text)
    if start < 0:
        if not 0 <= end <= len(data):
            return None
        return from_utf8(data[:end])
    if end < 0 or end > len(data):
        if start > len(data):
            return None
        return from_utf8(data[start:])
    if start > end:
        return None
    return from_utf8(data[start:end])


def abbreviate(text: str, offset: int, width: int) -> str:
    """goutils ``AbbreviateFull`` counting bytes; its errors (width too small) give ""."""
    result = _abbreviate(utf8(text), offset, width)
    return text if result is None else from_utf8(result)


def _abbreviate(data: bytes, offset: int, width: int) -> bytes | None:
    """``AbbreviateFull`` over bytes; None when the text comes back unchanged."""
    if not data:
        return b""
    if width < 4:
        return b""
    if len(data) <= width:
        return None
    offset = min(offset, len(data))
    if len(data) - offset < width - 3:
        offset = len(data) - (width - 3)
    if offset <= 4:
        return data[: width - 3] + b"..."
    if width < 7:
        return b""
    if offset + width - 3 < len(data):
        rest = _abbreviate(data[offset:], 0, width - 3)
        return b"..." + (data[offset:] if rest is None else rest)
    return b"..." + data[len(data) - (width - 3) :]


def wrap(text: str, width: int, newline: str, wrap_long_words: bool) -> str:
    """goutils ``WrapCustom``: break lines at the last space before ``width`` bytes; a word
    longer than a line is cut (``wrap_long_words``) or kept whole."""
    data = utf8(text)
    if not data:
        return ""
    separator = utf8(newline or "\n")
    width = max(width, 1)
    out = bytearray()
    offset = 0
    while len(data) - offset > width:
        if data[offset] == 0x20:
            offset += 1
            continue
        end = width + offset + 1
        space = data.rfind(b" ", offset, end)
        if space >= offset:
            out += data[offset:space] + separator
            offset = space + 1
        elif wrap_long_words:
            out += data[offset : offset + width] + separator
            offset += width
        else:
            following = data.find(b" ", width + offset)
            if following == -1:
                out += data[offset:]
                offset = len(data)
            else:
                out += data[offset:following] + separator
                offset = following + 1
        check_length(len(out))
    out += data[offset:]
    return from_utf8(bytes(out))
