"""The safe Sprig set: each function against the value Sprig's documentation or Go gives.

Expected values come from masterminds.github.io/sprig (the documented examples), from the
Go standard library's documented behaviour (strconv, regexp, encoding/json, base64, time)
and from huandu/xstrings' documented samples. Property tests check that every function,
whatever JSON-like arguments it gets, returns a JSON-like value or raises FunctionError.
"""

from __future__ import annotations

import base64
import math
import re
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bobravoz.runtime.template.errors import FunctionError
from bobravoz.runtime.template.sprig import FUNCTIONS
from bobravoz.runtime.template.sprig_args import MAX_LIST, MAX_STRING


def call(name: str, *args: Any) -> Any:
    return FUNCTIONS[name](*args)


def same(actual: Any, expected: Any) -> bool:
    """Equal with the same JSON-like types (1 and 1.0 differ, as int and float64 do)."""
    if type(actual) is not type(expected):
        return False
    if isinstance(expected, list):
        return len(actual) == len(expected) and all(map(same, actual, expected))
    if isinstance(expected, dict):
        return actual.keys() == expected.keys() and all(
            same(actual[k], expected[k]) for k in expected
        )
    if isinstance(expected, float) and math.isnan(expected):
        return math.isnan(actual)
    return bool(actual == expected)


EXAMPLES: list[tuple[str, tuple[Any, ...], Any]] = [
    # defaults (docs/defaults.md)
    ("default", ("foo", None), "foo"),
    ("default", ("foo", ""), "foo"),
    ("default", ("foo", 0), "foo"),
    ("default", ("foo", 0.0), "foo"),
    ("default", ("foo", False), "foo"),
    ("default", ("foo", []), "foo"),
    ("default", ("foo", {}), "foo"),
    ("default", ("foo",), "foo"),
    ("default", ("foo", "bar"), "bar"),
    ("default", ("foo", True), True),
    ("default", ("foo", [0]), [0]),
    ("empty", (None,), True),
    ("empty", ("",), True),
    ("empty", (0,), True),
    ("empty", ({},), True),
    ("empty", ("x",), False),
    ("empty", (math.nan,), False),
    ("coalesce", (0, 1, 2), 1),
    ("coalesce", (None, "", "Matt"), "Matt"),
    ("coalesce", (0, ""), None),
    ("all", (0, 1, 2), False),
    ("all", (1, "a", [1]), True),
    ("all", (), True),
    ("any", (0, 1, 2), True),
    ("any", (), False),
    ("ternary", ("foo", "bar", True), "foo"),
    ("ternary", ("foo", "bar", False), "bar"),
    # strings (docs/strings.md)
    ("trim", ("   hello    ",), "hello"),
    ("trim", ("\u00a0\t x \u3000",), "x"),
    ("trimAll", ("$", "$5.00"), "5.00"),
    ("trimall", ("$", "$5.00$"), "5.00"),
    ("trimSuffix", ("-", "hello-"), "hello"),
    ("trimPrefix", ("-", "-hello"), "hello"),
    ("upper", ("hello",), "HELLO"),
    ("upper", ("straße",), "STRAßE"),  # Go's simple case mapping keeps ß
    ("lower", ("HELLO",), "hello"),
    ("lower", ("ΟΔΟΣ",), "οδοσ"),  # no final-sigma rule in Go
    ("title", ("hello world",), "Hello World"),
    ("title", ("her royal highness",), "Her Royal Highness"),
    ("title", ("хлеб",), "Хлеб"),
    ("title", ("o'neil is HERE",), "O'Neil Is HERE"),
    ("untitle", ("Hello World",), "hello world"),
    ("repeat", (3, "hello"), "hellohellohello"),
    ("repeat", (0, "hello"), ""),
    ("substr", (0, 5, "hello world"), "hello"),
    ("substr", (0, 3, "fooo"), "foo"),
    ("substr", (0, 10, "foo"), "foo"),
    ("substr", (-1, 2, "foo"), "fo"),
    ("substr", (1, -1, "foo"), "oo"),
    ("nospace", ("hello w o r l d",), "helloworld"),
    ("trunc", (5, "hello world"), "hello"),
    ("trunc", (-5, "hello world"), "world"),
    ("trunc", (3, "foooooo"), "foo"),
    ("trunc", (-3, "baaaaaar"), "aar"),
    ("trunc", (-999, "baaaaaar"), "baaaaaar"),
    ("trunc", (0, "baaaaaz"), ""),
    ("trunc", (2, "héllo"), "h\ufffd"),  # Go counts bytes: "é" is cut in half
    ("abbrev", (5, "hello world"), "he..."),
    ("abbrev", (3, "hello world"), "hello world"),
    ("abbrev", (20, "hello world"), "hello world"),
    ("abbrevboth", (5, 10, "1234 5678 9123"), "...5678..."),
    # goutils' documented examples (Sprig's abbrev, abbrevboth, wrap, wrapWith call them)
    ("abbrev", (6, "abcdefg"), "abc..."),
    ("abbrev", (7, "abcdefg"), "abcdefg"),
    ("abbrev", (4, "abcdefg"), "a..."),
    ("abbrevboth", (-1, 10, "abcdefghijklmno"), "abcdefg..."),
    ("abbrevboth", (0, 10, "abcdefghijklmno"), "abcdefg..."),
    ("abbrevboth", (4, 10, "abcdefghijklmno"), "abcdefg..."),
    ("abbrevboth", (5, 10, "abcdefghijklmno"), "...fghi..."),
    ("abbrevboth", (6, 10, "abcdefghijklmno"), "...ghij..."),
    ("abbrevboth", (8, 10, "abcdefghijklmno"), "...ijklmno"),
    ("abbrevboth", (12, 10, "abcdefghijklmno"), "...ijklmno"),
    ("abbrevboth", (5, 6, "abcdefghij"), "abcdefghij"),
    ("wrap", (10, "Bob Manuel Bob Manuel"), "Bob Manuel\nBob Manuel"),
    (
        "wrap",
        (20, "Here is one line of text that is going to be wrapped after 20 columns."),
        "Here is one line of\ntext that is going\nto be wrapped after\n20 columns.",
    ),
    (
        "wrap",
        (20, "Click here to jump to the commons website - http://commons.apache.org"),
        "Click here to jump\nto the commons\nwebsite -\nhttp://commons.apache.org",
    ),
    (
        "wrap",
        (20, "Click here, http://commons.apache.org, to jump to the commons website"),
        "Click here,\nhttp://commons.apache.org,\nto jump to the\ncommons website",
    ),
    ("wrap", (11, "123456789_123456789_1234567890"), "123456789_123456789_1234567890"),
    (
        "wrapWith",
        (11, "\n", "123456789_123456789_123456789_123456789_1234567890"),
        "123456789_1\n23456789_12\n3456789_123\n456789_1234\n567890",
    ),
    ("wrapWith", (10, "<br\\>", "BobManuelBob Bob"), "BobManuelB<br\\>ob Bob"),
    ("initials", ("John Doe.Ray",), "JD"),
    ("nospace", ("  b  o    b  ",), "bob"),
    ("initials", ("First Try",), "FT"),
    ("initials", ("  John   Doe Foo",), "JDF"),
    ("wrap", (5, "Hello World"), "Hello\nWorld"),
    ("wrap", (3, "a verylongword b"), "a\nverylongword\nb"),
    ("wrapWith", (5, "\t", "Hello World"), "Hello\tWorld"),
    ("wrapWith", (3, "\n", "abcdefgh"), "abc\ndef\ngh"),
    ("contains", ("cat", "catch"), True),
    ("contains", ("dog", "catch"), False),
    ("hasPrefix", ("cat", "catch"), True),
    ("hasSuffix", ("ch", "catch"), True),
    ("quote", ("a", "b", "c"), '"a" "b" "c"'),
    ("quote", ('"a"', "b", "c"), '"\\"a\\"" "b" "c"'),
    ("quote", (1, 2, 3), '"1" "2" "3"'),
    ("quote", (None,), ""),
    ("quote", ("Fran & Freddie's Diner\t☺\n\x7f",), '"Fran & Freddie\'s Diner\\t☺\\n\\x7f"'),
    ("squote", ("a", "b", "c"), "'a' 'b' 'c'"),
    ("squote", (1, 2, 3), "'1' '2' '3'"),
    ("squote", (None, "x"), "'x'"),
    ("cat", ("hello", "beautiful", "world"), "hello beautiful world"),
    ("cat", ("a", "b", "c"), "a b c"),
    ("cat", ("a", None, "b"), "a b"),
    ("cat", ("n", 1, 2.5, True, [1, "x"], {"k": 1}), "n 1 2.5 true [1 x] map[k:1]"),
    ("indent", (4, "a\nb\nc"), "    a\n    b\n    c"),
    ("nindent", (4, "a\nb\nc"), "\n    a\n    b\n    c"),
    ("replace", (" ", "-", "I Am Henry VIII"), "I-Am-Henry-VIII"),
    ("replace", ("", "-", "abc"), "-a-b-c-"),
    ("plural", ("one anchovy", "many anchovies", 1), "one anchovy"),
    ("plural", ("one anchovy", "many anchovies", 0), "many anchovies"),
    ("plural", ("cheese", "%d chars", 1), "cheese"),
    ("snakecase", ("FirstName",), "first_name"),
    ("snakecase", ("HTTPServer",), "http_server"),
    ("snakecase", ("NoHTTPS",), "no_https"),
    ("snakecase", ("GO_PATH",), "go_path"),
    ("snakecase", ("GO PATH",), "go_path"),
    ("snakecase", ("GO-PATH",), "go_path"),
    ("snakecase", ("http2xx",), "http_2xx"),
    ("snakecase", ("HTTP20xOK",), "http_20x_ok"),
    ("snakecase", ("Duration2m3s",), "duration_2m3s"),
    ("snakecase", ("Bld4Floor3rd",), "bld4_floor_3rd"),
    # xstrings' own test table (Sprig's snakecase/kebabcase/camelcase call it)
    ("snakecase", ("_camelCase",), "_camel_case"),
    ("snakecase", ("Wi_thF",), "wi_th_f"),
    ("snakecase", ("_AnotherTES_TCaseP",), "_another_tes_t_case_p"),
    ("snakecase", ("HTTP2XX",), "http2_xx"),
    ("snakecase", ("HELLO____WORLD",), "hello____world"),
    ("snakecase", (" _-_ ",), "_____"),
    ("snakecase", ("a1b2c3d",), "a_1b2c3d"),
    ("snakecase", ("A//B%%2c",), "a//b%%2c"),
    ("snakecase", ("HTTP状态码404/502Error",), "http_状态码404/502_error"),
    ("snakecase", ("混合ABCWords与123数字456",), "混合_abc_words_与123_数字456"),
    ("snakecase", ("  sentence case  ",), "__sentence_case__"),
    ("snakecase", ("abc_123_def",), "abc_123_def"),
    ("kebabcase", ("FROM CamelCase to snake/kebab-case",), "from-camel-case-to-snake/kebab-case"),
    ("camelcase", ("_camel_case",), "_CamelCase"),
    ("camelcase", (" complex -case ",), " Complex Case "),
    ("camelcase", ("GOLANG",), "Golang"),
    ("camelcase", ("好",), "好"),
    ("kebabcase", ("FirstName",), "first-name"),
    ("kebabcase", ("HTTPServer",), "http-server"),
    ("kebabcase", ("GO_PATH",), "go-path"),
    ("kebabcase", ("HTTP20xOK",), "http-20x-ok"),
    ("kebabcase", ("Bld4Floor3rd",), "bld4-floor-3rd"),
    ("camelcase", ("http_server",), "HttpServer"),
    ("camelcase", ("some_words",), "SomeWords"),
    ("camelcase", ("no_https",), "NoHttps"),
    ("camelcase", ("_complex__case_",), "_Complex_Case_"),
    ("camelcase", ("some words",), "SomeWords"),
    ("camelcase", ("GOLANG_IS_GREAT",), "GolangIsGreat"),
    ("swapcase", ("This Is A.Test",), "tHIS iS a.tEST"),
    ("toString", (1,), "1"),
    ("toString", (2.5,), "2.5"),
    ("toString", (1e6,), "1e+06"),
    ("toString", (True,), "true"),
    ("toString", (None,), "<nil>"),
    ("toString", ([1, "a"],), "[1 a]"),
    ("toStrings", ([1, 2, 3],), ["1", "2", "3"]),
    ("toStrings", ([1, None, 2],), ["1", "2"]),
    ("toStrings", ("x",), ["x"]),
    ("toStrings", (None,), []),
    ("split", ("$", "foo$bar$baz"), {"_0": "foo", "_1": "bar", "_2": "baz"}),
    ("splitList", ("$", "foo$bar$baz"), ["foo", "bar", "baz"]),
    ("splitList", (",", ""), [""]),
    ("splitList", ("", "abc"), ["a", "b", "c"]),
    ("splitn", ("$", 2, "foo$bar$baz"), {"_0": "foo", "_1": "bar$baz"}),
    ("splitn", ("$", 0, "foo$bar"), {}),
    ("splitn", ("$", -1, "foo$bar"), {"_0": "foo", "_1": "bar"}),
    ("splitn", ("", 2, "abc"), {"_0": "a", "_1": "bc"}),
    ("join", ("_", ["hello", "world"]), "hello_world"),
    ("join", ("+", [1, 2, 3]), "1+2+3"),
    ("join", (",", [1, None, 2]), "1,2"),
    ("join", (",", "abc"), "abc"),
    ("join", (",", None), ""),
    ("sortAlpha", (["c", "a", "b"],), ["a", "b", "c"]),
    ("sortAlpha", ([3, 1, 2],), ["1", "2", "3"]),
    ("sortAlpha", ("x",), ["x"]),
    # regular expressions (docs/strings.md; Go's regexp documentation)
    ("regexMatch", ("^[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\\.[A-Za-z]{2,}$", "test@acme.com"), True),
    ("regexMatch", ("[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\\.[A-Za-z]{2,}", "test@acme"), False),
    ("regexMatch", ("(", "x"), False),
    ("mustRegexMatch", ("^a$", "a\n"), False),  # Go's $ is the end of text without (?m)
    ("regexMatch", ("(?m)^b$", "a\nb\nc"), True),
    ("regexMatch", ("(?i)k", "\u212a"), True),  # Kelvin sign folds to k, as in Go
    ("regexFindAll", ("[2,4,6,8]", "123456789", -1), ["2", "4", "6", "8"]),
    ("regexFindAll", ("a.", "paranormal", -1), ["ar", "an", "al"]),
    ("regexFindAll", ("a.", "paranormal", 2), ["ar", "an"]),
    ("regexFindAll", ("a{2}", "aaaaaaaa", 1), ["aa"]),
    ("regexFindAll", ("a.", "none", -1), []),
    ("regexFindAll", ("a*", "baaac", -1), ["", "aaa", ""]),  # no empty match after a match
    ("regexFind", ("[a-zA-Z][1-9]", "abcd1234"), "d1"),
    ("regexFind", ("fo.?", "foo foe fome"), "foo"),
    ("regexFind", ("fo.?", "none"), ""),
    ("regexReplaceAll", ("a(x*)b", "-ab-axxb-", "${1}W"), "-W-xxW-"),
    ("regexReplaceAll", ("a(x*)b", "-ab-axxb-", "T"), "-T-T-"),
    ("regexReplaceAll", ("a(x*)b", "-ab-axxb-", "$1"), "--xx-"),
    ("regexReplaceAll", ("a(x*)b", "-ab-axxb-", "$1W"), "---"),
    ("regexReplaceAll", ("a(?P<1W>x*)b", "-ab-axxb-", "$1W"), "--xx-"),
    ("regexReplaceAll", ("a(?P<1W>x*)b", "-ab-axxb-", "${1}W"), "-W-xxW-"),
    ("regexReplaceAll", ("a(?P<n>x*)b", "-axb-", "[$n|${n}|$$|$]"), "-[x|x|$|$]-"),
    ("regexReplaceAll", ("a*", "baaac", "X"), "XbXcX"),
    ("regexReplaceAll", ("(é)", "café", "<$1>"), "caf<é>"),
    ("regexReplaceAllLiteral", ("a(x*)b", "-ab-axxb-", "${1}"), "-${1}-${1}-"),
    ("regexReplaceAllLiteral", ("a(x*)b", "-ab-axxb-", "$1"), "-$1-$1-"),
    ("regexSplit", ("z+", "pizza", -1), ["pi", "a"]),
    ("regexSplit", ("z+", "pizza", 0), []),
    ("regexSplit", ("z+", "pizza", 1), ["pizza"]),
    ("regexSplit", ("a", "banana", -1), ["b", "n", "n", ""]),
    ("regexSplit", ("a", "papaya", 2), ["p", "paya"]),
    ("regexSplit", ("a*", "abaabaccadaaae", 5), ["", "b", "b", "c", "cadaaae"]),
    ("regexSplit", ("x", "", -1), [""]),
    ("regexQuoteMeta", ("1.2.3",), "1\\.2\\.3"),
    (
        "regexQuoteMeta",
        ("Escaping symbols like: .+*?()|[]{}^$",),
        "Escaping symbols like: \\.\\+\\*\\?\\(\\)\\|\\[\\]\\{\\}\\^\\$",
    ),
    # integer math (docs/math.md; numeric_test expectations)
    ("add", (1, 2, 3), 6),
    ("add", (), 0),
    ("add", ("2", 3.9, True, None, "x"), 6),
    ("add", (2**63 - 1, 1), -(2**63)),  # int64 wraps around
    ("add1", (3,), 4),
    ("sub", (14, 3), 11),
    ("div", (5, 4), 1),
    ("div", (-7, 2), -3),  # truncates toward zero
    ("mod", (-7, 2), -1),
    ("mod", (7, -2), 1),
    ("mul", (1, "2", 3, "4"), 24),
    ("max", (1, 2, 3, 345, 5, 6, 7), 345),
    ("biggest", (1, 2, 3, 345, 5, 6, 7), 345),
    ("max", (345,), 345),
    ("min", (1, 2, 3, 345, 5, 6, 7), 1),
    ("floor", (123.9999,), 123.0),
    ("floor", ("123.9999",), 123.0),
    ("floor", (123,), 123.0),
    ("ceil", (123.001,), 124.0),
    ("ceil", ("123",), 123.0),
    ("round", (123.555555, 3), 123.556),
    ("round", (123.5555, 3), 123.556),
    ("round", ("123.55555", 3), 123.556),
    ("round", (123.500001, 0), 124.0),
    ("round", (123.49999999, 0), 123.0),
    ("round", (123.2329999, 2, 0.3), 123.23),
    ("round", (123.233, 2, 0.3), 123.24),
    ("round", (-1.2, 0), -2.0),  # Sprig's rounding of negative numbers
    ("int", ("102",), 102),
    ("int", (102.1234,), 102),
    ("int", (-102.9,), -102),
    ("int", (True,), 1),
    ("int", ("frankie",), 0),
    ("int", (None,), 0),
    ("int", ([1],), 0),
    ("int64", ("0x1F",), 31),
    ("int64", ("010",), 8),  # Go base-0 parsing: leading 0 is octal
    ("int64", ("0b101",), 5),
    ("int64", ("1_000",), 1000),
    ("int64", ("5.7",), 5),
    ("int64", ("-.5",), 0),
    ("int64", (" 5",), 0),
    ("int64", ("9223372036854775808",), 0),  # out of range: cast gives 0
    ("float64", ("102",), 102.0),
    ("float64", ("1e3",), 1000.0),
    ("float64", ("frankie",), 0.0),
    ("float64", (True,), 1.0),
    ("float64", (3,), 3.0),
    ("float64", ("0x1p-2",), 0.25),
    ("float64", ("1e400",), 0.0),
    ("atoi", ("007",), 7),
    ("atoi", ("-42",), -42),
    ("atoi", ("0x1F",), 0),
    ("atoi", ("4.5",), 0),
    ("toDecimal", ("0777",), 511),
    ("toDecimal", ("777",), 511),
    ("toDecimal", (770,), 504),
    ("toDecimal", ("9",), 0),
    ("until", (5,), [0, 1, 2, 3, 4]),
    ("until", (-3,), [0, -1, -2]),
    ("untilStep", (3, 6, 2), [3, 5]),
    ("untilStep", (0, -10, -2), [0, -2, -4, -6, -8]),
    ("untilStep", (3, 0, 1), []),
    ("untilStep", (3, 99, 0), []),
    ("untilStep", (3, 99, -1), []),
    ("seq", (5,), "1 2 3 4 5"),
    ("seq", (-3,), "1 0 -1 -2 -3"),
    ("seq", (0, 2), "0 1 2"),
    ("seq", (2, -2), "2 1 0 -1 -2"),
    ("seq", (0, 2, 10), "0 2 4 6 8 10"),
    ("seq", (0, -2, -5), "0 -2 -4"),
    ("seq", (0, 1, 3), "0 1 2 3"),
    ("seq", (0, 3, 10), "0 3 6 9"),
    ("seq", (3, 3, 2), ""),
    ("seq", (3, -3, 2), "3"),
    ("seq", (), ""),
    ("seq", (0,), "1 0"),
    ("seq", (0, 1, 2, 3), ""),
    # float math (docs/mathf.md)
    ("addf", (1.5, 2, 2), 5.5),
    ("addf", (3, 1.5, 2.2), 6.7),
    ("addf", (0.1, 0.2), 0.3),  # exact decimals, not 0.30000000000000004
    ("addf", (), 0.0),
    ("add1f", (3.4,), 4.4),
    ("subf", (7.5, 2, 3), 2.5),
    ("subf", (4.5, 1, 3), 0.5),
    ("divf", (10, 2, 4), 1.25),
    ("divf", (5, 4, 2), 0.625),
    ("divf", (1, 3), 0.3333333333333333),
    ("mulf", (1.5, 2, 2), 6.0),
    ("mulf", (1.2, "2.4", 10, "4"), 115.2),
    ("maxf", (1, 2.5, 3), 3.0),
    ("maxf", (1, 2, 3, 345.7, 5, 6, 7), 345.7),
    ("minf", (1.5, 2, 3), 1.5),
    ("minf", (345,), 345.0),
    # lists (docs/lists.md)
    ("list", (1, 2, 3, 4, 5), [1, 2, 3, 4, 5]),
    ("tuple", (1, "a"), [1, "a"]),
    ("first", ([1, 2, 3, 4, 5],), 1),
    ("first", ([],), None),
    ("mustFirst", ([7],), 7),
    ("rest", ([1, 2, 3, 4, 5],), [2, 3, 4, 5]),
    ("last", ([1, 2, 3, 4, 5],), 5),
    ("initial", ([1, 2, 3, 4, 5],), [1, 2, 3, 4]),
    ("append", ([1, 2, 3, 4, 5], 6), [1, 2, 3, 4, 5, 6]),
    ("push", ([], 6), [6]),
    ("prepend", ([1, 2, 3, 4, 5], 0), [0, 1, 2, 3, 4, 5]),
    ("concat", ([1, 2, 3, 4, 5], [6, 7], [8]), [1, 2, 3, 4, 5, 6, 7, 8]),
    ("concat", (), []),
    ("reverse", ([1, 2, 3, 4, 5],), [5, 4, 3, 2, 1]),
    ("uniq", ([1, 1, 1, 2],), [1, 2]),
    ("uniq", ([1, 1.0, True, [1], [1], {"a": 1}, {"a": 1}],), [1, 1.0, True, [1], {"a": 1}]),
    ("uniq", ([math.nan, math.nan],), [math.nan, math.nan]),  # NaN never equals NaN
    ("without", ([1, 2, 3, 4, 5], 3), [1, 2, 4, 5]),
    ("without", ([1, 2, 3, 4, 5], 1, 3, 5), [2, 4]),
    ("has", (4, [1, 2, 3, 4, 5]), True),
    ("has", ("hello", [1, 2, 3, 4, 5]), False),
    ("has", (4, [4.0]), False),  # DeepEqual: int and float64 differ
    ("has", (1, None), False),
    ("compact", ([1, "a", "foo", ""],), [1, "a", "foo"]),
    ("compact", ([0, None, False, [], {}, 0.0],), []),
    ("slice", ([1, 2, 3, 4, 5],), [1, 2, 3, 4, 5]),
    ("slice", ([1, 2, 3, 4, 5], 3), [4, 5]),
    ("slice", ([1, 2, 3, 4, 5], 1, 3), [2, 3]),
    ("slice", ([1, 2, 3, 4, 5], 0, 3), [1, 2, 3]),
    ("slice", ([1, 2, 3], "1"), [2, 3]),
    ("slice", ([],), None),
    ("chunk", (3, [1, 2, 3, 4, 5, 6, 7, 8]), [[1, 2, 3], [4, 5, 6], [7, 8]]),
    ("chunk", (4, [1, 2, 3, 4, 5, 6, 7, 8]), [[1, 2, 3, 4], [5, 6, 7, 8]]),
    ("chunk", (2, []), []),
    # dicts (docs/dicts.md)
    ("dict", ("name1", "value1", "name2", "value2"), {"name1": "value1", "name2": "value2"}),
    ("dict", ("a", 1, "b"), {"a": 1, "b": ""}),
    ("dict", (1, "one", None, "nil"), {"1": "one", "<nil>": "nil"}),
    ("dict", (), {}),
    ("get", ({"name1": "value1"}, "name1"), "value1"),
    ("get", ({"name1": "value1"}, "missing"), ""),
    ("get", (None, "x"), ""),
    ("hasKey", ({"name1": "value1"}, "name1"), True),
    ("hasKey", ({"name1": "value1"}, "name2"), False),
    ("hasKey", (None, "name2"), False),
    ("pluck", ("name1", {"name1": "value1"}, {"name2": 2}, {"name1": ""}), ["value1", ""]),
    ("keys", ({"b": 1, "a": 2},), ["a", "b"]),
    ("keys", ({"b": 1}, {"a": 2, "b": 3}), ["b", "a", "b"]),
    ("keys", (), []),
    ("values", ({"b": 1, "a": 2},), [2, 1]),
    ("pick", ({"name1": 1, "name2": 2, "name3": 3}, "name1", "name2"), {"name1": 1, "name2": 2}),
    ("pick", ({"name1": 1}, "nope"), {}),
    ("omit", ({"name1": 1, "name2": 2, "name3": 3}, "name1", "name3"), {"name2": 2}),
    (
        "dig",
        ("user", "role", "humanName", "guest", {"user": {"role": {"humanName": "curator"}}}),
        "curator",
    ),
    ("dig", ("user", "role", "humanName", "guest", {}), "guest"),
    ("dig", ("a", "b", "d", {"a": {"b": None}}), None),
    (
        "mergeOverwrite",
        (
            {"default": "default", "overwrite": "me", "key": True},
            {"overwrite": "overwritten", "key": False},
        ),
        {"default": "default", "overwrite": "overwritten", "key": False},
    ),
    (
        "merge",
        ({"a": 1, "e": "", "n": {"x": 1}}, {"a": 2, "b": 3, "e": "full", "n": {"x": 9, "y": 2}}),
        {"a": 1, "e": "full", "n": {"x": 1, "y": 2}, "b": 3},
    ),
    ("merge", ({}, {"a": None}), {}),  # mergo skips a nil source value
    ("mergeOverwrite", ({"a": 1}, {"a": None}), {"a": None}),
    ("merge", (None, {"a": 1}), {"a": 1}),
    ("merge", ({"a": 1}, {"a": 2}, {"b": 3}), {"a": 1, "b": 3}),
    ("mergeOverwrite", ({"a": 1}, {"a": 2}, {"a": 3}), {"a": 3}),
    ("deepCopy", ({"a": [1, {"b": 2}]},), {"a": [1, {"b": 2}]}),
    # encoding (docs/defaults.md, docs/encoding.md; Go's encoding/json)
    ("toJson", ({"b": [1, 2.5, None], "a": True},), '{"a":true,"b":[1,2.5,null]}'),
    ("toJson", ("<b>&amp;</b>",), '"\\u003cb\\u003e\\u0026amp;\\u003c/b\\u003e"'),
    ("toJson", ('\u2028\b\f\n\x01"\\',), '"\\u2028\\b\\f\\n\\u0001\\"\\\\"'),
    ("toJson", (3.0,), "3"),
    ("toJson", (1e21,), "1e+21"),
    ("toJson", (1e20,), "100000000000000000000"),
    ("toJson", (1e-7,), "1e-7"),
    ("toJson", (0.000001,), "0.000001"),
    ("toJson", (-1.5e-10,), "-1.5e-10"),
    ("toJson", (math.nan,), ""),
    ("toJson", (None,), "null"),
    ("toRawJson", ({"a": "<b>&"},), '{"a":"<b>&"}'),
    ("toRawJson", ("\u2028",), '"\\u2028"'),
    (
        "toPrettyJson",
        ({"a": [1, {}], "b": [], "c": {"d": "e"}},),
        ('{\n  "a": [\n    1,\n    {}\n  ],\n  "b": [],\n  "c": {\n    "d": "e"\n  }\n}'),
    ),
    ("toPrettyJson", ([],), "[]"),
    ("fromJson", ('{"foo": 55}',), {"foo": 55.0}),
    ("fromJson", ('[1, "a", null, true, {"b": 1.5}]',), [1.0, "a", None, True, {"b": 1.5}]),
    ("fromJson", ("not json",), None),
    ("fromJson", ("NaN",), None),
    ("fromJson", ('"\\ud800"',), "\ufffd"),
    ("mustFromJson", ("1e2",), 100.0),
    ("b64enc", ("coffee",), "Y29mZmVl"),
    ("b64dec", ("Y29mZmVl",), "coffee"),
    ("b64dec", ("Y29m\nZmVl",), "coffee"),
    ("b64dec", ("Y29mZmVl!",), "illegal base64 data at input byte 8"),
    ("b64dec", ("AAAAA",), "illegal base64 data at input byte 4"),
    ("b64dec", ("AA==A",), "illegal base64 data at input byte 4"),
    ("b64dec", ("A=",), "illegal base64 data at input byte 1"),
    ("b64dec", ("AA=",), "illegal base64 data at input byte 3"),
    ("b64dec", ("YWJjZA=====",), "illegal base64 data at input byte 8"),
    ("b32enc", ("coffee",), "MNXWMZTFMU======"),
    ("b32dec", ("MNXWMZTFMU======",), "coffee"),
    ("b32dec", ("x===",), "illegal base32 data at input byte 0"),
    ("b32dec", ("AA=A====",), "illegal base32 data at input byte 2"),
    ("b32dec", ("MMMMMMMMM",), "illegal base32 data at input byte 8"),
    ("b32dec", ("AAAAAA==",), "illegal base32 data at input byte 6"),
    ("b32dec", ("AA=",), "illegal base32 data at input byte 3"),
    # hashes (crypto_test expectations and published digests)
    ("sha1sum", ("abc",), "a9993e364706816aba3e25717850c26c9cd0d89d"),
    (
        "sha256sum",
        ("Hello world!",),
        "c0535e4be2b79ffd93291305436bf889314e4a3faec05ecffcbb7df31ad9e51a",
    ),
    (
        "sha512sum",
        ("abc",),
        "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a"
        "2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f",
    ),
    ("adler32sum", ("abc",), "38600999"),
    # types (docs/reflection.md)
    ("kindOf", ("hello",), "string"),
    ("kindOf", (1.5,), "float64"),
    ("kindOf", ([],), "slice"),
    ("kindOf", ({},), "map"),
    ("kindOf", (None,), "invalid"),
    ("kindIs", ("int", 123), True),
    ("kindIs", ("string", 123), False),
    ("typeOf", ("hello",), "string"),
    ("typeOf", (1,), "int"),
    ("typeOf", (1.0,), "float64"),
    ("typeOf", (True,), "bool"),
    ("typeOf", (None,), "<nil>"),
    ("typeOf", ([1],), "[]interface {}"),
    ("typeOf", ({"a": 1},), "map[string]interface {}"),
    ("typeIs", ("float64", 2.5), True),
    ("typeIsLike", ("string", "x"), True),
    ("deepEqual", ([1, 2, 3], [1, 2, 3]), True),
    ("deepEqual", ({"a": [1]}, {"a": [1]}), True),
    ("deepEqual", (1, 1.0), False),
    ("deepEqual", (1, True), False),
    ("deepEqual", (math.nan, math.nan), False),
    # dates (docs/date.md; Go's time layouts)
    ("date", ("2006-01-02", 0), "1970-01-01"),
    ("date", ("02/01/2006", "2017-12-31T00:00:00Z"), "31/12/2017"),
    ("date", ("Mon Jan _2 15:04:05 2006", 1257894000), "Tue Nov 10 23:00:00 2009"),
    ("date", ("3:04PM", 1257894000), "11:00PM"),
    ("date", ("Mon, 02 Jan 2006 15:04:05 MST", 1257894000), "Tue, 10 Nov 2009 23:00:00 UTC"),
    ("date", ("2006-01-02T15:04:05Z07:00", 1257894000), "2009-11-10T23:00:00Z"),
    ("date", ("-07:00 -0700 Z0700", 0), "+00:00 +0000 Z"),
    (
        "date",
        ("January Monday 1/2/06 pm 002 __2", 1257894000),
        "November Tuesday 11/10/09 pm 314 314",
    ),
    ("date", ("15:04:05.000 .999 ,000000", 1.5), "00:00:01.500 .5 ,500000"),
    ("date", ("05.999999999", 1.0), "01"),
    ("date", ("2006-01-02 15:04:05", "2024-02-29T23:30:00+02:00"), "2024-02-29 21:30:00"),
    ("dateInZone", ("2006-01-02", 0, "UTC"), "1970-01-01"),
    ("dateInZone", ("2006-01-02 15:04 MST", 0, "No/Such_Zone"), "1970-01-01 00:00 UTC"),
    ("date_in_zone", ("2006", 0, ""), "1970"),
    ("htmlDate", (86400,), "1970-01-02"),
    ("htmlDateInZone", (86400, "UTC"), "1970-01-02"),
    ("toDate", ("2006-01-02", "2017-12-31"), "2017-12-31T00:00:00Z"),
    ("toDate", ("2006-01-02", "2017-13-31"), "0001-01-01T00:00:00Z"),
    ("toDate", ("2006-01-02", "2017-02-29"), "0001-01-01T00:00:00Z"),
    ("toDate", ("02 Jan 06 15:04 -0700", "10 Nov 09 23:00 +0130"), "2009-11-10T21:30:00Z"),
    ("toDate", ("Jan _2 2006 3:04PM", "Feb  3 2013 9:05AM"), "2013-02-03T09:05:00Z"),
    (
        "toDate",
        ("2006-01-02T15:04:05Z07:00", "2024-01-02T03:04:05.123Z"),
        ("2024-01-02T03:04:05.123Z"),
    ),
    ("toDate", ("2006 002", "2024 060"), "2024-02-29T00:00:00Z"),
    ("toDate", ("15:04", "10:30"), "0000-01-01T10:30:00Z"),
    ("mustToDate", ("2006-01-02", "2017-12-31"), "2017-12-31T00:00:00Z"),
    ("unixEpoch", ("2024-01-01T00:00:00Z",), "1704067200"),
    ("unixEpoch", (1704067200,), "1704067200"),
    ("dateModify", ("-1.5h", "2024-01-01T00:00:00Z"), "2023-12-31T22:30:00Z"),
    ("date_modify", ("1h15m30.918273645s", 0), "1970-01-01T01:15:30.918273645Z"),
    ("dateModify", ("300ms", 0), "1970-01-01T00:00:00.3Z"),
    ("dateModify", (".5s", 0), "1970-01-01T00:00:00.5Z"),
    ("dateModify", ("1µs", 0), "1970-01-01T00:00:00.000001Z"),
    ("dateModify", ("1d", 0), "1970-01-01T00:00:00Z"),  # invalid: the time unchanged
    ("dateModify", ("1", 0), "1970-01-01T00:00:00Z"),
    ("mustDateModify", ("+0", 60), "1970-01-01T00:01:00Z"),
]


@pytest.mark.parametrize(
    ("name", "args", "expected"),
    EXAMPLES,
    ids=[f"{name}-{index}" for index, (name, _, _) in enumerate(EXAMPLES)],
)
def test_documented_value(name: str, args: tuple[Any, ...], expected: Any) -> None:
    result = call(name, *args)
    assert same(result, expected), f"{name}{args!r} gave {result!r}, want {expected!r}"


ERRORS: list[tuple[str, tuple[Any, ...]]] = [
    ("upper", ()),
    ("upper", ("a", "b")),
    ("upper", (5,)),
    ("upper", (None,)),
    ("trunc", ("5", "x")),
    ("trunc", (1.5, "x")),
    ("repeat", (-1, "x")),
    ("ternary", ("a", "b", "yes")),
    ("ternary", ("a", "b", 1)),
    ("fail", ("Please accept the end user license agreement",)),
    ("fail", (1,)),
    ("substr", (-1, 10, "foo")),
    ("substr", (5, -1, "foo")),
    ("substr", (2, 1, "foo")),
    ("div", (1, 0)),
    ("mod", (1, 0)),
    ("divf", (1, 0)),
    ("addf", ("NaN",)),
    ("until", (MAX_LIST + 1,)),
    ("untilStep", (0, 10**9, 1)),
    ("seq", (0, 10**9)),
    ("seq", ("5",)),
    ("first", ("abc",)),
    ("first", (None,)),
    ("mustLast", ({},)),
    ("append", (None, 1)),
    ("concat", ([1], 2)),
    ("slice", ([1, 2, 3], 2, 1)),
    ("slice", ([1, 2, 3], 0, 4)),
    ("slice", ("abc",)),
    ("chunk", (0, [1, 2])),
    ("chunk", (-1, [])),
    ("set", (None, "a", 1)),
    ("get", ([], "a")),
    ("get", ({}, 1)),
    ("pick", ({}, 1)),
    ("merge", ({}, [1])),
    ("dig", ("a", {})),
    ("dig", ("a", "b", "d", {"a": "x"})),
    ("dig", (1, "d", {})),
    ("toRawJson", (math.inf,)),
    ("mustToJson", (math.nan,)),
    ("mustFromJson", ("{bad",)),
    ("mustFromJson", ("[" * 5000 + "]" * 5000,)),
    ("fromJson", (5,)),
    ("regexFind", ("(", "x")),
    ("mustRegexMatch", ("(", "x")),
    ("regexFindAll", ("a", "a", "1")),
    ("mustRegexMatch", ("(a)\\1", "aa")),  # RE2 has no backreferences
    ("mustRegexMatch", ("(?=a)", "a")),  # nor lookaheads
    ("mustRegexMatch", ("\\C", "a")),
    ("mustRegexMatch", ("a{1001}", "a")),
    ("mustRegexMatch", ("x" * 5000, "x")),
    ("regexFind", ("a", "a" * (64 * 1024 + 1))),
    ("mustToDate", ("2006-01-02", "2017-12-32")),
    ("mustToDate", ("2006-01-02", "2017-12-31 extra")),
    ("unixEpoch", ("yesterday",)),
    ("mustDateModify", ("1d", 0)),
    ("mustDateModify", ("1h", None)),
    ("atoi", (5,)),
    ("round", (1.5, 0, "x")),
    ("round", (1.5,)),
    ("regexFindAll", ("a", "a")),
]


@pytest.mark.parametrize(("name", "args"), ERRORS, ids=[name for name, _ in ERRORS])
def test_go_error_is_function_error(name: str, args: tuple[Any, ...]) -> None:
    with pytest.raises(FunctionError):
        call(name, *args)


def test_fail_message_is_the_argument() -> None:
    with pytest.raises(FunctionError, match=r"^Please accept the end user license agreement$"):
        call("fail", "Please accept the end user license agreement")


def test_wrong_arity_names_the_counts() -> None:
    with pytest.raises(FunctionError, match="want 2 got 1"):
        call("trimPrefix", "x")
    with pytest.raises(FunctionError, match="want at least 1 got 0"):
        call("mul")
    with pytest.raises(FunctionError, match="want 2 to 3 got 4"):
        call("round", 1, 2, 3, 4)


def test_set_and_unset_change_the_dict_in_place_as_in_go() -> None:
    mapping: dict[str, Any] = {"a": 1}
    assert call("set", mapping, "b", 2) is mapping
    assert mapping == {"a": 1, "b": 2}
    assert call("unset", mapping, "a") is mapping
    assert call("unset", mapping, "missing") is mapping
    assert mapping == {"b": 2}


def test_merge_fills_the_destination_in_place_and_shares_values() -> None:
    nested = {"y": 2}
    destination: dict[str, Any] = {"n": {"x": 1}}
    result = call("merge", destination, {"n": nested, "m": nested})
    assert result is destination
    assert destination == {"n": {"x": 1, "y": 2}, "m": {"y": 2}}
    assert destination["m"] is nested


def test_list_functions_leave_their_input_unchanged() -> None:
    values = [3, 1, 2]
    call("append", values, 4)
    call("prepend", values, 0)
    call("reverse", values)
    call("sortAlpha", values)
    assert values == [3, 1, 2]


def test_deep_copy_shares_nothing() -> None:
    original = {"a": [1, {"b": 2}]}
    copied = call("deepCopy", original)
    copied["a"][1]["b"] = 3
    assert original == {"a": [1, {"b": 2}]}


def test_keys_and_values_follow_sorted_key_order() -> None:
    mapping = {"z": 1, "b": 2, "m": 3}
    assert call("keys", mapping) == ["b", "m", "z"]
    assert call("values", mapping) == [2, 3, 1]


def test_now_is_rfc3339_in_utc_and_close_to_the_clock() -> None:
    text = call("now")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z", text)
    seconds = int(call("unixEpoch", text))
    assert abs(seconds - datetime.now(UTC).timestamp()) < 3600
    assert call("date", "2006-01-02T15:04:05Z07:00", seconds) == text[:19] + "Z"


def test_date_of_a_value_that_is_not_a_time_is_now_as_in_sprig() -> None:
    this_year = str(datetime.now(UTC).year)
    assert call("date", "2006", None) in (this_year, str(int(this_year) + 1))
    assert call("date", "2006", "not a time") in (this_year, str(int(this_year) + 1))


def test_zone_from_the_time_zone_database() -> None:
    # 2023-11-14T22:13:20Z: Prague is on CET (+01:00) in November.
    shown = call("dateInZone", "2006-01-02 15:04 MST -07:00", 1700000000, "Europe/Prague")
    if shown.endswith("UTC +00:00"):
        pytest.skip("no time zone database on this machine")
    assert shown == "2023-11-14 23:13 CET +01:00"
    summer = call("dateInZone", "15:04 MST Z07:00", 1688000000, "Europe/Prague")
    assert summer == "02:53 CEST +02:00"


def test_uuidv4_is_random_version_4() -> None:
    first, second = call("uuidv4"), call("uuidv4")
    pattern = r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"
    assert re.fullmatch(pattern, first)
    assert first != second


def test_string_building_is_bounded() -> None:
    with pytest.raises(FunctionError):
        call("repeat", MAX_STRING + 1, "a")
    with pytest.raises(FunctionError):
        call("repeat", 2**62, "ab")
    with pytest.raises(FunctionError):
        call("indent", MAX_STRING, "a\nb")
    with pytest.raises(FunctionError):
        call("replace", "a", "b" * 1000, "a" * 2000)
    with pytest.raises(FunctionError):
        call("regexReplaceAll", "", "a" * 60_000, "b" * 100)
    assert call("repeat", MAX_STRING, "") == ""
    assert len(call("repeat", MAX_STRING, "a")) == MAX_STRING


def test_shared_structures_cannot_blow_up_a_walk() -> None:
    shared: list[Any] = [1]
    for _ in range(40):
        shared = [shared, shared]  # 2**40 leaves in 40 lists
    for name in ("toJson", "deepCopy", "toString", "uniq", "cat"):
        with pytest.raises(FunctionError):
            call(name, [shared] if name == "uniq" else shared)
    assert call("deepEqual", shared, shared) is True  # the same list: Go's shortcut


def test_deep_nesting_is_an_error_not_a_crash() -> None:
    nested: list[Any] = []
    for _ in range(5000):
        nested = [nested]
    for name in ("toJson", "deepCopy", "toString", "deepEqual", "uniq"):
        args = (nested, [nested]) if name == "deepEqual" else (nested,)
        with pytest.raises(FunctionError):
            call(name, *args)


def test_unsafe_functions_are_absent() -> None:
    unsafe = {
        "env",
        "expandenv",
        "getHostByName",
        "genPrivateKey",
        "genCA",
        "derivePassword",
        "encryptAES",
        "decryptAES",
        "bcrypt",
        "htpasswd",
        "randAlphaNum",
        "randAlpha",
        "randAscii",
        "randNumeric",
        "randBytes",
        "randInt",
        "shuffle",
        "osBase",
    }
    assert not unsafe & set(FUNCTIONS)


def test_the_briefed_set_is_present() -> None:
    wanted = [
        "default",
        "empty",
        "coalesce",
        "ternary",
        "all",
        "any",
        "fail",
        "trim",
        "trimAll",
        "trimPrefix",
        "trimSuffix",
        "upper",
        "lower",
        "title",
        "untitle",
        "repeat",
        "substr",
        "nospace",
        "trunc",
        "abbrev",
        "abbrevboth",
        "initials",
        "contains",
        "hasPrefix",
        "hasSuffix",
        "quote",
        "squote",
        "cat",
        "indent",
        "nindent",
        "replace",
        "plural",
        "snakecase",
        "camelcase",
        "kebabcase",
        "swapcase",
        "wrap",
        "wrapWith",
        "toString",
        "toStrings",
        "split",
        "splitList",
        "splitn",
        "join",
        "sortAlpha",
        "regexMatch",
        "regexFind",
        "regexFindAll",
        "regexReplaceAll",
        "regexReplaceAllLiteral",
        "regexSplit",
        "regexQuoteMeta",
        "trimall",
        "add",
        "add1",
        "sub",
        "div",
        "mod",
        "mul",
        "max",
        "min",
        "floor",
        "ceil",
        "round",
        "addf",
        "add1f",
        "subf",
        "mulf",
        "divf",
        "maxf",
        "minf",
        "int",
        "int64",
        "float64",
        "atoi",
        "seq",
        "until",
        "untilStep",
        "list",
        "first",
        "last",
        "rest",
        "initial",
        "append",
        "push",
        "prepend",
        "concat",
        "reverse",
        "uniq",
        "without",
        "has",
        "compact",
        "slice",
        "chunk",
        "dict",
        "get",
        "set",
        "unset",
        "hasKey",
        "keys",
        "values",
        "pluck",
        "merge",
        "mergeOverwrite",
        "pick",
        "omit",
        "dig",
        "deepCopy",
        "toJson",
        "toPrettyJson",
        "toRawJson",
        "fromJson",
        "mustToJson",
        "mustFromJson",
        "b64enc",
        "b64dec",
        "b32enc",
        "b32dec",
        "sha1sum",
        "sha256sum",
        "sha512sum",
        "adler32sum",
        "now",
        "date",
        "unixEpoch",
        "dateInZone",
        "toDate",
        "kindOf",
        "typeOf",
        "kindIs",
        "typeIs",
        "deepEqual",
        "uuidv4",
    ]
    assert set(wanted) <= set(FUNCTIONS)


# --- properties -----------------------------------------------------------------------------

_WORDS = [
    "",
    "a",
    "$",
    "-",
    " ",
    "2006-01-02",
    "2024-01-02T03:04:05Z",
    "a(x*)b",
    "x*",
    "[",
    "1h",
    "0x1F",
    "010",
    "5.7",
    "AAAA",
    "MY======",
    '{"a": [1, 2.5]}',
    "Hello World",
    "http_server",
    "UTC",
    "\\C",
    "$1",
    "héllo wörld",
]
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.integers(min_value=-3, max_value=12),
    st.floats(),
    st.text(max_size=12),
    st.sampled_from(_WORDS),
)
_POOL: list[Any] = [
    None,
    True,
    False,
    0,
    1,
    2,
    -1,
    5,
    2**63 - 1,
    -(2**63),
    0.5,
    -2.5,
    1e300,
    math.nan,
    math.inf,
    *_WORDS,
    [],
    [1, 2, 3],
    ["b", "a", None],
    [1, 1.0, True, [1], {"a": 1}],
    [[1, 2], [3]],
    {},
    {"a": 1, "b": {"c": [1, 2]}},
    {"user": {"role": "x"}, "": None},
]
# Mostly a fixed pool of telling values (cheap to draw), sometimes anything.
_ARGUMENT = st.one_of(
    st.sampled_from(_POOL),
    st.sampled_from(_POOL),
    _SCALARS,
    st.recursive(
        _SCALARS,
        lambda children: (
            st.lists(children, max_size=3)
            | st.dictionaries(st.text(max_size=4), children, max_size=3)
        ),
        max_leaves=6,
    ),
)
_MUTATORS = {"set", "unset", "merge", "mergeOverwrite", "mustMerge", "mustMergeOverwrite"}


def _json_like(value: Any, depth: int = 0) -> bool:
    if depth > 300:
        return False
    if value is None or isinstance(value, bool | int | float):
        return True
    if isinstance(value, str):
        return len(value) <= MAX_STRING
    if isinstance(value, list):
        return all(_json_like(item, depth + 1) for item in value)
    if isinstance(value, dict):
        return all(
            isinstance(key, str) and _json_like(item, depth + 1) for key, item in value.items()
        )
    return False


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
@settings(max_examples=40, deadline=None)
@given(args=st.lists(_ARGUMENT, max_size=4))
def test_any_arguments_give_a_json_like_value_or_function_error(name: str, args: list[Any]) -> None:
    before = repr(args)
    try:
        result = FUNCTIONS[name](*args)
    except FunctionError:
        return
    assert _json_like(result), f"{name}{tuple(args)!r} returned {result!r}"
    if name not in _MUTATORS:
        assert repr(args) == before, f"{name} changed its arguments"


_TEXT = st.text(max_size=40)


@given(_TEXT)
def test_base64_and_base32_round_trip(text: str) -> None:
    encoded = call("b64enc", text)
    assert encoded == base64.b64encode(text.encode()).decode()
    assert call("b64dec", encoded) == text
    assert call("b32dec", call("b32enc", text)) == text


@given(st.binary(max_size=12))
def test_base64_decoder_agrees_with_a_strict_decoder_on_canonical_input(data: bytes) -> None:
    assert call("b64dec", base64.b64encode(data).decode()) == data.decode("utf-8", "replace")
    assert call("b32dec", base64.b32encode(data).decode()) == data.decode("utf-8", "replace")


def _floats_for_ints(value: Any) -> Any:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, list):
        return [_floats_for_ints(item) for item in value]
    return {key: _floats_for_ints(item) for key, item in value.items()}


_FINITE_VALUES = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**53), max_value=2**53),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=8),
    ),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=4), children, max_size=3)
    ),
    max_leaves=8,
)


@given(_FINITE_VALUES)
def test_json_round_trip_gives_go_decoded_values(value: Any) -> None:
    expected = _floats_for_ints(value)
    for encoder in ("toJson", "toRawJson", "toPrettyJson"):
        assert same(call("fromJson", call(encoder, value)), expected)


@given(st.text(max_size=20), st.text(min_size=1, max_size=3))
def test_quoted_pattern_matches_the_text_literally(text: str, needle: str) -> None:
    pattern = call("regexQuoteMeta", needle)
    assert call("regexMatch", "^" + pattern + "$", needle)
    assert len(call("regexFindAll", pattern, text, -1)) == text.count(needle)
    assert call("regexSplit", pattern, text, -1) == call("splitList", needle, text)
    assert call("regexReplaceAllLiteral", pattern, text, "$0") == text.replace(needle, "$0")


@given(st.text(alphabet=st.characters(max_codepoint=127), max_size=30), st.integers(-40, 40))
def test_trunc_keeps_the_requested_bytes_of_ascii(text: str, count: int) -> None:
    result = call("trunc", count, text)
    if count >= 0:
        assert result == text[:count]
    else:
        assert result == (text[count:] if len(text) + count > 0 else text)


@given(st.integers(min_value=-62135596800, max_value=253402300799), st.integers(0, 999_999_999))
def test_date_layouts_agree_with_the_calendar(seconds: int, nanos: int) -> None:
    moment = datetime.fromtimestamp(seconds, UTC)
    layout = "2006-01-02 15:04:05 Mon Monday Jan January 002 03 PM"
    expected = f"{moment.year:04d}-{moment:%m-%d %H:%M:%S %a %A %b %B %j %I %p}"
    assert call("date", layout, seconds) == expected
    stamp = call("mustDateModify", f"{nanos}ns", seconds)
    assert call("mustToDate", "2006-01-02T15:04:05.999999999Z07:00", stamp) == stamp
    assert call("unixEpoch", stamp) == str(seconds)


@given(st.integers(-(10**6), 10**6), st.integers(-(10**6), 10**6).filter(lambda n: n != 0))
def test_integer_division_truncates_toward_zero(left: int, right: int) -> None:
    quotient = call("div", left, right)
    remainder = call("mod", left, right)
    assert quotient * right + remainder == left
    assert abs(remainder) < abs(right)
    assert remainder == 0 or (remainder < 0) == (left < 0)


def test_read_only_mappings_and_tuples_are_maps_and_lists() -> None:
    from types import MappingProxyType

    frozen = MappingProxyType({"b": 1, "a": (1, 2)})
    assert call("keys", frozen) == ["a", "b"]
    assert call("get", frozen, "b") == 1
    assert call("first", (5, 6)) == 5
    assert call("rest", (5, 6)) == [6]
    assert call("toJson", frozen) == '{"a":[1,2],"b":1}'
    assert call("deepEqual", frozen, {"b": 1, "a": [1, 2]}) is True
    assert call("kindOf", frozen) == "map"
    assert call("typeOf", (1,)) == "[]interface {}"
    assert call("empty", MappingProxyType({})) is True
    assert call("deepCopy", frozen) == {"a": [1, 2], "b": 1}
    assert call("merge", {"a": {"x": 1}}, MappingProxyType({"a": {"y": 2}})) == {
        "a": {"x": 1, "y": 2}
    }
    for name, args in (("set", (frozen, "c", 1)), ("unset", (frozen, "b")), ("merge", (frozen,))):
        with pytest.raises(FunctionError, match="read-only"):
            call(name, *args)
    assert dict(frozen) == {"b": 1, "a": (1, 2)}
