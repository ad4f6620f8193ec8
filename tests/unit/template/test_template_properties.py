"""Properties: the parser and the evaluator fail only with their own errors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bobravoz.runtime.template import (
    TemplateEvalError,
    TemplateSyntaxError,
    compile_template,
)

# Pieces of template syntax, so that generated text reaches deep into the parser.
FRAGMENTS = [
    "{{",
    "}}",
    "{{- ",
    " -}}",
    "{{/*",
    "*/}}",
    " ",
    "\n",
    "|",
    "(",
    ")",
    ".",
    "$",
    "$x",
    ":=",
    "=",
    ",",
    '"',
    "`",
    "'",
    "\\",
    "a",
    ".a",
    ".b.c",
    "$.a",
    "1",
    "-2",
    "0x1f",
    "1.5e3",
    "'c'",
    '"s"',
    "true",
    "nil",
    "if",
    "else",
    "end",
    "range",
    "with",
    "break",
    "continue",
    "define",
    "and",
    "or",
    "not",
    "eq",
    "lt",
    "len",
    "index",
    "slice",
    "printf",
    "print",
    "html",
    "js",
    "packet",
    "inputs",
    "steps",
    "now",
    "%d",
    "%",
    "x",
    "é",
    "\t",
]

template_text = st.one_of(
    st.text(max_size=60),
    st.lists(st.sampled_from(FRAGMENTS), max_size=30).map("".join),
)

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.sampled_from(["a", "b", "c", "l", "n", "s", "x"]), children, max_size=4),
    ),
    max_leaves=20,
)
json_data = st.fixed_dictionaries(
    {},
    optional={
        "a": json_values,
        "b": json_values,
        "l": json_values,
        "n": json_values,
        "s": json_values,
        "packet": json_values,
        "inputs": json_values,
        "steps": json_values,
        "now": json_values,
    },
)

VALID_TEMPLATES = [
    "{{ .a }}",
    "{{ .a.b.c }}",
    "{{ packet.metadata.lang }}",
    "{{ eq .a .b }}",
    "{{ ne .a 1 }}",
    "{{ lt .a .b }}",
    "{{ if .a }}x{{ else if .b }}y{{ else }}z{{ end }}",
    "{{ with .a }}{{ .b }}{{ else with .b }}{{ . }}{{ end }}",
    "{{ range .l }}{{ . }},{{ end }}",
    "{{ range $i, $v := .a }}{{ $i }}={{ $v }}{{ if $v }}{{ break }}{{ end }}{{ end }}",
    "{{ range $v := .n }}{{ $v }}{{ else }}none{{ end }}",
    "{{ index .l 0 }}",
    '{{ index .a "b" "c" }}',
    "{{ slice .s 1 2 }}",
    "{{ len .a }}",
    "{{ and .a .b (not .s) }}",
    "{{ or .a .b .s }}",
    '{{ printf "%v %d %s %5.2f %x %q %t" .a .b .s .n .l .a .b }}',
    "{{ print .a .b .l }}{{ println .s }}",
    "{{ html .a }}{{ js .b }}{{ urlquery .s }}",
    '{{ .a | printf "%v" | len }}',
    "{{ $x := .a }}{{ $x.b }}{{ $x = .b }}{{ $x }}",
    "{{ (index .l 1).a }}",
    "{{ inputs }}{{ steps.x }}{{ now }}{{ . }}",
]


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(template_text)
def test_the_parser_raises_only_syntax_errors(text: str) -> None:
    syntax_error: TemplateSyntaxError | None = None
    try:
        template = compile_template(text)
    except TemplateSyntaxError as error:
        syntax_error = error
    if syntax_error is not None:
        assert syntax_error.line >= 1
        assert syntax_error.column >= 1
        return
    # What parses also evaluates without any other kind of exception.
    assert evaluation_failure(template.render, {"a": {"b": [1, "x"]}, "x": 1}) != "internal"


def evaluation_failure(evaluate: Callable[..., Any], data: dict[str, Any]) -> str | None:
    """The reason of the TemplateEvalError ``evaluate(data)`` raises, None if it succeeds."""
    try:
        evaluate(data, budget=5000, max_output=4096)
    except TemplateEvalError as error:
        return error.reason
    return None


@pytest.mark.parametrize("text", VALID_TEMPLATES)
@settings(max_examples=30, suppress_health_check=[HealthCheck.too_slow])
@given(data=json_data)
def test_render_raises_only_evaluation_errors(text: str, data: dict[str, Any]) -> None:
    template = compile_template(text)
    for evaluate in (template.render, template.value, template.condition):
        assert evaluation_failure(evaluate, data) != "internal"


@given(st.text().filter(lambda text: "{{" not in text))
def test_text_without_actions_renders_to_itself(text: str) -> None:
    assert compile_template(text).render({}) == text
