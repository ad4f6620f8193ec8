"""Tokens of Go's ``text/template`` language, scanned the way Go's lexer scans them.

The text between actions becomes ``TEXT`` tokens; an action ``{{ ... }}`` becomes ``LEFT``,
its items, then ``RIGHT``. Trim markers (``{{- `` and `` -}}``) are applied here: the
whitespace they remove never reaches the parser. Comments (``{{/* ... */}}``) produce no
token. A scanning error does not raise: it ends the token list with one ``ERROR`` token whose
value is the message, so the parser reports errors in source order.

Positions are offsets into the source (see :func:`line_column`).
"""

from __future__ import annotations

from typing import Final, NamedTuple


class Token(NamedTuple):
    """One scanned item: its kind (a ``str`` constant below), its text, its source offset."""

    kind: str
    value: str
    pos: int


TEXT: Final = "text"
LEFT: Final = "{{"
RIGHT: Final = "}}"
SPACE: Final = "space"
IDENT: Final = "identifier"
FIELD: Final = "field"
VARIABLE: Final = "variable"
DOT: Final = "."
STRING: Final = "string"
RAW_STRING: Final = "raw string"
CHAR_CONST: Final = "character constant"
NUMBER: Final = "number"
BOOL: Final = "bool"
NIL: Final = "nil"
PIPE: Final = "|"
LPAREN: Final = "("
RPAREN: Final = ")"
DECLARE: Final = ":="
ASSIGN: Final = "="
CHAR: Final = "char"
KEYWORD: Final = "keyword"
EOF: Final = "EOF"
ERROR: Final = "error"

KEYWORDS: Final = frozenset(
    {"block", "break", "continue", "define", "else", "end", "if", "range", "template", "with"}
)
_SPACES: Final = " \t\r\n"
_OPEN: Final = "{{"
_CLOSE: Final = "}}"


def line_column(source: str, offset: int) -> tuple[int, int]:
    """1-based line and column (in characters) of ``offset`` in ``source``."""
    offset = max(0, min(offset, len(source)))
    line = source.count("\n", 0, offset) + 1
    column = offset - (source.rfind("\n", 0, offset) + 1) + 1
    return line, column


def _is_alnum(char: str) -> bool:
    return char == "_" or char.isalnum()


class _Scanner:
    """Single-pass scanner; ``tokens`` is complete (ending in EOF or ERROR) after ``run``."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.tokens: list[Token] = []
        self.trim_next_text = False
        self.paren_depth = 0

    def fail(self, pos: int, message: str) -> None:
        self.tokens.append(Token(ERROR, message, pos))

    def run(self) -> list[Token]:
        text = self.text
        while True:
            start = self.pos
            found = text.find(_OPEN, start)
            end = len(text) if found < 0 else found
            trim_left = found >= 0 and _has_left_trim(text, found + 2)
            chunk = text[start:end]
            if self.trim_next_text:
                chunk = chunk.lstrip(_SPACES)
                self.trim_next_text = False
            if trim_left:
                chunk = chunk.rstrip(_SPACES)
            if chunk:
                self.tokens.append(Token(TEXT, chunk, start))
            if found < 0:
                self.tokens.append(Token(EOF, "", len(text)))
                return self.tokens
            if not self.action(found, trim_left):
                return self.tokens

    def action(self, start: int, trim_left: bool) -> bool:
        """Scan one action starting at ``start`` (its ``{{``); False after an error."""
        text = self.text
        pos = start + 2 + (2 if trim_left else 0)
        if text.startswith("/*", pos):
            return self.comment(start, pos)
        self.tokens.append(Token(LEFT, _OPEN, start))
        self.pos = pos
        self.paren_depth = 0
        return self.inside_action(start)

    def comment(self, start: int, pos: int) -> bool:
        text = self.text
        close = text.find("*/", pos + 2)
        if close < 0:
            self.fail(start, "unclosed comment")
            return False
        pos = close + 2
        at_delim, trim = _at_right_delim(text, pos)
        if not at_delim:
            self.fail(pos, "comment ends before closing delimiter")
            return False
        self.pos = pos + (4 if trim else 2)
        self.trim_next_text = trim
        return True

    def inside_action(self, action_start: int) -> bool:
        text = self.text
        size = len(text)
        append = self.tokens.append
        while True:
            pos = self.pos
            at_delim, trim = _at_right_delim(text, pos)
            if at_delim:
                if self.paren_depth > 0:
                    self.fail(pos, "unclosed left paren")
                    return False
                append(Token(RIGHT, _CLOSE, pos))
                self.pos = pos + (4 if trim else 2)
                self.trim_next_text = trim
                return True
            if pos >= size:
                self.fail(action_start, "unclosed action")
                return False
            char = text[pos]
            if char in _SPACES:
                end = pos
                while end < size and text[end] in _SPACES:
                    if _at_right_delim(text, end)[1]:
                        break
                    end += 1
                if end > pos:
                    append(Token(SPACE, text[pos:end], pos))
                    self.pos = end
                continue
            if not self.item(char, pos):
                return False

    def item(self, char: str, pos: int) -> bool:
        text = self.text
        append = self.tokens.append
        if char == "=":
            append(Token(ASSIGN, "=", pos))
            self.pos = pos + 1
        elif char == ":":
            if not text.startswith(":=", pos):
                self.fail(pos, "expected :=")
                return False
            append(Token(DECLARE, ":=", pos))
            self.pos = pos + 2
        elif char == "|":
            append(Token(PIPE, "|", pos))
            self.pos = pos + 1
        elif char == '"':
            return self.quoted(pos)
        elif char == "`":
            close = text.find("`", pos + 1)
            if close < 0:
                self.fail(pos, "unterminated raw quoted string")
                return False
            append(Token(RAW_STRING, text[pos : close + 1], pos))
            self.pos = close + 1
        elif char == "'":
            return self.char_constant(pos)
        elif char == "$":
            return self.field_or_variable(pos, VARIABLE)
        elif char == ".":
            if pos + 1 < len(text) and text[pos + 1].isdigit() and text[pos + 1].isascii():
                return self.number(pos)
            return self.field_or_variable(pos, FIELD)
        elif char in "+-" or ("0" <= char <= "9"):
            return self.number(pos)
        elif char.isalpha() or char == "_":
            return self.identifier(pos)
        elif char == "(":
            append(Token(LPAREN, "(", pos))
            self.paren_depth += 1
            self.pos = pos + 1
        elif char == ")":
            self.paren_depth -= 1
            if self.paren_depth < 0:
                self.fail(pos, "unexpected right paren")
                return False
            append(Token(RPAREN, ")", pos))
            self.pos = pos + 1
        elif char.isascii() and char.isprintable():
            append(Token(CHAR, char, pos))
            self.pos = pos + 1
        else:
            self.fail(pos, f"unrecognized character in action: U+{ord(char):04X}")
            return False
        return True

    def quoted(self, pos: int) -> bool:
        text = self.text
        end = pos + 1
        while True:
            if end >= len(text) or text[end] == "\n":
                self.fail(pos, "unterminated quoted string")
                return False
            char = text[end]
            if char == "\\":
                end += 2
                continue
            if char == '"':
                break
            end += 1
        self.tokens.append(Token(STRING, text[pos : end + 1], pos))
        self.pos = end + 1
        return True

    def char_constant(self, pos: int) -> bool:
        text = self.text
        end = pos + 1
        while True:
            if end >= len(text) or text[end] == "\n":
                self.fail(pos, "unterminated character constant")
                return False
            char = text[end]
            if char == "\\":
                end += 2
                continue
            if char == "'":
                break
            end += 1
        self.tokens.append(Token(CHAR_CONST, text[pos : end + 1], pos))
        self.pos = end + 1
        return True

    def field_or_variable(self, pos: int, kind: str) -> bool:
        text = self.text
        end = pos + 1
        while end < len(text) and _is_alnum(text[end]):
            end += 1
        if end == pos + 1:
            # Nothing follows: "." (dot) or "$" (the root variable).
            if not self.at_terminator(end):
                self.fail(end, f"bad character U+{ord(text[end]):04X} after {text[pos]!r}")
                return False
            self.tokens.append(Token(DOT if kind == FIELD else VARIABLE, text[pos:end], pos))
        else:
            if not self.at_terminator(end):
                self.fail(end, f"bad character U+{ord(text[end]):04X}")
                return False
            self.tokens.append(Token(kind, text[pos:end], pos))
        self.pos = end
        return True

    def identifier(self, pos: int) -> bool:
        text = self.text
        end = pos + 1
        while end < len(text) and _is_alnum(text[end]):
            end += 1
        if not self.at_terminator(end):
            self.fail(end, f"bad character U+{ord(text[end]):04X}")
            return False
        word = text[pos:end]
        if word in KEYWORDS:
            kind = KEYWORD
        elif word in ("true", "false"):
            kind = BOOL
        elif word == "nil":
            kind = NIL
        else:
            kind = IDENT
        self.tokens.append(Token(kind, word, pos))
        self.pos = end
        return True

    def number(self, pos: int) -> bool:
        text = self.text
        size = len(text)
        end = pos
        if end < size and text[end] in "+-":
            end += 1
        digits = "0123456789_"
        exponent = "eE"
        if text.startswith("0", end) and end + 1 < size and text[end + 1] in "xXoObB":
            prefix = text[end + 1].lower()
            end += 2
            digits = {"x": "0123456789abcdefABCDEF_", "o": "01234567_", "b": "01_"}[prefix]
            exponent = "pP" if prefix == "x" else ""
        while end < size and text[end] in digits:
            end += 1
        if end < size and text[end] == ".":
            end += 1
            while end < size and text[end] in digits:
                end += 1
        if exponent and end < size and text[end] in exponent:
            end += 1
            if end < size and text[end] in "+-":
                end += 1
            while end < size and text[end] in "0123456789_":
                end += 1
        if end < size and text[end] == "i":
            end += 1
        if end < size and _is_alnum(text[end]):
            self.fail(pos, f"bad number syntax: {text[pos : end + 1]!r}")
            return False
        if end == pos or text[pos:end] in ("+", "-", "."):
            self.fail(pos, f"bad number syntax: {text[pos : end + 1]!r}")
            return False
        self.tokens.append(Token(NUMBER, text[pos:end], pos))
        self.pos = end
        return True

    def at_terminator(self, pos: int) -> bool:
        """Go's rule: an identifier, field or variable ends at space, ``. , | : ( )`` or ``}}``."""
        text = self.text
        if pos >= len(text):
            return True
        char = text[pos]
        if char in _SPACES or char in ".,|:()":
            return True
        return text.startswith(_CLOSE, pos)


def _has_left_trim(text: str, pos: int) -> bool:
    """``{{`` followed by ``-`` and one space character is a left trim marker."""
    return pos + 1 < len(text) and text[pos] == "-" and text[pos + 1] in _SPACES


def _at_right_delim(text: str, pos: int) -> tuple[bool, bool]:
    """Whether ``}}`` starts at ``pos`` (or `` -}}``, a right trim marker): (at, trimmed)."""
    if (
        pos + 1 < len(text)
        and text[pos] in _SPACES
        and text[pos + 1] == "-"
        and text.startswith(_CLOSE, pos + 2)
    ):
        return True, True
    return text.startswith(_CLOSE, pos), False


def tokenize(text: str) -> list[Token]:
    """Scan ``text``; the list ends with an ``EOF`` token, or an ``ERROR`` token on bad input."""
    return _Scanner(text).run()
