"""Parser of Go's ``text/template`` language into a small syntax tree (see :func:`parse`).

It follows Go's ``text/template/parse`` grammar: text and actions, pipelines of commands,
variable declarations and assignments, ``if``/``else if``/``else``, ``with``/``else with``,
``range`` (with ``else``, ``break``, ``continue``), parenthesised pipelines and field chains.
``define``, ``template`` and ``block`` are refused as unsupported.

Differences from Go, all made at parse time so a Story fails when it is loaded rather than
on a packet: BubuStack's data roots ``inputs``, ``steps``, ``packet`` and ``now`` may be
written without a leading dot; an unknown function is an error (as in Go); assigning to an
undeclared variable is an error (Go fails at execution); an integer constant must fit in
64 bits and complex constants are refused; nesting (control structures plus parentheses)
is bounded by :data:`MAX_DEPTH`.

Variables are resolved here to slots of one flat array per evaluation (``$`` is slot 0):
Go's scoping is lexical, so each declaration gets its own slot.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, TypeAlias

from . import lexer
from .errors import TemplateSyntaxError
from .lexer import Token

ROOTS: Final = frozenset({"inputs", "steps", "packet", "now"})
MAX_DEPTH: Final = 100
_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1


# --- Operands -------------------------------------------------------------------------------


@dataclass(slots=True)
class Field:
    """``.a.b``: fields of dot (map keys)."""

    pos: int
    names: tuple[str, ...]


@dataclass(slots=True)
class Variable:
    """``$x`` or ``$x.a.b``; ``slot`` is its place in the evaluation's variable array."""

    pos: int
    name: str
    slot: int
    names: tuple[str, ...] = ()


@dataclass(slots=True)
class Dot:
    """``.``: the current value."""

    pos: int


@dataclass(slots=True)
class Nil:
    """``nil``."""

    pos: int


@dataclass(slots=True)
class Const:
    """A literal: bool, int, float or string; ``text`` is how it was written."""

    pos: int
    value: Any
    text: str


@dataclass(slots=True)
class Identifier:
    """A function name, or one of the bare data roots (``root`` True)."""

    pos: int
    name: str
    root: bool


@dataclass(slots=True)
class Chain:
    """Fields of a computed value: ``(index .a 0).b`` or ``packet.metadata.lang``."""

    pos: int
    node: Operand
    names: tuple[str, ...]


@dataclass(slots=True)
class SubPipe:
    """A parenthesised pipeline used as an operand."""

    pos: int
    pipe: Pipeline


Operand: TypeAlias = Field | Variable | Dot | Nil | Const | Identifier | Chain | SubPipe


@dataclass(slots=True)
class Command:
    """One stage of a pipeline: an operand, possibly a function with arguments."""

    pos: int
    args: list[Operand]


@dataclass(slots=True)
class Pipeline:
    """Commands joined by ``|``, optionally declaring or assigning variables first."""

    pos: int
    decls: list[Variable]
    is_assign: bool
    cmds: list[Command]


# --- Statements -----------------------------------------------------------------------------


@dataclass(slots=True)
class Text:
    """Literal text (trim markers already applied)."""

    pos: int
    text: str


@dataclass(slots=True)
class Action:
    """``{{ pipeline }}``: prints the value unless the pipeline declares variables."""

    pos: int
    pipe: Pipeline


@dataclass(slots=True)
class If:
    """``if``/``else if``.../``else``: each branch is (condition, body)."""

    pos: int
    branches: list[tuple[Pipeline, list[Statement]]]
    else_body: list[Statement] | None


@dataclass(slots=True)
class With:
    """``with``/``else with``.../``else``: the first non-empty value becomes dot."""

    pos: int
    branches: list[tuple[Pipeline, list[Statement]]]
    else_body: list[Statement] | None


@dataclass(slots=True)
class Range:
    """``range`` over a list, a map (sorted keys) or an integer, with an optional ``else``."""

    pos: int
    pipe: Pipeline
    body: list[Statement]
    else_body: list[Statement] | None


@dataclass(slots=True)
class Break:
    """``{{break}}`` inside a range."""

    pos: int


@dataclass(slots=True)
class Continue:
    """``{{continue}}`` inside a range."""

    pos: int


Statement: TypeAlias = Text | Action | If | With | Range | Break | Continue


@dataclass(slots=True)
class ParsedTemplate:
    """A parsed template: its statements, the data roots it reads, its variable slot count."""

    body: list[Statement]
    roots: frozenset[str]
    slot_count: int
    source: str = field(repr=False)


# --- Literals -------------------------------------------------------------------------------

_DIGITS = r"[0-9](?:_?[0-9])*"
_HEX = r"[0-9a-fA-F]"
_INT_RE = re.compile(
    r"0[xX](?:_?[0-9a-fA-F])+|0[oO](?:_?[0-7])+|0[bB](?:_?[01])+|0(?:_?[0-7])*|[1-9](?:_?[0-9])*"
)
_EXP = rf"[eE][+-]?{_DIGITS}"
_FLOAT_RE = re.compile(
    rf"{_DIGITS}\.(?:{_DIGITS})?(?:{_EXP})?|\.{_DIGITS}(?:{_EXP})?|{_DIGITS}{_EXP}"
)
_HEX_FLOAT_RE = re.compile(
    rf"0[xX](?:(?:_?{_HEX})+(?:\.(?:{_HEX}(?:_?{_HEX})*)?)?|\.{_HEX}(?:_?{_HEX})*)"
    rf"[pP][+-]?{_DIGITS}"
)
_SIMPLE_ESCAPES: Final = {
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
    "\\": "\\",
}


def parse_number(text: str) -> int | float:
    """The value of a Go number literal as ``text/template`` uses it; ValueError if invalid.

    Integers (decimal, ``0x``, ``0o``, ``0b``, legacy octal ``0755``, ``_`` separators) must
    fit in 64 bits; a literal with ``.``, an exponent or a hex mantissa is a float.
    """
    sign = 1
    body = text
    if body[:1] in "+-":
        sign = -1 if body[0] == "-" else 1
        body = body[1:]
    if body.endswith("i"):
        raise ValueError(f"complex number {text!r} is not supported")
    if _INT_RE.fullmatch(body):
        digits = body.replace("_", "")
        prefix = digits[:2].lower()
        if prefix == "0x":
            value = int(digits[2:], 16)
        elif prefix == "0o":
            value = int(digits[2:], 8)
        elif prefix == "0b":
            value = int(digits[2:], 2)
        elif digits.startswith("0"):
            value = int(digits, 8)
        else:
            value = int(digits)
        value *= sign
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise ValueError(f"integer overflow: {text!r}")
        return value
    if _FLOAT_RE.fullmatch(body):
        number = float(body.replace("_", ""))
    elif _HEX_FLOAT_RE.fullmatch(body):
        number = float.fromhex(body.replace("_", ""))
    else:
        raise ValueError(f"illegal number syntax: {text!r}")
    if math.isinf(number):
        raise ValueError(f"number out of range: {text!r}")
    return sign * number


def _escape(body: str, index: int, quote: str, out: bytearray) -> int:
    """Decode the escape at ``body[index]`` (just after ``\\``) into ``out``; next index."""
    if index >= len(body):
        raise ValueError("invalid escape at end of literal")
    char = body[index]
    if char in _SIMPLE_ESCAPES:
        out += _SIMPLE_ESCAPES[char].encode()
        return index + 1
    if char == quote:
        out += quote.encode()
        return index + 1
    if char == "x":
        digits = body[index + 1 : index + 3]
        if len(digits) != 2 or not all(d in "0123456789abcdefABCDEF" for d in digits):
            raise ValueError("invalid \\x escape")
        out.append(int(digits, 16))
        return index + 3
    if char in "01234567":
        digits = body[index : index + 3]
        if len(digits) != 3 or not all(d in "01234567" for d in digits) or int(digits, 8) > 255:
            raise ValueError("invalid octal escape")
        out.append(int(digits, 8))
        return index + 3
    if char in "uU":
        size = 4 if char == "u" else 8
        digits = body[index + 1 : index + 1 + size]
        if len(digits) != size or not all(d in "0123456789abcdefABCDEF" for d in digits):
            raise ValueError(f"invalid \\{char} escape")
        code = int(digits, 16)
        if code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
            raise ValueError(f"invalid \\{char} escape: not a Unicode code point")
        out += chr(code).encode()
        return index + 1 + size
    raise ValueError(f"unknown escape sequence \\{char}")


def unquote_string(literal: str) -> str:
    """The value of a Go interpreted (``"..."``) or raw (backquoted) string literal."""
    if literal.startswith("`"):
        return literal[1:-1].replace("\r", "")
    body = literal[1:-1]
    if "\\" not in body:
        return body
    out = bytearray()
    index = 0
    while index < len(body):
        char = body[index]
        if char == "\\":
            index = _escape(body, index + 1, '"', out)
        else:
            out += char.encode("utf-8", "surrogatepass")
            index += 1
    return out.decode("utf-8", "replace")


def unquote_char(literal: str) -> int:
    """The code point of a Go character constant such as ``'a'`` or ``'\\n'``."""
    body = literal[1:-1]
    if not body:
        raise ValueError("empty character constant")
    if body[0] != "\\":
        if len(body) != 1:
            raise ValueError(f"malformed character constant: {literal}")
        return ord(body)
    out = bytearray()
    end = _escape(body, 1, "'", out)
    if end != len(body):
        raise ValueError(f"malformed character constant: {literal}")
    if body[1] in "x01234567":
        return out[0]
    return ord(out.decode("utf-8"))


# --- Parser ---------------------------------------------------------------------------------

_OPERAND_START: Final = frozenset(
    {
        lexer.BOOL,
        lexer.CHAR_CONST,
        lexer.DOT,
        lexer.FIELD,
        lexer.IDENT,
        lexer.NUMBER,
        lexer.NIL,
        lexer.RAW_STRING,
        lexer.STRING,
        lexer.VARIABLE,
        lexer.LPAREN,
    }
)


def _describe(token: Token) -> str:
    if token.kind == lexer.EOF:
        return "EOF"
    if token.kind == lexer.RIGHT:
        return '"}}"'
    if token.kind == lexer.KEYWORD:
        return f"<{token.value}>"
    if token.kind == lexer.SPACE:
        return "space"
    return f"{token.kind} {token.value!r}"


class _Parser:
    def __init__(
        self, source: str, name: str, has_function: Callable[[str], bool], tokens: list[Token]
    ) -> None:
        self.source = source
        self.name = name
        self.has_function = has_function
        self.tokens = tokens
        self.index = 0
        self.depth = 0
        self.range_depth = 0
        self.scope: list[tuple[str, int]] = [("$", 0)]
        self.slot_count = 1
        self.roots: set[str] = set()
        self.dot_is_root = True

    # Errors and token access.

    def error(self, pos: int, message: str) -> TemplateSyntaxError:
        line, column = lexer.line_column(self.source, pos)
        return TemplateSyntaxError(self.name, line, column, message)

    def next(self) -> Token:
        token = self.tokens[self.index]
        if token.kind == lexer.ERROR:
            raise self.error(token.pos, token.value)
        if token.kind != lexer.EOF:
            self.index += 1
        return token

    def backup(self) -> None:
        self.index -= 1

    def peek(self) -> Token:
        token = self.tokens[self.index]
        if token.kind == lexer.ERROR:
            raise self.error(token.pos, token.value)
        return token

    def next_non_space(self) -> Token:
        token = self.next()
        while token.kind == lexer.SPACE:
            token = self.next()
        return token

    def peek_non_space(self) -> Token:
        index = self.index
        token = self.next_non_space()
        self.index = index
        return token

    def expect_right(self, context: str) -> None:
        token = self.next_non_space()
        if token.kind != lexer.RIGHT:
            raise self.error(token.pos, f"unexpected {_describe(token)} in {context}")

    def enter(self, pos: int) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.error(pos, f"template nested too deeply (more than {MAX_DEPTH} levels)")

    # Statements.

    def parse(self) -> list[Statement]:
        body, terminator = self.statements()
        if terminator.kind != lexer.EOF:
            raise self.error(terminator.pos, f"unexpected {{{{{terminator.value}}}}}")
        return body

    def statements(self) -> tuple[list[Statement], Token]:
        """Statements up to ``{{end}}``, ``{{else ...`` or EOF, returned as the terminator.

        For ``end`` the whole action is consumed; for ``else`` only the keyword.
        """
        body: list[Statement] = []
        while True:
            token = self.next()
            if token.kind == lexer.TEXT:
                body.append(Text(token.pos, token.value))
            elif token.kind == lexer.EOF:
                return body, token
            elif token.kind == lexer.LEFT:
                word = self.peek_non_space()
                if word.kind != lexer.KEYWORD:
                    pipe = self.pipeline("command", lexer.RIGHT)
                    body.append(Action(token.pos, pipe))
                    continue
                self.next_non_space()
                if word.value == "end":
                    self.expect_right("end")
                    return body, word
                if word.value == "else":
                    return body, word
                body.append(self.control(word))
            else:  # pragma: no cover - the lexer yields only TEXT, LEFT, EOF outside actions
                raise self.error(token.pos, f"unexpected {_describe(token)}")

    def control(self, word: Token) -> Statement:
        keyword = word.value
        if keyword in ("if", "with"):
            return self.if_or_with(word)
        if keyword == "range":
            return self.range(word)
        if keyword in ("break", "continue"):
            if self.range_depth == 0:
                raise self.error(word.pos, f"{{{{{keyword}}}}} outside {{{{range}}}}")
            self.expect_right(keyword)
            return Break(word.pos) if keyword == "break" else Continue(word.pos)
        raise self.error(word.pos, f"{{{{{keyword}}}}} is not supported (no define/template/block)")

    def if_or_with(self, word: Token) -> Statement:
        keyword = word.value
        self.enter(word.pos)
        mark = len(self.scope)
        outer_root = self.dot_is_root
        branches: list[tuple[Pipeline, list[Statement]]] = []
        else_body: list[Statement] | None = None
        while True:
            pipe = self.pipeline(keyword, lexer.RIGHT)
            if keyword == "with":
                self.dot_is_root = False
            body, terminator = self.statements()
            self.dot_is_root = outer_root
            branches.append((pipe, body))
            if terminator.kind == lexer.EOF:
                raise self.error(terminator.pos, f"unexpected EOF: {{{{{keyword}}}}} not closed")
            if terminator.value == "end":
                break
            following = self.peek_non_space()
            if following.kind == lexer.KEYWORD and following.value in ("if", "with"):
                if following.value != keyword:
                    raise self.error(
                        following.pos,
                        f"{{{{else {following.value}}}}} is only allowed in "
                        f"{{{{{following.value}}}}}, not in {{{{{keyword}}}}}",
                    )
                self.next_non_space()
                continue
            self.expect_right("else")
            else_body, terminator = self.statements()
            if terminator.kind == lexer.EOF:
                raise self.error(terminator.pos, f"unexpected EOF: {{{{{keyword}}}}} not closed")
            if terminator.value != "end":
                raise self.error(terminator.pos, "expected {{end}}; found {{else}}")
            break
        del self.scope[mark:]
        self.depth -= 1
        if keyword == "if":
            return If(word.pos, branches, else_body)
        return With(word.pos, branches, else_body)

    def range(self, word: Token) -> Statement:
        self.enter(word.pos)
        mark = len(self.scope)
        outer_root = self.dot_is_root
        pipe = self.pipeline("range", lexer.RIGHT)
        self.range_depth += 1
        self.dot_is_root = False
        body, terminator = self.statements()
        self.dot_is_root = outer_root
        self.range_depth -= 1
        else_body: list[Statement] | None = None
        if terminator.kind == lexer.EOF:
            raise self.error(terminator.pos, "unexpected EOF: {{range}} not closed")
        if terminator.value == "else":
            following = self.peek_non_space()
            if following.kind == lexer.KEYWORD and following.value in ("if", "with"):
                raise self.error(
                    following.pos,
                    f"{{{{else {following.value}}}}} is only allowed in "
                    f"{{{{{following.value}}}}}, not in {{{{range}}}}",
                )
            self.expect_right("else")
            else_body, terminator = self.statements()
            if terminator.kind == lexer.EOF:
                raise self.error(terminator.pos, "unexpected EOF: {{range}} not closed")
            if terminator.value != "end":
                raise self.error(terminator.pos, "expected {{end}}; found {{else}}")
        del self.scope[mark:]
        self.depth -= 1
        return Range(word.pos, pipe, body, else_body)

    # Pipelines.

    def pipeline(self, context: str, end: str) -> Pipeline:
        start = self.peek_non_space()
        declared: list[Token] = []
        is_assign = False
        if start.kind == lexer.VARIABLE:
            index = self.index
            self.next_non_space()
            following = self.peek_non_space()
            if following.kind in (lexer.ASSIGN, lexer.DECLARE):
                self.next_non_space()
                declared.append(start)
                is_assign = following.kind == lexer.ASSIGN
            elif following.kind == lexer.CHAR and following.value == ",":
                self.next_non_space()
                declared.append(start)
                if context != "range":
                    raise self.error(following.pos, f"too many declarations in {context}")
                second = self.next_non_space()
                if second.kind != lexer.VARIABLE:
                    raise self.error(second.pos, "range can only initialize variables")
                operator = self.next_non_space()
                if operator.kind not in (lexer.ASSIGN, lexer.DECLARE):
                    raise self.error(
                        operator.pos,
                        f"expected := or = after {second.value}, found {_describe(operator)}",
                    )
                declared.append(second)
                is_assign = operator.kind == lexer.ASSIGN
            else:
                self.index = index
        decls = [self.declare(token, is_assign) for token in declared]
        cmds: list[Command] = []
        pipe_token: Token | None = None
        while True:
            token = self.next_non_space()
            if token.kind == end:
                if pipe_token is not None:
                    raise self.error(pipe_token.pos, "missing command after |")
                break
            if token.kind not in _OPERAND_START:
                raise self.error(token.pos, f"unexpected {_describe(token)} in {context}")
            self.backup()
            command, pipe_token = self.command()
            cmds.append(command)
        if not cmds:
            raise self.error(start.pos, f"missing value for {context}")
        self.check_stages(cmds)
        if not is_assign:
            # Declared names become visible only after the pipeline (its commands see the
            # variables as they were before it), as in Go's execution.
            for token, variable in zip(declared, decls, strict=True):
                self.scope.append((token.value, variable.slot))
        return Pipeline(start.pos, decls, is_assign, cmds)

    def declare(self, token: Token, is_assign: bool) -> Variable:
        if token.value == "$":
            raise self.error(token.pos, "cannot declare or assign $")
        if is_assign:
            return Variable(token.pos, token.value, self.resolve(token))
        slot = self.slot_count
        self.slot_count += 1
        return Variable(token.pos, token.value, slot)

    def resolve(self, token: Token) -> int:
        for name, slot in reversed(self.scope):
            if name == token.value:
                return slot
        raise self.error(token.pos, f"undefined variable {token.value!r}")

    def check_stages(self, cmds: list[Command]) -> None:
        for stage, command in enumerate(cmds, start=1):
            first = command.args[0]
            if (
                isinstance(first, Identifier)
                and first.root
                and (len(command.args) > 1 or stage > 1)
            ):
                raise self.error(
                    first.pos,
                    f"{first.name} is a data root, not a function: it takes no arguments",
                )
            if stage > 1 and isinstance(first, Const | Dot | Nil):
                raise self.error(command.pos, f"non executable command in pipeline stage {stage}")

    def command(self) -> tuple[Command, Token | None]:
        """One command; also returns the ``|`` token that ended it, if one did."""
        args: list[Operand] = []
        pos = self.peek_non_space().pos
        ended_by: Token | None = None
        while True:
            while self.peek().kind == lexer.SPACE:
                self.next()
            operand = self.operand()
            if operand is not None:
                args.append(operand)
            token = self.next()
            if token.kind == lexer.SPACE:
                continue
            if token.kind in (lexer.RIGHT, lexer.RPAREN):
                self.backup()
            elif token.kind == lexer.PIPE:
                ended_by = token
            else:
                raise self.error(token.pos, f"unexpected {_describe(token)} in operand")
            break
        if not args:
            raise self.error(pos, "empty command")
        return Command(pos, args), ended_by

    def operand(self) -> Operand | None:
        node = self.term()
        if node is None or self.peek().kind != lexer.FIELD:
            return node
        chain_pos = self.peek().pos
        names: list[str] = []
        while self.peek().kind == lexer.FIELD:
            names.append(self.next().value[1:])
        if isinstance(node, Field):
            node = Field(node.pos, node.names + tuple(names))
            self.note_field(node)
            return node
        if isinstance(node, Variable):
            node = Variable(node.pos, node.name, node.slot, node.names + tuple(names))
            self.note_variable(node)
            return node
        if isinstance(node, Const | Nil | Dot):
            raise self.error(chain_pos, f"unexpected . after term {self.term_text(node)!r}")
        return Chain(node.pos, node, tuple(names))

    def term_text(self, node: Const | Nil | Dot) -> str:
        if isinstance(node, Const):
            return node.text
        return "nil" if isinstance(node, Nil) else "."

    def term(self) -> Operand | None:
        token = self.next_non_space()
        kind = token.kind
        if kind == lexer.IDENT:
            if token.value in ROOTS:
                self.roots.add(token.value)
                return Identifier(token.pos, token.value, True)
            if not self.has_function(token.value):
                raise self.error(token.pos, f"function {token.value!r} not defined")
            return Identifier(token.pos, token.value, False)
        if kind == lexer.DOT:
            if self.dot_is_root:
                self.roots.update(ROOTS)
            return Dot(token.pos)
        if kind == lexer.NIL:
            return Nil(token.pos)
        if kind == lexer.VARIABLE:
            variable = Variable(token.pos, token.value, self.resolve(token))
            if self.peek().kind != lexer.FIELD:  # else operand() notes it with its fields
                self.note_variable(variable)
            return variable
        if kind == lexer.FIELD:
            node = Field(token.pos, (token.value[1:],))
            self.note_field(node)
            return node
        if kind == lexer.BOOL:
            return Const(token.pos, token.value == "true", token.value)
        if kind in (lexer.NUMBER, lexer.CHAR_CONST):
            try:
                if kind == lexer.NUMBER:
                    number: int | float = parse_number(token.value)
                else:
                    number = unquote_char(token.value)
            except ValueError as exc:
                raise self.error(token.pos, str(exc)) from None
            return Const(token.pos, number, token.value)
        if kind in (lexer.STRING, lexer.RAW_STRING):
            try:
                text = unquote_string(token.value)
            except ValueError as exc:
                raise self.error(token.pos, f"invalid string {token.value}: {exc}") from None
            return Const(token.pos, text, token.value)
        if kind == lexer.LPAREN:
            self.enter(token.pos)
            pipe = self.pipeline("parenthesized pipeline", lexer.RPAREN)
            self.depth -= 1
            return SubPipe(token.pos, pipe)
        self.backup()
        return None

    def note_field(self, node: Field) -> None:
        if self.dot_is_root and node.names[0] in ROOTS:
            self.roots.add(node.names[0])

    def note_variable(self, node: Variable) -> None:
        if node.slot != 0:
            return
        if not node.names:
            self.roots.update(ROOTS)
        elif node.names[0] in ROOTS:
            self.roots.add(node.names[0])


def parse(source: str, name: str, has_function: Callable[[str], bool]) -> ParsedTemplate:
    """Parse ``source``; raises TemplateSyntaxError naming ``name`` and the 1-based position.

    ``has_function`` says whether an identifier names a known function.
    """
    parser = _Parser(source, name, has_function, lexer.tokenize(source))
    body = parser.parse()
    return ParsedTemplate(body, frozenset(parser.roots), parser.slot_count, source)
