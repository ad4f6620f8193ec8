"""Compiles a parsed template into nested closures, once, and runs them per evaluation.

Every node becomes a small Python function: expressions ``(state, dot) -> value``, later
pipeline stages ``(state, dot, piped) -> value``, statements ``(state, dot, out) -> None``.
Nothing is looked up by name at evaluation time: functions, variable slots, field names and
error positions are bound when compiling.

Evaluation semantics (Go's ``text/template`` with BubuStack's choices):

- a missing map key, and any field of nil, is nil; nil prints as the empty string (Go prints
  ``<no value>`` for a missing key of a ``map[string]any``); a field of a string, number,
  bool or list is a ``type_error``;
- ``and``/``or`` short-circuit and return the deciding argument (Go 1.18);
- ``range`` iterates lists, maps in sorted key order, and integers ``0..n-1``; nil runs the
  ``else`` branch; anything else is a ``type_error``;
- the step budget counts every command, every control statement and every range iteration,
  plus one step per KiB of any string a function returns;
- the output cap counts every character emitted (and, for ``value``, a string result).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, Final, TypeAlias

from . import lexer
from .builtins import Failure
from .errors import FunctionError, TemplateEvalError
from .parser import (
    Action,
    Break,
    Chain,
    Command,
    Const,
    Dot,
    Field,
    Identifier,
    If,
    Nil,
    Operand,
    ParsedTemplate,
    Pipeline,
    Range,
    Statement,
    SubPipe,
    Text,
    Variable,
    With,
)
from .values import go_string, go_type, truth


class State:
    """Mutable state of one evaluation: data root, variables, steps left, output size."""

    __slots__ = ("cap", "data", "size", "slots", "steps")

    def __init__(self, data: Mapping[str, Any], budget: int, cap: int) -> None:
        self.data = data
        self.steps = budget
        self.cap = cap
        self.size = 0
        self.slots: list[Any] = []


Expr: TypeAlias = Callable[[State, Any], Any]
Stage: TypeAlias = Callable[[State, Any, Any], Any]
Stmt: TypeAlias = Callable[[State, Any, list[str]], None]
Functions: TypeAlias = Mapping[str, Callable[..., Any]]


class _Break(Exception):
    """``{{break}}``: leaves the innermost range."""


class _Continue(Exception):
    """``{{continue}}``: next iteration of the innermost range."""


def budget_exhausted() -> TemplateEvalError:
    """The error of an evaluation that ran out of steps."""
    return TemplateEvalError("budget", "evaluation exceeded its step budget")


def output_too_large(state: State) -> TemplateEvalError:
    """The error of an evaluation whose output passed the cap."""
    return TemplateEvalError("output_too_large", f"output longer than {state.cap} characters")


def text_of(value: Any) -> str:
    """How an action prints a value: nil as "", strings as is, the rest as Go's ``%v``."""
    if type(value) is str:
        return value
    if value is None:
        return ""
    return go_string(value)


def _field(value: Any, name: str) -> Any:
    kind = type(value)
    if kind is dict or kind is MappingProxyType:  # the hub hands read-only maps
        return value.get(name)
    if value is None:
        return None
    if isinstance(value, Mapping):
        return value.get(name)
    raise Failure("type_error", f"can't evaluate field {name} in type {go_type(value)}")


def _located(exc: Failure, where: str) -> TemplateEvalError:
    return TemplateEvalError(exc.reason, f"{exc.message} (at {where})")


def _call_failed(exc: Exception, name: str, where: str) -> TemplateEvalError:
    if isinstance(exc, Failure):
        return TemplateEvalError(exc.reason, f"{name}: {exc.message} (at {where})")
    if isinstance(exc, FunctionError):
        return TemplateEvalError("function_error", f"{name}: {exc} (at {where})")
    if isinstance(exc, RecursionError):
        return TemplateEvalError("function_error", f"{name}: nested too deeply (at {where})")
    detail = str(exc) or type(exc).__name__
    return TemplateEvalError(
        "function_error", f"{name}: {type(exc).__name__}: {detail} (at {where})"
    )


#: A string a function returns costs one step per this many characters beyond the call's
#: own step, so building big strings (``printf "%999999d"``) exhausts the budget too.
_FREE_LENGTH: Final = 1024


def _charge(state: State, length: int) -> None:
    state.steps -= length // _FREE_LENGTH
    if state.steps < 0:
        raise budget_exhausted()


def _noop(state: State, dot: Any, out: list[str]) -> None:
    return None


_SHORT_CIRCUIT: Final = {"and": False, "or": True}


class _Compiler:
    """Turns a :class:`ParsedTemplate` into closures (see the module docstring)."""

    def __init__(self, parsed: ParsedTemplate, name: str, functions: Functions) -> None:
        self.parsed = parsed
        self.name = name
        self.functions = functions

    def where(self, pos: int) -> str:
        line, column = lexer.line_column(self.parsed.source, pos)
        return f"{self.name}:{line}:{column}"

    # Statements.

    def body(self, statements: Sequence[Statement]) -> Stmt:
        compiled = tuple(self.statement(statement) for statement in statements)
        if not compiled:
            return _noop
        if len(compiled) == 1:
            return compiled[0]

        def run(state: State, dot: Any, out: list[str]) -> None:
            for statement in compiled:
                statement(state, dot, out)

        return run

    def statement(self, node: Statement) -> Stmt:
        if isinstance(node, Text):
            return self.text(node.text)
        if isinstance(node, Action):
            return self.action(node)
        if isinstance(node, If | With):
            return self.branches(node)
        if isinstance(node, Range):
            return self.range(node)
        if isinstance(node, Break):
            return _break
        return _continue

    def text(self, text: str) -> Stmt:
        size = len(text)

        def run(state: State, dot: Any, out: list[str]) -> None:
            out.append(text)
            state.size += size
            if state.size > state.cap:
                raise output_too_large(state)

        return run

    def action(self, node: Action) -> Stmt:
        pipe = self.pipeline(node.pipe)
        if node.pipe.decls:

            def assign(state: State, dot: Any, out: list[str]) -> None:
                pipe(state, dot)

            return assign

        def run(state: State, dot: Any, out: list[str]) -> None:
            value = pipe(state, dot)
            text = value if type(value) is str else text_of(value)
            out.append(text)
            state.size += len(text)
            if state.size > state.cap:
                raise output_too_large(state)

        return run

    def branches(self, node: If | With) -> Stmt:
        arms = tuple((self.pipeline(pipe), self.body(body)) for pipe, body in node.branches)
        otherwise = self.body(node.else_body) if node.else_body is not None else _noop
        moves_dot = isinstance(node, With)

        def run(state: State, dot: Any, out: list[str]) -> None:
            state.steps -= 1
            if state.steps < 0:
                raise budget_exhausted()
            for condition, body in arms:
                value = condition(state, dot)
                if truth(value):
                    body(state, value if moves_dot else dot, out)
                    return
            otherwise(state, dot, out)

        return run

    def range(self, node: Range) -> Stmt:
        pipe = self.pipeline(node.pipe)
        body = self.body(node.body)
        otherwise = self.body(node.else_body) if node.else_body is not None else _noop
        decls = node.pipe.decls
        key_slot = decls[0].slot if len(decls) == 2 else None
        elem_slot = decls[-1].slot if decls else None
        where = self.where(node.pos)

        def iterate(state: State, pairs: Any, out: list[str]) -> None:
            slots = state.slots
            for key, elem in pairs:
                state.steps -= 1
                if state.steps < 0:
                    raise budget_exhausted()
                if elem_slot is not None:
                    slots[elem_slot] = elem
                    if key_slot is not None:
                        slots[key_slot] = key
                try:
                    body(state, elem, out)
                except _Continue:
                    continue
                except _Break:
                    break

        def run(state: State, dot: Any, out: list[str]) -> None:
            state.steps -= 1
            if state.steps < 0:
                raise budget_exhausted()
            value = pipe(state, dot)
            kind = type(value)
            if kind is list or (isinstance(value, Sequence) and not isinstance(value, str | bytes)):
                if not value:
                    otherwise(state, dot, out)
                    return
                iterate(state, enumerate(value), out)
            elif kind is dict or isinstance(value, Mapping):
                if not value:
                    otherwise(state, dot, out)
                    return
                try:
                    keys = sorted(value)
                except TypeError:
                    keys = sorted(value, key=go_string)
                iterate(state, ((key, value[key]) for key in keys), out)
            elif isinstance(value, int) and not isinstance(value, bool):
                if key_slot is not None:
                    raise TemplateEvalError(
                        "type_error",
                        f"can't use {value} to iterate over more than one variable (at {where})",
                    )
                if value <= 0:
                    otherwise(state, dot, out)
                    return
                iterate(state, ((number, number) for number in range(value)), out)
            elif value is None:
                otherwise(state, dot, out)
            else:
                shown = go_string(value)
                if len(shown) > 40:
                    shown = shown[:40] + "..."
                raise TemplateEvalError(
                    "type_error", f"range can't iterate over {shown} (at {where})"
                )

        return run

    # Pipelines and commands.

    def pipeline(self, node: Pipeline) -> Expr:
        first = self.command(node.cmds[0])
        rest = tuple(self.stage(command) for command in node.cmds[1:])
        core: Expr
        if not rest:
            core = first
        else:

            def chained(state: State, dot: Any) -> Any:
                value = first(state, dot)
                for stage in rest:
                    value = stage(state, dot, value)
                return value

            core = chained
        slots = tuple(variable.slot for variable in node.decls)
        if not slots:
            return core
        if len(slots) == 1:
            slot = slots[0]

            def declare_one(state: State, dot: Any) -> Any:
                value = core(state, dot)
                state.slots[slot] = value
                return value

            return declare_one

        def declare(state: State, dot: Any) -> Any:
            value = core(state, dot)
            for slot in slots:
                state.slots[slot] = value
            return value

        return declare

    def command(self, node: Command) -> Expr:
        """A first pipeline stage: nothing is piped into it."""
        first = node.args[0]
        if isinstance(first, Identifier) and not first.root:
            return self.call(first, [self.operand(arg) for arg in node.args[1:]])
        if len(node.args) > 1:
            return self.not_a_function(first)
        if isinstance(first, Nil):
            where = self.where(first.pos)

            def nil_command(state: State, dot: Any) -> Any:
                raise TemplateEvalError("type_error", f"nil is not a command (at {where})")

            return nil_command
        operand = self.operand(first)

        def counted(state: State, dot: Any) -> Any:
            state.steps -= 1
            if state.steps < 0:
                raise budget_exhausted()
            return operand(state, dot)

        return counted

    def stage(self, node: Command) -> Stage:
        """A later pipeline stage: the previous value is its last argument."""
        first = node.args[0]
        if isinstance(first, Identifier) and not first.root:
            return self.call_piped(first, [self.operand(arg) for arg in node.args[1:]])
        failing = self.not_a_function(first)

        def stage(state: State, dot: Any, piped: Any) -> Any:
            return failing(state, dot)

        return stage

    def not_a_function(self, node: Operand) -> Expr:
        where = self.where(node.pos)
        if isinstance(node, Field | Chain):
            message = f"{node.names[-1]} is not a method but has arguments"
        elif isinstance(node, Variable):
            message = f"can't give argument to non-function {node.name}"
        else:
            message = "can't give argument to non-function"
        message = f"{message} (at {where})"

        def fail(state: State, dot: Any) -> Any:
            raise TemplateEvalError("type_error", message)

        return fail

    def function(self, node: Identifier) -> Callable[..., Any]:
        from .builtins import BUILTINS

        found = BUILTINS.get(node.name) or self.functions.get(node.name)
        if found is None:  # pragma: no cover - the parser refuses unknown functions
            raise KeyError(node.name)
        return found

    def call(self, node: Identifier, args: list[Expr]) -> Expr:
        name = node.name
        where = self.where(node.pos)
        if name in _SHORT_CIRCUIT:
            return self.short_circuit(name, args, where)
        function = self.function(node)
        # One and two arguments, the common cases, get their own closures: each repeats the
        # step, error and charge lines because one closure branching on the count (or one
        # more call per evaluation) measured 6-12% slower per evaluation; none or 3+: call_n.
        count = len(args)
        if count == 1:
            (arg0,) = args

            def call1(state: State, dot: Any) -> Any:
                state.steps -= 1
                if state.steps < 0:
                    raise budget_exhausted()
                try:
                    result = function(arg0(state, dot))
                except TemplateEvalError:
                    raise
                except Exception as exc:
                    raise _call_failed(exc, name, where) from exc
                if type(result) is str and len(result) > _FREE_LENGTH:
                    _charge(state, len(result))
                return result

            return call1
        if count == 2:
            arg0, arg1 = args

            def call2(state: State, dot: Any) -> Any:
                state.steps -= 1
                if state.steps < 0:
                    raise budget_exhausted()
                try:
                    result = function(arg0(state, dot), arg1(state, dot))
                except TemplateEvalError:
                    raise
                except Exception as exc:
                    raise _call_failed(exc, name, where) from exc
                if type(result) is str and len(result) > _FREE_LENGTH:
                    _charge(state, len(result))
                return result

            return call2
        arguments = tuple(args)

        def call_n(state: State, dot: Any) -> Any:
            state.steps -= 1
            if state.steps < 0:
                raise budget_exhausted()
            try:
                result = function(*[arg(state, dot) for arg in arguments])
            except TemplateEvalError:
                raise
            except Exception as exc:
                raise _call_failed(exc, name, where) from exc
            if type(result) is str and len(result) > _FREE_LENGTH:
                _charge(state, len(result))
            return result

        return call_n

    def call_piped(self, node: Identifier, args: list[Expr]) -> Stage:
        name = node.name
        where = self.where(node.pos)
        if name in _SHORT_CIRCUIT:
            return self.short_circuit_piped(name, args)
        function = self.function(node)
        arguments = tuple(args)

        def call(state: State, dot: Any, piped: Any) -> Any:
            state.steps -= 1
            if state.steps < 0:
                raise budget_exhausted()
            try:
                result = function(*[arg(state, dot) for arg in arguments], piped)
            except TemplateEvalError:
                raise
            except Exception as exc:
                raise _call_failed(exc, name, where) from exc
            if type(result) is str and len(result) > _FREE_LENGTH:
                _charge(state, len(result))
            return result

        return call

    def short_circuit(self, name: str, args: list[Expr], where: str) -> Expr:
        """``and``/``or`` as a first stage: arguments evaluated until one decides."""
        decide = self.decider(name, args)
        if not args:
            message = f"{name}: wrong number of args: want at least 1 got 0 (at {where})"

            def no_arguments(state: State, dot: Any) -> Any:
                raise TemplateEvalError("function_error", message)

            return no_arguments

        def plain(state: State, dot: Any) -> Any:
            return decide(state, dot)[1]

        return plain

    def short_circuit_piped(self, name: str, args: list[Expr]) -> Stage:
        """``and``/``or`` as a later stage: the piped value is the last argument."""
        decide = self.decider(name, args)

        def with_piped(state: State, dot: Any, piped: Any) -> Any:
            decided, value = decide(state, dot)
            return value if decided else piped

        return with_piped

    def decider(self, name: str, args: list[Expr]) -> Callable[[State, Any], tuple[bool, Any]]:
        stop_on = _SHORT_CIRCUIT[name]
        arguments = tuple(args)

        def decide(state: State, dot: Any) -> tuple[bool, Any]:
            state.steps -= 1
            if state.steps < 0:
                raise budget_exhausted()
            value = None
            for arg in arguments:
                value = arg(state, dot)
                if truth(value) == stop_on:
                    return True, value
            return False, value

        return decide

    # Operands.

    def operand(self, node: Operand) -> Expr:
        if isinstance(node, Const):
            constant = node.value

            def const(state: State, dot: Any) -> Any:
                return constant

            return const
        if isinstance(node, Dot):
            return _dot
        if isinstance(node, Nil):
            return _nil
        if isinstance(node, Field):
            return self.fields(_dot, node.names, node.pos)
        if isinstance(node, Variable):
            slot = node.slot

            def variable(state: State, dot: Any) -> Any:
                return state.slots[slot]

            return self.fields(variable, node.names, node.pos) if node.names else variable
        if isinstance(node, Identifier):
            if node.root:
                return self.root(node)
            return self.call(node, [])
        if isinstance(node, Chain):
            inner = node.node
            if isinstance(inner, Identifier) and inner.root and inner.name != "now":
                return self.root_fields(inner.name, node.names, node.pos)
            return self.fields(self.operand(inner), node.names, node.pos)
        assert isinstance(node, SubPipe)
        return self.pipeline(node.pipe)

    def fields(self, base: Expr, names: tuple[str, ...], pos: int) -> Expr:
        where = self.where(pos)
        if len(names) == 1 and base is _dot:
            (name,) = names

            def dot_field(state: State, dot: Any) -> Any:
                if type(dot) is dict:
                    return dot.get(name)
                try:
                    return _field(dot, name)
                except Failure as exc:
                    raise _located(exc, where) from None

            return dot_field

        def chain(state: State, dot: Any) -> Any:
            value = base(state, dot)
            try:
                for name in names:
                    value = value.get(name) if type(value) is dict else _field(value, name)
            except Failure as exc:
                raise _located(exc, where) from None
            return value

        return chain

    def root_fields(self, root: str, names: tuple[str, ...], pos: int) -> Expr:
        """``packet.a.b``: the data root's field ``root``, then its fields, in one closure."""
        where = self.where(pos)

        def root_chain(state: State, dot: Any) -> Any:
            value: Any = state.data
            try:
                value = value.get(root) if type(value) is dict else _field(value, root)
                for name in names:
                    value = value.get(name) if type(value) is dict else _field(value, name)
            except Failure as exc:
                raise _located(exc, where) from None
            return value

        return root_chain

    def root(self, node: Identifier) -> Expr:
        name = node.name
        if name != "now":

            def data_root(state: State, dot: Any) -> Any:
                data = state.data
                if type(data) is dict or type(data) is MappingProxyType:
                    return data.get(name)
                return data.get(name) if isinstance(data, Mapping) else None

            return data_root
        clock = self.functions.get("now")
        where = self.where(node.pos)

        def now(state: State, dot: Any) -> Any:
            data = state.data
            if "now" in data:
                return data["now"]
            if clock is None:
                return None
            try:
                return clock()
            except TemplateEvalError:
                raise
            except Exception as exc:
                raise _call_failed(exc, "now", where) from exc

        return now


def _dot(state: State, dot: Any) -> Any:
    return dot


def _nil(state: State, dot: Any) -> Any:
    return None


def _break(state: State, dot: Any, out: list[str]) -> None:
    raise _Break


def _continue(state: State, dot: Any, out: list[str]) -> None:
    raise _Continue


class Program:
    """A compiled template: run it into a :class:`State` (see :class:`_Compiler`)."""

    __slots__ = ("run", "single", "slot_count")

    def __init__(self, parsed: ParsedTemplate, name: str, functions: Functions) -> None:
        compiler = _Compiler(parsed, name, functions)
        self.run = compiler.body(parsed.body)
        self.slot_count = parsed.slot_count
        self.single: Expr | None = None
        actions = [
            node
            for node in parsed.body
            if not (isinstance(node, Text) and not node.text.strip(" \t\r\n"))
        ]
        if len(actions) == 1 and isinstance(actions[0], Action) and not actions[0].pipe.decls:
            self.single = compiler.pipeline(actions[0].pipe)

    def render_into(self, state: State) -> str:
        """Render with ``state`` (sharing its budget and output size); errors are raw."""
        slots: list[Any] = [None] * self.slot_count
        slots[0] = state.data
        state.slots = slots
        out: list[str] = []
        self.run(state, state.data, out)
        return "".join(out)

    def value_into(self, state: State) -> Any:
        """The single action's value (or the rendering), with ``state``; errors are raw."""
        single = self.single
        if single is None:
            return self.render_into(state)
        slots: list[Any] = [None] * self.slot_count
        slots[0] = state.data
        state.slots = slots
        value = single(state, state.data)
        if type(value) is str:
            state.size += len(value)
            if state.size > state.cap:
                raise output_too_large(state)
        return value


def guarded(run: Callable[[State], Any], state: State, name: str) -> Any:
    """Run ``run(state)``; any failure comes out as a TemplateEvalError."""
    try:
        return run(state)
    except TemplateEvalError:
        raise
    except RecursionError:
        raise TemplateEvalError("budget", f"{name}: evaluation nested too deeply") from None
    except Failure as exc:
        raise TemplateEvalError(exc.reason, f"{exc.message} (in {name})") from None
    except Exception as exc:
        raise TemplateEvalError(
            "internal", f"{name}: unexpected {type(exc).__name__}: {exc}"
        ) from exc
