"""Evaluation of every construct, with the outputs Go's text/template documents."""

from __future__ import annotations

from typing import Any

import pytest

from bobravoz.runtime.template import compile_template

DATA: dict[str, Any] = {
    "name": "bob",
    "n": 5,
    "f": 2.5,
    "whole": 3.0,
    "big": 1e6,
    "t": True,
    "empty": "",
    "zero": 0,
    "l": ["a", "b", "c"],
    "nums": [1, 2, 3, 4],
    "m": {"b": 2, "a": 1, "c": 3},
    "nested": {"x": {"y": {"z": "deep"}}},
    "items": [{"id": 1, "tags": ["p", "q"]}, {"id": 2, "tags": []}],
    "nothing": None,
    "el": [],
    "em": {},
    "packet": {"type": "speech", "count": 7, "metadata": {"lang": "en"}},
    "inputs": {"greeting": "hi"},
    "steps": {"transcribe": {"text": "hello there"}},
}


def render(text: str, data: dict[str, Any] | None = None) -> str:
    return compile_template(text).render(DATA if data is None else data)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plain text", "plain text"),
        ("{{ .name }}", "bob"),
        ("{{ .nested.x.y.z }}", "deep"),
        ("{{ .n }}|{{ .f }}|{{ .whole }}|{{ .big }}|{{ .t }}", "5|2.5|3|1e+06|true"),
        ("{{ .l }}", "[a b c]"),
        ("{{ .m }}", "map[a:1 b:2 c:3]"),
        ("{{ .items }}", "[map[id:1 tags:[p q]] map[id:2 tags:[]]]"),
        ("{{ .nothing }}", ""),
        ("[{{ .missing }}]", "[]"),
        ("[{{ .missing.x.y }}]", "[]"),
        ("[{{ .nothing.x }}]", "[]"),
        ("{{ packet.metadata.lang }}", "en"),
        ("{{ inputs.greeting }} {{ steps.transcribe.text }}", "hi hello there"),
        ("{{ .packet.type }}{{ $.packet.count }}", "speech7"),
        ("{{ (index .items 1).id }}", "2"),
        ("{{ (index .items 0).tags }}", "[p q]"),
    ],
)
def test_fields_and_printing(text: str, expected: str) -> None:
    assert render(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{{ 42 }} {{ -3 }} {{ +4 }}", "42 -3 4"),
        (
            "{{ 0x1F }} {{ 0X1f }} {{ 0o17 }} {{ 017 }} {{ 0b101 }} {{ 1_000_000 }}",
            "31 31 15 15 5 1000000",
        ),
        (
            "{{ 1.0 }} {{ 1.5 }} {{ 1e3 }} {{ .5 }} {{ 2. }} {{ 0x1p4 }} {{ 1e21 }}",
            "1 1.5 1000 0.5 2 16 1e+21",
        ),
        ("{{ 'a' }} {{ '\\n' }} {{ '\\x41' }} {{ '\\u00e9' }} {{ '\\'' }}", "97 10 65 233 39"),
        (
            '{{ "a\\tb" }}|{{ "\\u00e9\\U0001F600" }}|{{ "\\xc3\\xa9" }}|{{ "\\101" }}',
            "a\tb|é😀|é|A",
        ),
        ('{{ "say \\"hi\\"" }}', 'say "hi"'),
        ("{{ `raw \\n {{ }}` }}", "raw \\n {{ }}"),
        ("{{ true }} {{ false }}", "true false"),
        ("{{ print nil }}", "<nil>"),
    ],
)
def test_literals(text: str, expected: str) -> None:
    assert render(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a {{/* a comment */}} b", "a  b"),
        ("a {{/* multi\nline */}}b", "a b"),
        ("a  {{- /* trimmed */ -}}  b", "ab"),
        ("a \n\t {{- .n }}", "a5"),
        ("{{ .n -}} \n\t b", "5b"),
        ("{{- .n -}}", "5"),
        ("x\n{{- range .l }}\n  {{ . }}\n{{- end }}\n", "x\n  a\n  b\n  c\n"),
    ],
)
def test_comments_and_trim_markers(text: str, expected: str) -> None:
    assert render(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # The piped value is the LAST argument of the next command.
        ('{{ 1 | printf "%s-%d" "x" }}', "x-1"),
        ('{{ "x" | printf "%s-%s" "y" | len }}', "3"),
        ("{{ .n | eq 5 }}", "true"),
        ('{{ .name | printf "%q" }}', '"bob"'),
        ('{{ .l | len | printf "%03d" }}', "003"),
    ],
)
def test_pipelines(text: str, expected: str) -> None:
    assert render(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{{ $x := "v" }}{{ $x }}', "v"),
        ("{{ $x := 1 }}{{ if true }}{{ $x = 2 }}{{ end }}{{ $x }}", "2"),
        ("{{ $x := 1 }}{{ if true }}{{ $x := 2 }}{{ $x }}{{ end }}{{ $x }}", "21"),
        ("{{ $x := 1 }}{{ $x := $x }}{{ $x }}", "1"),
        ("{{ $last := 0 }}{{ range .nums }}{{ $last = . }}{{ end }}{{ $last }}", "4"),
        ("{{ $m := .nested }}{{ $m.x.y.z }}", "deep"),
        ("{{ range .l }}{{ $.name }}{{ end }}", "bobbobbob"),
        ("{{ with .nested }}{{ $.n }}{{ end }}", "5"),
        ("{{ ($x := 3) }}{{ $x }}", "33"),
        ("{{ $ }}", str(render("{{ . }}"))),
    ],
)
def test_variables(text: str, expected: str) -> None:
    assert render(text) == expected


@pytest.mark.parametrize(
    ("value", "truthy"),
    [
        (True, True),
        (False, False),
        (0, False),
        (0.0, False),
        (7, True),
        (-1.5, True),
        ("", False),
        ("0", True),
        ("false", True),
        ([], False),
        ([0], True),
        ({}, False),
        ({"a": None}, True),
        (None, False),
    ],
)
def test_if_uses_go_truth(value: Any, truthy: bool) -> None:
    template = "{{ if .v }}yes{{ else }}no{{ end }}"
    assert render(template, {"v": value}) == ("yes" if truthy else "no")
    assert render("{{ if .missing }}yes{{ else }}no{{ end }}", {}) == "no"


@pytest.mark.parametrize(("n", "expected"), [(1, "one"), (2, "two"), (3, "many"), (0, "none")])
def test_else_if_chains(n: int, expected: str) -> None:
    text = (
        "{{ if eq .n 1 }}one{{ else if eq .n 2 }}two{{ else if gt .n 2 }}many"
        "{{ else }}none{{ end }}"
    )
    assert render(text, {"n": n}) == expected


def test_if_declares_a_variable_visible_in_every_branch() -> None:
    text = "{{ if $x := .v }}yes {{ $x }}{{ else }}no {{ $x }}{{ end }}"
    assert render(text, {"v": "a"}) == "yes a"
    assert render(text, {"v": 0}) == "no 0"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{{ range .l }}{{ . }},{{ end }}", "a,b,c,"),
        ("{{ range $i, $v := .l }}{{ $i }}={{ $v }},{{ end }}", "0=a,1=b,2=c,"),
        ("{{ range $v := .l }}{{ $v }}{{ end }}", "abc"),
        ("{{ range $k, $v := .m }}{{ $k }}={{ $v }};{{ end }}", "a=1;b=2;c=3;"),
        ("{{ range .m }}{{ . }}{{ end }}", "123"),
        ("{{ range .el }}x{{ else }}empty{{ end }}", "empty"),
        ("{{ range .em }}x{{ else }}empty{{ end }}", "empty"),
        ("{{ range .nothing }}x{{ else }}nil{{ end }}", "nil"),
        ("{{ range .missing }}x{{ else }}missing{{ end }}", "missing"),
        ("{{ range 3 }}{{ . }}{{ end }}", "012"),
        ("{{ range $i := 3 }}{{ $i }}{{ end }}", "012"),
        ("{{ range 0 }}x{{ else }}none{{ end }}", "none"),
        ("{{ range .nums }}{{ if eq . 2 }}{{ continue }}{{ end }}{{ . }}{{ end }}", "134"),
        ("{{ range .nums }}{{ if eq . 3 }}{{ break }}{{ end }}{{ . }}{{ end }}", "12"),
        (
            "{{ range .items }}{{ .id }}:{{ range .tags }}{{ . }}{{ else }}-{{ end }};{{ end }}",
            "1:pq;2:-;",
        ),
        (
            "{{ range $i, $e := .l }}{{ if $i }}, {{ end }}{{ $e }}{{ end }}",
            "a, b, c",
        ),
        (
            '{{ range .nums }}{{ range $.l }}{{ if eq . "b" }}{{ break }}{{ end }}{{ . }}'
            "{{ end }}{{ end }}",
            "aaaa",
        ),
        ("{{ range $i, $v := .l }}{{ end }}{{ $i }}", "error"),
    ],
)
def test_range(text: str, expected: str) -> None:
    if expected == "error":
        # The range variables are scoped to the range.
        with pytest.raises(Exception, match="undefined variable"):
            render(text)
        return
    assert render(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{{ with .nested.x }}{{ .y.z }}{{ end }}", "deep"),
        ("{{ with .empty }}x{{ else }}empty{{ end }}", "empty"),
        ("{{ with .missing }}x{{ else }}{{ .name }}{{ end }}", "bob"),
        ("{{ with $v := .n }}{{ $v }}{{ . }}{{ end }}", "55"),
        (
            "{{ with .missing }}a{{ else with .zero }}b{{ else with .l }}{{ index . 0 }}{{ end }}",
            "a",
        ),
        ("{{ with .missing }}a{{ else with .zero }}b{{ else }}c{{ end }}", "c"),
    ],
)
def test_with(text: str, expected: str) -> None:
    assert render(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{{ and 1 "x" }}', "x"),
        ('{{ and 1 0 "x" }}', "0"),
        ('{{ or 0 "" "x" 5 }}', "x"),
        ('{{ or 0 "" }}', ""),
        ("{{ or 0 false }}", "false"),
        ("{{ not 0 }} {{ not .l }}", "true false"),
        # Short-circuit: the failing argument is never evaluated.
        ("{{ or 1 (index .l 99) }}", "1"),
        ("{{ and 0 (index .l 99) }}", "0"),
        ("{{ and .missing .missing.x.y (len 5) }}", ""),
        # A piped value is the last argument and also short-circuits.
        ('{{ 0 | or "" }}', "0"),
        ('{{ "z" | and 1 }}', "z"),
        ('{{ "z" | or "a" }}', "a"),
    ],
)
def test_and_or_not(text: str, expected: str) -> None:
    assert render(text) == expected


def test_and_without_short_circuit_evaluates_the_failing_argument() -> None:
    with pytest.raises(Exception, match="index out of range"):
        render("{{ and 1 (index .l 99) }}")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{{ eq 1 1 }} {{ eq 1 2 }} {{ eq 1 3 2 1 }} {{ eq 1 3 2 }}", "true false true false"),
        ('{{ eq "a" "a" }} {{ ne "a" "b" }} {{ eq .name "bob" }}', "true true true"),
        ("{{ eq 1 1.0 }} {{ eq .whole 3 }} {{ lt 2 2.5 }}", "true true true"),
        ("{{ eq true true }} {{ ne true false }}", "true true"),
        (
            '{{ eq nil nil }} {{ eq .missing nil }} {{ eq .missing "x" }} {{ eq "x" nil }}',
            "true true false false",
        ),
        ("{{ eq .l nil }} {{ ne .missing nil }}", "false false"),
        (
            '{{ lt 1 2 }} {{ lt "a" "b" }} {{ le 2 2 }} {{ gt 1.5 1 }} {{ ge 1 2 }}',
            "true true true true false",
        ),
        ('{{ eq (index packet "type") "speech" }}', "true"),
    ],
)
def test_comparisons(text: str, expected: str) -> None:
    assert render(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{{ index .l 1 }}", "b"),
        ('{{ index .m "c" }}', "3"),
        ('[{{ index .m "zz" }}]', "[]"),
        ('{{ index .nested "x" "y" "z" }}', "deep"),
        ('{{ index .items 0 "tags" 1 }}', "q"),
        ('{{ index "abc" 1 }}', "98"),
        ('[{{ index .missing "a" }}]', "[]"),
        ("{{ index .l }}", "[a b c]"),
        (
            "{{ slice .nums 1 }} {{ slice .nums 1 3 }} {{ slice .nums }} {{ slice .nums 0 1 2 }}",
            "[2 3 4] [2 3] [1 2 3 4] [1]",
        ),
        ('{{ slice "hello" 1 3 }} {{ slice "hello" 2 }}', "el llo"),
        ('{{ slice "héllo" 1 3 }}', "é"),
        ('{{ len "héllo" }} {{ len .l }} {{ len .m }} {{ len .el }}', "6 3 3 0"),
    ],
)
def test_index_slice_len(text: str, expected: str) -> None:
    assert render(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{{ print "a" 1 2 "b" }}', "a1 2b"),
        ("{{ print 1.5 true nil }}", "1.5 true <nil>"),
        ('{{ println 1 "a" }}', "1 a\n"),
        ("{{ print .l .m }}", "[a b c] map[a:1 b:2 c:3]"),
        ('{{ html "<a href=\\"x\\">&\'" }}', "&lt;a href=&#34;x&#34;&gt;&amp;&#39;"),
        ("{{ html 1 2 }}", "1 2"),
        ("[{{ html nil }}]", "[]"),
        (
            '{{ js "it\'s \\"q\\" <b> & = \\\\\\n" }}',
            'it\\\'s \\"q\\" \\u003Cb\\u003E \\u0026 \\u003D \\\\\\u000A',
        ),
        ('{{ urlquery "a b&c=d/é~_.-" }}', "a+b%26c%3Dd%2F%C3%A9~_.-"),
    ],
)
def test_print_and_escapers(text: str, expected: str) -> None:
    assert render(text) == expected
