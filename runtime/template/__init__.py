"""Go ``text/template`` expressions of BubuStack Stories, compiled once, evaluated per packet.

Step ``if``, step ``runtime``, routing ``when`` and ``with`` values are Go templates with
Sprig functions, and BubuStack's data roots written without a leading dot: ``inputs``,
``steps``, ``packet``, ``now`` (``{{ eq (default "" packet.type) "storyrun.ready" }}``).

- :func:`compile_template` parses a string once (a :class:`TemplateSyntaxError` names the
  template and the 1-based line and column of the offending token; unknown functions are
  refused here, as Go refuses them at parse time).
- :meth:`Template.render` gives the text, :meth:`Template.value` the Python value of a
  template that is exactly one action, :meth:`Template.condition` BubuStack's truth of the
  rendering.
- :func:`compile_value` compiles every template string inside a JSON-like ``runtime``/``with``
  object; :meth:`CompiledValue.render` evaluates them all under one budget and output cap.

Functions are looked up in Go's builtins (:mod:`.builtins`) first, then in the Sprig set
(``sprig.FUNCTIONS``). Data is JSON-like (dict, list, str, int, float, bool, None); a
missing key is nil and nil prints as the empty string (see :mod:`.evaluator`).

Every evaluation failure is a :class:`TemplateEvalError` whose ``reason`` is one of:

- ``budget``: more than ``budget`` steps (commands, control statements, range iterations,
  one more per KiB of string a function returns), or an evaluation or a value nested too
  deeply for the interpreter;
- ``output_too_large``: more than ``max_output`` characters of output;
- ``type_error``: an operation on the wrong kind of value (field of a string, comparison of
  a string with a number, range over a string, arguments given to a non-function...);
- ``index_out_of_range``: ``index`` or ``slice`` outside a list or string;
- ``function_error``: a function failed or got the wrong number or kind of arguments (the
  message starts with the function name);
- ``not_boolean``: :meth:`Template.condition` rendered something that is not a boolean word;
- ``internal``: a defect of this package (should never happen; still never another type).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any, Final, cast

from .builtins import BUILTINS
from .errors import FunctionError, TemplateError, TemplateEvalError, TemplateSyntaxError
from .evaluator import Program, State, guarded, text_of
from .parser import ROOTS, parse

__all__ = [
    "ROOTS",
    "CompiledValue",
    "FunctionError",
    "Template",
    "TemplateError",
    "TemplateEvalError",
    "TemplateSyntaxError",
    "compile_template",
    "compile_value",
]

DEFAULT_MAX_OUTPUT: Final = 65536
DEFAULT_BUDGET: Final = 100_000
_TRUE: Final = frozenset({"true", "1", "yes", "y"})
_FALSE: Final = frozenset({"false", "0", "no", "n", ""})

_sprig_functions: Mapping[str, Callable[..., Any]] | None = None


def _sprig() -> Mapping[str, Callable[..., Any]]:
    """``sprig.FUNCTIONS``, or an empty set while that module does not exist."""
    global _sprig_functions
    if _sprig_functions is not None:
        return _sprig_functions
    module_name = f"{__name__}.sprig"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        return {}
    _sprig_functions = cast(Mapping[str, Callable[..., Any]], module.FUNCTIONS)
    return _sprig_functions


class Template:
    """One compiled template string.

    ``roots`` says which of ``inputs``, ``steps``, ``packet``, ``now`` it reads (a bare
    ``.`` or ``$`` at the top reads them all): a template without ``packet``/``steps``/``now``
    gives the same result for every packet of a run.
    """

    __slots__ = ("name", "program", "roots", "source")

    def __init__(self, source: str, name: str) -> None:
        functions = _sprig()
        parsed = parse(source, name, lambda word: word in BUILTINS or word in functions)
        self.source = source
        self.name = name
        self.roots: frozenset[str] = parsed.roots
        #: The compiled closures (internal: used by :class:`CompiledValue`).
        self.program = Program(parsed, name, functions)

    def __repr__(self) -> str:
        return f"Template({self.name!r}, {self.source!r})"

    def render(
        self,
        data: Mapping[str, Any],
        *,
        max_output: int = DEFAULT_MAX_OUTPUT,
        budget: int = DEFAULT_BUDGET,
    ) -> str:
        """The text of the template over ``data``; raises only TemplateEvalError."""
        state = State(data, budget, max_output)
        return cast(str, guarded(self.program.render_into, state, self.name))

    def value(
        self,
        data: Mapping[str, Any],
        *,
        max_output: int = DEFAULT_MAX_OUTPUT,
        budget: int = DEFAULT_BUDGET,
    ) -> Any:
        """The Python value of a template that is exactly one action (surrounding whitespace
        ignored), keeping its type (number, bool, dict, list, None); else the rendered text."""
        state = State(data, budget, max_output)
        return guarded(self.program.value_into, state, self.name)

    def condition(
        self,
        data: Mapping[str, Any],
        *,
        max_output: int = DEFAULT_MAX_OUTPUT,
        budget: int = DEFAULT_BUDGET,
    ) -> bool:
        """BubuStack's truth of the rendering, trimmed and lowercased: ``true 1 yes y`` are
        true, ``false 0 no n`` and the empty text are false, anything else is a
        TemplateEvalError ``not_boolean``. (That an absent or empty *condition field* means
        true is the caller's rule: a template rendering to nothing is false here.)"""
        state = State(data, budget, max_output)
        value = guarded(self.program.value_into, state, self.name)
        if value is True or value is False:
            return value
        word = text_of(value).strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
        shown = word if len(word) <= 40 else word[:40] + "..."
        raise TemplateEvalError(
            "not_boolean", f"{self.name}: condition rendered {shown!r}, not a boolean"
        )


def compile_template(text: str, *, name: str = "template") -> Template:
    """Parse ``text`` once; raises TemplateSyntaxError(name, line, column, message)."""
    return Template(text, name)


_Renderer = Callable[[State], Any]


class CompiledValue:
    """A JSON-like value (``runtime``, ``with``) whose template strings are compiled."""

    __slots__ = ("_render", "is_static", "name", "roots", "source")

    def __init__(self, value: Any, name: str) -> None:
        roots: set[str] = set()
        self.source = value
        self.name = name
        try:
            self._render = _compile_node(value, name, roots)
        except RecursionError:
            raise TemplateSyntaxError(name, 1, 1, "value nested too deeply") from None
        self.roots: frozenset[str] = frozenset(roots)
        self.is_static = self._render is None

    def render(
        self,
        data: Mapping[str, Any],
        *,
        max_output: int = DEFAULT_MAX_OUTPUT,
        budget: int = DEFAULT_BUDGET,
    ) -> Any:
        """The same structure with each template string replaced by its
        :meth:`Template.value`; one budget and one output cap for the whole structure.
        Parts without templates are shared with the source value (do not mutate them)."""
        render = self._render
        if render is None:
            return self.source
        state = State(data, budget, max_output)
        return guarded(render, state, self.name)


def _compile_node(value: Any, path: str, roots: set[str]) -> _Renderer | None:
    """A renderer for ``value``, or None when nothing in it is a template."""
    if isinstance(value, str):
        if "{{" not in value:
            return None
        template = Template(value, path)
        roots.update(template.roots)
        return template.program.value_into
    if isinstance(value, Mapping):
        entries = [
            (key, item, _compile_node(item, f"{path}.{key}", roots)) for key, item in value.items()
        ]
        if all(renderer is None for _, _, renderer in entries):
            return None
        fixed = tuple(entries)

        def render_mapping(state: State) -> dict[Any, Any]:
            return {
                key: item if renderer is None else renderer(state) for key, item, renderer in fixed
            }

        return render_mapping
    if isinstance(value, list | tuple):
        parts = [
            (item, _compile_node(item, f"{path}[{position}]", roots))
            for position, item in enumerate(value)
        ]
        if all(renderer is None for _, renderer in parts):
            return None
        fixed_parts = tuple(parts)

        def render_list(state: State) -> list[Any]:
            return [item if renderer is None else renderer(state) for item, renderer in fixed_parts]

        return render_list
    return None


def compile_value(value: Any, *, name: str) -> CompiledValue:
    """Compile every string containing ``{{`` inside ``value`` (dicts and lists walked);
    a syntax error names ``name`` plus the JSON path (``respond.runtime.userPrompt``)."""
    return CompiledValue(value, name)
