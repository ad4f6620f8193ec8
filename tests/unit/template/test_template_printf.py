"""``printf`` and the ``%v`` printing of values, as Go's fmt package documents them."""

from __future__ import annotations

from typing import Any

import pytest

from bobravoz.runtime.template import compile_template
from bobravoz.runtime.template.gofmt import quote, sprint, sprintf, sprintln
from bobravoz.runtime.template.values import format_float_g


@pytest.mark.parametrize(
    ("template", "args", "expected"),
    [
        # Integers.
        ("%d", [42], "42"),
        ("%5d|%-5d|%05d", [42, 42, 42], "   42|42   |00042"),
        ("%+d % d %+d", [5, 5, -5], "+5  5 -5"),
        ("%x %X %#x %#X", [255, 255, 255, 255], "ff FF 0xff 0XFF"),
        ("%x", [-255], "-ff"),
        ("%o %#o %O %b %#b", [8, 8, 8, 5, 5], "10 010 0o10 101 0b101"),
        ("%c %q %U %#U", [65, 65, 0x1F600, 65], "A 'A' U+1F600 U+0041 'A'"),
        ("%.3d|%8.3d|%-8d|%-08d|", [7, 7, 7, 7], "007|     007|7       |7       |"),
        ("%+08d|%08d", [42, -42], "+0000042|-0000042"),
        ("%.0d|", [0], "|"),
        ("%v", [-7], "-7"),
        # Floats.
        ("%05.2f", [3.14159], "03.14"),
        (
            "%f %.2f %.0f %8.3f|%-8.2f|",
            [3.14159, 2.675, 2.5, 3.14159, 3.14159],
            "3.141590 2.67 2    3.142|3.14    |",
        ),
        ("%+.1f %08.3f % .2f", [2.0, -3.14159, 1.5], "+2.0 -003.142  1.50"),
        ("%e %E %.2e", [1234.5678, 1234.5678, 0.0], "1.234568e+03 1.234568E+03 0.00e+00"),
        ("%g %g %g %g", [1234.5678, 0.000012, 1e6, 100000.0], "1234.5678 1.2e-05 1e+06 100000"),
        ("%.3g %G %.10g", [1234.5678, 1e-7, 0.1], "1.23e+03 1E-07 0.1"),
        ("%v %v %v", [2.5, 3.0, 1e21], "2.5 3 1e+21"),
        ("%x %X", [1.0, 0.5], "0x1p+00 0X1P-01"),
        ("%6.2f%%", [99.5], " 99.50%"),
        # An int takes the float verbs (a JSON number is a float64 in Go).
        ("%.2f %e", [3, 10], "3.00 1.000000e+01"),
        # Strings.
        ("%s|%5s|%-5s|%.2s", ["hi", "ab", "ab", "hello"], "hi|   ab|ab   |he"),
        ("%q %+q %#q", ["hi\n", "é", "back`tick"], '"hi\\n" "\\u00e9" "back`tick"'),
        ("%#q", ["raw"], "`raw`"),
        ("%x %X % x %#x", ["hi", "hi", "hi", "hi"], "6869 6869 68 69 0x6869"),
        ("%v %s", ["é", "日本"], "é 日本"),
        # Booleans, nil, composite values.
        ("%t %v %5t", [True, False, True], "true false  true"),
        ("%v", [None], "<nil>"),
        ("%v %d", [[1, 2], [1, 2]], "[1 2] [1 2]"),
        ("%v", [{"b": [1], "a": None}], "map[a:<nil> b:[1]]"),
        ("%q", [["a", "b"]], '["a" "b"]'),
        (
            "%#v %#v %#v",
            ["x", [1, "a"], {"a": 1}],
            '"x" []interface {}{1, "a"} map[string]interface {}{"a":1}',
        ),
        (
            "%T %T %T %T %T %T %T",
            [1, "x", 1.5, True, [1], {"a": 1}, None],
            "int string float64 bool []interface {} map[string]interface {} <nil>",
        ),
        # Argument indexes and star width/precision.
        ("%[2]d %[1]d", [1, 2], "2 1"),
        ("%*d|%-*d|%.*f", [5, 42, 5, 42, 2, 3.14159], "   42|42   |3.14"),
        # Errors are written into the output, as Go does.
        ("%d", ["x"], "%!d(string=x)"),
        ("%d %s", [], "%!d(MISSING) %!s(MISSING)"),
        ("%d", [1, 2, "x"], "1%!(EXTRA int=2, string=x)"),
        ("%d", [1, None], "1%!(EXTRA <nil>)"),
        ("%z", [1], "%!z(int=1)"),
        ("%s %d", [None, None], "%!s(<nil>) %!d(<nil>)"),
        ("%d %t", [1.5, 1], "%!d(float64=1.5) %!t(int=1)"),
        ("100%", [], "100%!(NOVERB)"),
        ("%%", [], "%"),
        ("%[3]d", [1], "%!d(BADINDEX)"),
        ("%*d", ["x", 1], "%!(BADWIDTH)1"),
        ("%d", [[1, "a"]], "[1 %!d(string=a)]"),
    ],
)
def test_sprintf(template: str, args: list[Any], expected: str) -> None:
    assert sprintf(template, *args) == expected


def test_printf_in_a_template() -> None:
    template = compile_template('{{ printf "%s has %d items (%.1f%%)" .name (len .l) .ratio }}')
    assert template.render({"name": "cart", "l": [1, 2, 3], "ratio": 42.25}) == (
        "cart has 3 items (42.2%)"
    )


def test_sprint_spaces_only_between_two_non_strings() -> None:
    assert sprint("a", 1, 2, "b", "c", 3.5, True) == "a1 2bc3.5 true"
    assert sprint() == ""
    assert sprintln("a", 1, None) == "a 1 <nil>\n"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1.0, "1"),
        (-0.0, "-0"),
        (123456.0, "123456"),
        (1234567.0, "1.234567e+06"),
        (1e6, "1e+06"),
        (0.0001, "0.0001"),
        (0.00001, "1e-05"),
        (0.1 + 0.2, "0.30000000000000004"),
        (1e21, "1e+21"),
        (5e-324, "5e-324"),
        (float("inf"), "+Inf"),
        (float("-inf"), "-Inf"),
        (float("nan"), "NaN"),
    ],
)
def test_float_v_is_go_shortest_g(value: float, expected: str) -> None:
    assert format_float_g(value) == expected


def test_quote_escapes_like_strconv() -> None:
    assert quote('a"b\\c\x00\x7f\u200b😀é') == '"a\\"b\\\\c\\x00\\x7f\\u200b😀é"'
    assert quote("é😀", ascii_only=True) == '"\\u00e9\\U0001f600"'
