"""The public API: value, condition, compile_value, roots, limits and every error reason."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest

import bobravoz.runtime.template as template_package
from bobravoz.runtime.template import (
    FunctionError,
    TemplateEvalError,
    TemplateSyntaxError,
    compile_template,
    compile_value,
)

DATA: dict[str, Any] = {
    "packet": {"type": "speech", "count": 7, "score": 0.5, "metadata": {"lang": "en"}},
    "inputs": {"limit": 3, "voice": "alto"},
    "steps": {"transcribe": {"text": "hello"}},
    "l": [1, 2, 3],
    "s": "text",
}


def raises_boom(*args: Any) -> Any:
    raise FunctionError("bad input")


def raises_zero_division(*args: Any) -> Any:
    return 1 / 0


def recurses(*args: Any) -> Any:
    return recurses()


def default(fallback: Any, *given: Any) -> Any:
    """A stand-in for Sprig's ``default`` (the real set is another module's)."""
    return given[0] if given and given[0] not in (None, "", 0, False, [], {}) else fallback


@pytest.fixture
def functions(monkeypatch: pytest.MonkeyPatch) -> dict[str, Callable[..., Any]]:
    """Replace the Sprig set with these functions for the test."""
    table: dict[str, Callable[..., Any]] = {
        "boom": raises_boom,
        "crash": raises_zero_division,
        "recurse": recurses,
        "overflow": lambda: 10.0**400,
        "typeerror": lambda: len(5),  # type: ignore[arg-type]
        "default": default,
        "len": lambda *args: 99,
        "shout": lambda text: text.upper(),
        "now": lambda: "2024-01-01T00:00:00Z",
    }
    monkeypatch.setattr(template_package, "_sprig_functions", table)
    return table


def eval_error(text: str, data: Mapping[str, Any] = DATA, **limits: int) -> TemplateEvalError:
    template = compile_template(text)
    with pytest.raises(TemplateEvalError) as caught:
        template.render(data, **limits)
    return caught.value


# value() and condition().


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{{ packet.count }}", 7),
        ("  {{ packet.score }}\n", 0.5),
        ("{{ packet.metadata }}", {"lang": "en"}),
        ("{{ .l }}", [1, 2, 3]),
        ('{{ eq packet.type "speech" }}', True),
        ("{{ packet.missing }}", None),
        ("{{/* note */}}{{ inputs.limit }}", 3),
        ("x{{ packet.count }}", "x7"),
        ("{{ 1 }}{{ 2 }}", "12"),
        ("{{ $x := 1 }}", ""),
        ("no action", "no action"),
    ],
)
def test_value_keeps_the_type_of_a_single_action(text: str, expected: Any) -> None:
    value = compile_template(text).value(DATA)
    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("true", True),
        (" TRUE \n", True),
        ("yes", True),
        ("Y", True),
        ("1", True),
        ("false", False),
        ("No", False),
        ("n", False),
        ("0", False),
        ("", False),
        ("   ", False),
        ("{{ packet.missing }}", False),
        ('{{ eq packet.metadata.lang "en" }}', True),
        ("{{ gt packet.count 10 }}", False),
        ("{{ if packet.count }}yes{{ end }}", True),
        ("{{ len .l }}", None),
        ("{{ 1 }}", True),
        ("{{ 0 }}", False),
    ],
)
def test_condition_applies_bubustack_truth(text: str, expected: bool | None) -> None:
    template = compile_template(text)
    if expected is None:
        with pytest.raises(TemplateEvalError) as caught:
            template.condition(DATA)
        assert caught.value.reason == "not_boolean"
        assert "'3'" in str(caught.value)
        return
    assert template.condition(DATA) is expected


def test_condition_refuses_words_that_are_not_booleans() -> None:
    for text in ("maybe", "{{ packet.type }}", "{{ 2 }}", "truey"):
        with pytest.raises(TemplateEvalError) as caught:
            compile_template(text).condition(DATA)
        assert caught.value.reason == "not_boolean"


def test_routing_condition_with_sprig_default(functions: dict[str, Callable[..., Any]]) -> None:
    template = compile_template('{{ eq (default "" packet.metadata.lang) "en" }}')
    assert template.condition(DATA) is True
    assert template.condition({"packet": {}}) is False
    assert template.condition({}) is False
    assert template.roots == frozenset({"packet"})


# Roots.


@pytest.mark.parametrize(
    ("text", "roots"),
    [
        ("plain", set()),
        ("{{ .other }}{{ $.other.x }}", set()),
        ("{{ packet.a }}", {"packet"}),
        ("{{ .inputs.x }}", {"inputs"}),
        ("{{ $.steps.x }}", {"steps"}),
        ("{{ now }}", {"now"}),
        ("{{ . }}", {"inputs", "steps", "packet", "now"}),
        ("{{ $ }}", {"inputs", "steps", "packet", "now"}),
        ("{{ len $ }}", {"inputs", "steps", "packet", "now"}),
        ("{{ with .inputs }}{{ .packet }}{{ . }}{{ end }}", {"inputs"}),
        ("{{ with .x }}{{ else }}{{ .packet }}{{ end }}", {"packet"}),
        ("{{ range .steps }}{{ $.packet }}{{ .inputs }}{{ end }}", {"steps", "packet"}),
        ("{{ if .inputs.a }}{{ .steps.b }}{{ end }}", {"inputs", "steps"}),
        ('{{ print (index inputs "a") }}', {"inputs"}),
    ],
)
def test_roots_name_the_data_a_template_reads(text: str, roots: set[str]) -> None:
    assert compile_template(text).roots == frozenset(roots)


# now.


def test_now_is_the_data_value_or_else_the_sprig_function(
    functions: dict[str, Callable[..., Any]],
) -> None:
    template = compile_template("{{ now }}")
    assert template.value({"now": "fixed"}) == "fixed"
    assert template.value({}) == "2024-01-01T00:00:00Z"
    del functions["now"]
    assert compile_template("[{{ now }}]").render({}) == "[]"


# Function lookup.


def test_builtins_come_before_sprig_and_sprig_is_used_after(
    functions: dict[str, Callable[..., Any]],
) -> None:
    assert compile_template('{{ len "abc" }}').render({}) == "3"
    assert compile_template('{{ shout "abc" }}').render({}) == "ABC"
    assert compile_template('{{ "abc" | shout }}').render({}) == "ABC"


def test_without_the_sprig_module_only_builtins_exist(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(template_package, "_sprig_functions", {})
    with pytest.raises(TemplateSyntaxError, match="function 'shout' not defined"):
        compile_template('{{ shout "a" }}')
    assert compile_template('{{ len "a" }}').render({}) == "1"


# compile_value.


def test_compile_value_renders_each_template_with_its_type() -> None:
    compiled = compile_value(
        {
            "count": "{{ packet.count }}",
            "prompt": "Say {{ steps.transcribe.text }} in {{ packet.metadata.lang }}",
            "nested": {"voice": "{{ inputs.voice }}", "fixed": [1, "two", None]},
            "list": ["{{ packet.score }}", "static"],
            "flag": True,
        },
        name="respond.runtime",
    )
    assert not compiled.is_static
    assert compiled.roots == frozenset({"packet", "steps", "inputs"})
    assert compiled.render(DATA) == {
        "count": 7,
        "prompt": "Say hello in en",
        "nested": {"voice": "alto", "fixed": [1, "two", None]},
        "list": [0.5, "static"],
        "flag": True,
    }


def test_compile_value_without_templates_is_static() -> None:
    source = {"a": [1, {"b": "no template here"}], "c": None}
    compiled = compile_value(source, name="x")
    assert compiled.is_static
    assert compiled.roots == frozenset()
    assert compiled.render(DATA) == source
    assert compile_value("{{ inputs.limit }}", name="x").render(DATA) == 3


def test_compile_value_syntax_errors_name_the_json_path() -> None:
    with pytest.raises(TemplateSyntaxError) as caught:
        compile_value(
            {"a": {"userPrompt": "ok", "b": ["x", "\n {{ nosuch }}"]}}, name="respond.runtime"
        )
    error = caught.value
    assert error.name == "respond.runtime.a.b[1]"
    assert (error.line, error.column) == (2, 5)
    with pytest.raises(TemplateSyntaxError) as caught:
        compile_value({"userPrompt": "{{ .a | }}"}, name="respond.runtime")
    assert caught.value.name == "respond.runtime.userPrompt"


def test_compile_value_shares_one_budget_and_one_output_cap() -> None:
    loop = "{{ range 10 }}x{{ end }}"  # 1 statement + 1 command + 10 iterations = 12 steps
    assert compile_template(loop).render({}, budget=12) == "x" * 10
    compiled = compile_value({"a": loop, "b": loop}, name="v")
    assert compiled.render({}, budget=24) == {"a": "x" * 10, "b": "x" * 10}
    with pytest.raises(TemplateEvalError) as caught:
        compiled.render({}, budget=23)
    assert caught.value.reason == "budget"
    assert compiled.render({}, max_output=20) == {"a": "x" * 10, "b": "x" * 10}
    with pytest.raises(TemplateEvalError) as caught:
        compiled.render({}, max_output=19)
    assert caught.value.reason == "output_too_large"
    strings = compile_value(["{{ .s }}", "{{ .s }}"], name="v")
    assert strings.render({"s": "abcd"}, max_output=8) == ["abcd", "abcd"]
    with pytest.raises(TemplateEvalError) as caught:
        strings.render({"s": "abcd"}, max_output=7)
    assert caught.value.reason == "output_too_large"


# Limits.


def test_budget_counts_range_iterations() -> None:
    template = compile_template("{{ range .l }}{{ . }}{{ end }}")
    assert template.render({"l": list(range(10))}) == "0123456789"
    with pytest.raises(TemplateEvalError) as caught:
        template.render({"l": list(range(10))}, budget=15)
    assert caught.value.reason == "budget"
    with pytest.raises(TemplateEvalError) as caught:
        compile_template("{{ range 1000000 }}{{ end }}").render({})
    assert caught.value.reason == "budget"


def test_budget_charges_big_strings_built_by_functions() -> None:
    template = compile_template('{{ range 50 }}{{ $x := printf "%100000d" 1 }}{{ end }}')
    # 50 iterations of (2 steps + ~97 per 100 kB string) ~ 5,000 steps; no output at all.
    assert template.render({}, budget=6000) == ""
    with pytest.raises(TemplateEvalError) as caught:
        template.render({}, budget=4000)
    assert caught.value.reason == "budget"


def test_output_cap() -> None:
    template = compile_template("{{ range 10 }}abc{{ end }}")
    assert template.render({}, max_output=30) == "abc" * 10
    error = eval_error("{{ range 10 }}abc{{ end }}", {}, max_output=29)
    assert error.reason == "output_too_large"
    with pytest.raises(TemplateEvalError) as caught:
        compile_template("{{ .s }}").value({"s": "x" * 11}, max_output=10)
    assert caught.value.reason == "output_too_large"


# Every error reason.


@pytest.mark.parametrize(
    ("text", "reason", "fragment"),
    [
        ("{{ .s.field }}", "type_error", "can't evaluate field field in type string"),
        ("{{ .l.field }}", "type_error", "in type []interface {}"),
        ('{{ eq 1 "1" }}', "type_error", "incompatible types for comparison"),
        ("{{ eq .l .l }}", "type_error", "non-comparable"),
        ("{{ lt true false }}", "type_error", "invalid type for comparison"),
        ("{{ len 5 }}", "type_error", "len of type int"),
        ("{{ range .s }}{{ end }}", "type_error", "range can't iterate over text"),
        ("{{ range $i, $v := 3 }}{{ end }}", "type_error", "more than one variable"),
        ("{{ .l 1 }}", "type_error", "not a method but has arguments"),
        ("{{ 1 | .l }}", "type_error", "not a method but has arguments"),
        ("{{ $x := 1 }}{{ $x 2 }}", "type_error", "can't give argument to non-function $x"),
        ("{{ nil }}", "type_error", "nil is not a command"),
        ("{{ 1 2 }}", "type_error", "can't give argument to non-function"),
        ('{{ index .l "a" }}', "type_error", "cannot index slice/array with type string"),
        ("{{ index 5 1 }}", "type_error", "can't index item of type int"),
        ("{{ slice nil 1 }}", "type_error", "slice of untyped nil"),
        ("{{ index .l 3 }}", "index_out_of_range", "index out of range: 3"),
        ("{{ index .l -1 }}", "index_out_of_range", "index out of range: -1"),
        ('{{ index "ab" 2 }}', "index_out_of_range", "index out of range: 2"),
        ("{{ slice .l 2 1 }}", "index_out_of_range", "invalid slice index: 2 > 1"),
        ("{{ slice .l 0 9 }}", "index_out_of_range", "index out of range: 9"),
        ("{{ not 1 2 }}", "function_error", "not: wrong number of args: want 1 got 2"),
        ("{{ eq 1 }}", "function_error", "eq: missing argument for comparison"),
        ("{{ printf 5 }}", "function_error", "printf: format must be a string"),
        ("{{ and }}", "function_error", "and: wrong number of args"),
        ("{{ slice .l 1 2 3 4 }}", "function_error", "too many slice indexes"),
    ],
)
def test_evaluation_errors_have_a_reason_and_a_position(
    text: str, reason: str, fragment: str
) -> None:
    error = eval_error(text)
    assert error.reason == reason
    assert fragment in str(error)
    assert "(at template:1:" in str(error)


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("boom", "boom: bad input"),
        ("crash", "crash: ZeroDivisionError"),
        ("recurse", "recurse: nested too deeply"),
        ("overflow", "overflow: OverflowError"),
        ("typeerror", "typeerror: TypeError"),
    ],
)
def test_any_exception_of_a_function_is_a_function_error(
    functions: dict[str, Callable[..., Any]], name: str, fragment: str
) -> None:
    error = eval_error(f"x {{{{ {name} }}}}")
    assert error.reason == "function_error"
    assert str(error).startswith(fragment)
    assert str(error).endswith("(at template:1:6)")
    piped = eval_error(f'{{{{ "a" | {name} }}}}')
    assert piped.reason == "function_error"


def test_wrong_arity_for_a_python_function_is_a_function_error(
    functions: dict[str, Callable[..., Any]],
) -> None:
    error = eval_error('{{ shout "a" "b" }}')
    assert error.reason == "function_error"
    assert str(error).startswith("shout: TypeError")


def test_a_hostile_mapping_still_fails_as_a_template_error() -> None:
    class Hostile(Mapping[str, Any]):
        def __getitem__(self, key: str) -> Any:
            raise RuntimeError("nope")

        def __iter__(self) -> Iterator[str]:
            return iter(["a"])

        def __len__(self) -> int:
            return 1

    error = eval_error("{{ .a.b }}", {"a": Hostile()})
    assert error.reason == "internal"


def test_deeply_nested_data_fails_as_a_template_error() -> None:
    value: Any = []
    for _ in range(100_000):
        value = [value]
    error = eval_error("{{ .v }}", {"v": value})
    assert error.reason == "budget"
