"""Parsing: what compiles, and where a syntax error points (1-based line and column)."""

from __future__ import annotations

import pytest

from bobravoz.runtime.template import TemplateSyntaxError, compile_template
from bobravoz.runtime.template.lexer import tokenize
from bobravoz.runtime.template.parser import MAX_DEPTH


def syntax_error(text: str, name: str = "step") -> TemplateSyntaxError:
    with pytest.raises(TemplateSyntaxError) as caught:
        compile_template(text, name=name)
    return caught.value


def position_of(text: str, needle: str, occurrence: int = 1) -> tuple[int, int]:
    """1-based (line, column) of the n-th occurrence of ``needle`` in ``text``."""
    offset = -1
    for _ in range(occurrence):
        offset = text.index(needle, offset + 1)
    line = text.count("\n", 0, offset) + 1
    column = offset - (text.rfind("\n", 0, offset) + 1) + 1
    return line, column


@pytest.mark.parametrize(
    ("text", "needle", "occurrence", "message"),
    [
        ("ab\ncd {{ nosuchfn 1 }}", "nosuchfn", 1, "function 'nosuchfn' not defined"),
        ("{{ if .a }}\n{{ end }}{{ end }}", "end", 2, "unexpected {{end}}"),
        ("x {{ else }}", "else", 1, "unexpected {{else}}"),
        ("{{ .a }}\n  {{ .b | }}", "|", 1, "missing command after |"),
        ("{{ 1 | 2 }}", "2", 1, "non executable command in pipeline stage 2"),
        ('{{ .a | "x" }}', '"x"', 1, "non executable command in pipeline stage 2"),
        ("{{ $x }}", "$x", 1, "undefined variable '$x'"),
        ("{{ $y = 1 }}", "$y", 1, "undefined variable '$y'"),
        ("{{ break }}", "break", 1, "{{break}} outside {{range}}"),
        ("{{ range .l }}{{ end }}{{ continue }}", "continue", 1, "{{continue}} outside {{range}}"),
        ('{{ print "a""b" }}', '"b"', 1, "unexpected string '\"b\"' in operand"),
        ("{{ nil.a }}", ".a", 1, "unexpected . after term 'nil'"),
        ("{{ 3.a }}", "3", 1, "bad number syntax"),
        ("{{ 08 }}", "08", 1, "illegal number syntax"),
        ("{{ 99999999999999999999 }}", "9", 1, "integer overflow"),
        ("{{ 2i }}", "2i", 1, "complex number"),
        ('{{ "\\q" }}', '"', 1, "unknown escape sequence"),
        ("{{ 'ab' }}", "'", 1, "malformed character constant"),
        ('{{ "abc }}', '"', 1, "unterminated quoted string"),
        ("{{ (1 }}", "}}", 1, "unclosed left paren"),
        ("{{ 1) }}", ")", 1, "unexpected right paren"),
        ("{{ }}", "}}", 1, "missing value for command"),
        ("{{ if }}{{ end }}", "}}", 1, "missing value for if"),
        ("a\n{{ .a", "{{", 1, "unclosed action"),
        ("{{/* never closed", "{{", 1, "unclosed comment"),
        ("{{/* c */ .x }}", " .x", 1, "comment ends before closing delimiter"),
        ("{{ /* c */ }}", "/", 1, "unexpected char '/'"),
        ("{{ $x, $y := .l }}", ",", 1, "too many declarations in command"),
        ('{{ packet "x" }}', "packet", 1, "data root, not a function"),
        ('{{ "x" | steps }}', "steps", 1, "data root, not a function"),
        ("{{ $ := 1 }}", "$", 1, "cannot declare or assign $"),
        ("{{ with $v := 1 }}{{ end }}{{ $v }}", "$v", 2, "undefined variable '$v'"),
        ("{{ $x := $x }}", "$x", 2, "undefined variable '$x'"),
        ("{{ if .a }}{{ else }}{{ else }}{{ end }}", "else", 2, "expected {{end}}"),
        ("{{ range .l }}{{ else if .a }}{{ end }}", "if", 1, "only allowed in {{if}}"),
        ("{{ if .a }}{{ else with .b }}{{ end }}", "with", 1, "only allowed in {{with}}"),
        ("{{ .a.b-c }}", "-", 1, "bad character"),
        ("{{ # }}", "#", 1, "unexpected char '#'"),
    ],
)
def test_syntax_errors_point_at_the_offending_token(
    text: str, needle: str, occurrence: int, message: str
) -> None:
    error = syntax_error(text)
    assert message in error.message
    assert (error.line, error.column) == position_of(text, needle, occurrence)
    assert error.name == "step"
    assert str(error) == f"step:{error.line}:{error.column}: {error.message}"
    assert error.reason == "syntax"


@pytest.mark.parametrize("keyword", ["define", "template", "block"])
def test_define_template_and_block_are_refused_by_name(keyword: str) -> None:
    error = syntax_error(f'{{{{ {keyword} "x" }}}}{{{{ end }}}}')
    assert f"{{{{{keyword}}}}} is not supported" in error.message
    assert (error.line, error.column) == (1, 4)


def test_nesting_is_bounded_for_control_structures_and_parentheses() -> None:
    deep_ifs = "{{ if 1 }}" * MAX_DEPTH + "x" + "{{ end }}" * MAX_DEPTH
    assert compile_template(deep_ifs).render({}) == "x"
    deep_parens = "{{ " + "(print " * MAX_DEPTH + "1" + ")" * MAX_DEPTH + " }}"
    assert compile_template(deep_parens).render({}) == "1"
    too_deep = "{{ if 1 }}" * (MAX_DEPTH + 1) + "{{ end }}" * (MAX_DEPTH + 1)
    assert "nested too deeply" in syntax_error(too_deep).message
    too_deep_parens = "{{ " + "(" * (MAX_DEPTH + 1) + "1" + ")" * (MAX_DEPTH + 1) + " }}"
    assert "nested too deeply" in syntax_error(too_deep_parens).message
    # Thousands of levels: refused without exhausting the Python stack.
    assert (
        "nested too deeply" in syntax_error("{{ " + "(" * 5000 + "1" + ")" * 5000 + " }}").message
    )


def test_a_long_else_if_chain_is_not_nesting() -> None:
    arms = "".join(f"{{{{ else if eq .n {number} }}}}{number}" for number in range(300))
    template = compile_template("{{ if false }}no" + arms + "{{ else }}none{{ end }}")
    assert template.render({"n": 299}) == "299"
    assert template.render({"n": 1000}) == "none"


def test_unknown_function_names_the_template() -> None:
    error = syntax_error("{{ frobnicate }}", name="respond.if")
    assert error.name == "respond.if"
    assert str(error).startswith("respond.if:1:4: ")


def test_lexer_applies_trim_markers_and_drops_comments() -> None:
    kinds = [(token.kind, token.value) for token in tokenize("a  {{- /* c */ -}}  b {{- 1 }}")]
    # "{{- " consumes the marker and one space: the action starts at "1".
    assert kinds == [
        ("text", "a"),
        ("text", "b"),
        ("{{", "{{"),
        ("number", "1"),
        ("space", " "),
        ("}}", "}}"),
        ("EOF", ""),
    ]


def test_an_unclosed_control_points_at_the_end_of_the_text() -> None:
    error = syntax_error("{{ if .a }}\nxyz")
    assert "unexpected EOF: {{if}} not closed" in error.message
    assert (error.line, error.column) == (2, 4)


def test_minus_without_a_space_is_a_number_not_a_trim_marker() -> None:
    assert compile_template("a {{-3}} b").render({}) == "a -3 b"
    assert compile_template("a {{ 3 -}} b").render({}) == "a 3b"


@pytest.mark.parametrize(
    "text",
    [
        "{{ .a }}{{ $.b }}{{ $x := 1 }}{{ $x }}",
        "{{ range $i, $v := .l }}{{ $i }}{{ $v }}{{ else }}e{{ end }}",
        "{{ range $i, $v = .l }}{{ end }}".replace(
            "{{ range", "{{ $i := 0 }}{{ $v := 0 }}{{ range"
        ),
        "{{ with $x := .a }}{{ $x }}{{ else with .b }}b{{ else }}c{{ end }}",
        "{{ if and .a (or .b .c) (not .d) }}y{{ end }}",
        "{{ (index .a 0).b.c }}",
        "{{ packet.metadata.lang }}{{ inputs.x }}{{ steps.s.text }}",
        "{{ `raw\nstring` }}{{ 'x' }}{{ 0x1p4 }}{{ 1_000 }}{{ .5 }}{{ -0b11 }}",
        "{{\n  .a\n}}",
        "{{ range .l }}{{ if . }}{{ break }}{{ else }}{{ continue }}{{ end }}{{ end }}",
    ],
)
def test_valid_templates_compile(text: str) -> None:
    compile_template(text)
