"""Go's ``fmt.Sprint``, ``fmt.Sprintln`` and ``fmt.Sprintf`` over JSON-like Python values.

Types are named as Go names the types a JSON document decodes to: ``bool``, ``int``,
``float64``, ``string``, ``[]interface {}``, ``map[string]interface {}``. Verbs: ``%v``
(``%+v``, ``%#v``), ``%T``, ``%t``, ``%d %b %o %O %x %X %c %q %U`` for integers,
``%e %E %f %F %g %G %x %X %b`` for floats, ``%s %q %x %X`` for strings, ``%%``; flags
``+ - # 0`` and space, width and precision (``*`` and argument indexes ``%[2]d`` too). Errors
are written into the output the way Go writes them: ``%!d(string=x)``, ``%!d(MISSING)``,
``%!(EXTRA int=1)``, ``%!(NOVERB)``.

One deliberate difference: an ``int`` also accepts the float verbs (``%.2f`` of ``3`` is
``3.00``). A JSON number is a float64 in Go, so ``printf "%.2f" .price`` works there whatever
the number looks like; here JSON integers stay ``int``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from .values import format_float_g, go_type

_MAX_WIDTH: Final = 1_000_000
_LOWER: Final = "0123456789abcdefx"
_UPPER: Final = "0123456789ABCDEFX"


def _is_print(char: str) -> bool:
    return char == " " or char.isprintable()


def quote(text: str, *, ascii_only: bool = False, mark: str = '"') -> str:
    """Go's ``strconv.Quote`` (``QuoteToASCII`` with ``ascii_only``; ``mark`` ``'`` for runes)."""
    out = [mark]
    for char in text:
        code = ord(char)
        if char == mark or char == "\\":
            out.append("\\" + char)
        elif (code < 0x80 or not ascii_only) and _is_print(char):
            out.append(char)
        elif char in "\a\b\f\n\r\t\v":
            out.append("\\" + "abfnrtv"["\a\b\f\n\r\t\v".index(char)])
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append(mark)
    return "".join(out)


def _can_backquote(text: str) -> bool:
    return all(char == "\t" or (char >= " " and char not in "`\x7f\ufeff") for char in text)


def format_v(value: Any) -> str:
    """``%v`` of a value (``<nil>`` for None)."""
    return _Formatter().value(value, "v")


def sprint(*args: Any) -> str:
    """Go's ``fmt.Sprint``: operands in ``%v``, a space between two that are not strings."""
    parts: list[str] = []
    previous_string = False
    for position, arg in enumerate(args):
        is_string = isinstance(arg, str)
        if position > 0 and not is_string and not previous_string:
            parts.append(" ")
        parts.append(format_v(arg))
        previous_string = is_string
    return "".join(parts)


def sprintln(*args: Any) -> str:
    """Go's ``fmt.Sprintln``: operands in ``%v`` separated by spaces, then a newline."""
    return " ".join(format_v(arg) for arg in args) + "\n"


def sprintf(template: str, *args: Any) -> str:
    """Go's ``fmt.Sprintf``."""
    return _Printf(template, args).run()


@dataclass(slots=True)
class _Flags:
    plus: bool = False
    minus: bool = False
    sharp: bool = False
    space: bool = False
    zero: bool = False
    plus_v: bool = False
    sharp_v: bool = False
    width: int = 0
    width_present: bool = False
    precision: int = 0
    precision_present: bool = False


class _Formatter:
    """Formats one operand with one verb and one set of flags (Go's ``pp``/``fmt``)."""

    def __init__(self, flags: _Flags | None = None) -> None:
        self.flags = flags if flags is not None else _Flags()

    # Padding.

    def pad(self, text: str, *, spaces: bool = False) -> str:
        """``text`` padded to the width: on the right under ``-``, else on the left with
        zeros under ``0`` (unless ``spaces``: integers, whose zeros are a precision, ``%U``,
        NaN and Inf)."""
        flags = self.flags
        if not flags.width_present or flags.width <= len(text):
            return text
        fill = flags.width - len(text)
        if flags.minus:
            return text + " " * fill
        return ("0" if flags.zero and not spaces else " ") * fill + text

    def padding(self, count: int) -> str:
        return ("0" if self.flags.zero else " ") * max(count, 0)

    # Dispatch.

    def bad_verb(self, verb: str, value: Any) -> str:
        if value is None:
            return f"%!{verb}(<nil>)"
        return f"%!{verb}({go_type(value)}={format_v(value)})"

    def value(self, value: Any, verb: str, depth: int = 0) -> str:
        if verb == "T":
            return self.pad(go_type(value))
        if value is None:
            if depth > 0:
                return "interface {}(nil)" if self.flags.sharp_v else "<nil>"
            return self.pad("<nil>") if verb == "v" else self.bad_verb(verb, None)
        if isinstance(value, bool):
            if verb in "tv":
                return self.pad("true" if value else "false")
            return self.bad_verb(verb, value)
        if isinstance(value, int):
            return self.integer(value, verb)
        if isinstance(value, float):
            return self.floating(value, verb)
        if isinstance(value, str):
            return self.string(value, verb)
        if isinstance(value, Mapping):
            return self.mapping(value, verb, depth)
        if isinstance(value, Sequence):
            return self.sequence(value, verb, depth)
        return self.bad_verb(verb, str(value))

    def sequence(self, value: Sequence[Any], verb: str, depth: int) -> str:
        if self.flags.sharp_v:
            items = ", ".join(self.value(item, verb, depth + 1) for item in value)
            return f"[]interface {{}}{{{items}}}"
        return "[" + " ".join(self.value(item, verb, depth + 1) for item in value) + "]"

    def mapping(self, value: Mapping[Any, Any], verb: str, depth: int) -> str:
        try:
            keys = sorted(value)
        except TypeError:
            keys = sorted(value, key=format_v)
        if self.flags.sharp_v:
            items = ", ".join(
                f"{self.value(key, verb, depth + 1)}:{self.value(value[key], verb, depth + 1)}"
                for key in keys
            )
            return f"map[string]interface {{}}{{{items}}}"
        items = " ".join(
            f"{self.value(key, verb, depth + 1)}:{self.value(value[key], verb, depth + 1)}"
            for key in keys
        )
        return f"map[{items}]"

    # Integers.

    def integer(self, value: int, verb: str) -> str:
        flags = self.flags
        if verb == "v":
            if flags.sharp_v:
                return self.pad(str(value))
            return self.digits(value, 10, verb, _LOWER)
        if verb == "d":
            return self.digits(value, 10, verb, _LOWER)
        if verb == "b":
            return self.digits(value, 2, verb, _LOWER)
        if verb in "oO":
            return self.digits(value, 8, verb, _LOWER)
        if verb == "x":
            return self.digits(value, 16, verb, _LOWER)
        if verb == "X":
            return self.digits(value, 16, verb, _UPPER)
        if verb == "c":
            return self.pad(_rune(value))
        if verb == "q":
            return self.pad(quote(_rune(value), ascii_only=flags.plus, mark="'"))
        if verb == "U":
            return self.unicode(value)
        if verb in "eEfFgG":
            return self.floating(float(value), verb)
        return self.bad_verb(verb, value)

    def digits(self, value: int, base: int, verb: str, digits: str) -> str:
        flags = self.flags
        negative = value < 0
        magnitude = -value if negative else value
        precision = 0
        if flags.precision_present:
            precision = flags.precision
            if precision == 0 and magnitude == 0:
                return " " * flags.width if flags.width_present else ""
        elif flags.zero and not flags.minus and flags.width_present:
            precision = flags.width
            if negative or flags.plus or flags.space:
                precision -= 1
        if base == 10:
            text = str(magnitude)
        else:
            text = ""
            remaining = magnitude
            while True:
                text = digits[remaining % base] + text
                remaining //= base
                if remaining == 0:
                    break
        if len(text) < precision:
            text = "0" * (precision - len(text)) + text
        if flags.sharp:
            if base == 2:
                text = "0b" + text
            elif base == 8 and not text.startswith("0"):
                text = "0" + text
            elif base == 16:
                text = "0" + digits[16] + text
        if verb == "O":
            text = "0o" + text
        if negative:
            text = "-" + text
        elif flags.plus:
            text = "+" + text
        elif flags.space:
            text = " " + text
        return self.pad(text, spaces=True)

    def unicode(self, value: int) -> str:
        flags = self.flags
        code = value % (1 << 64)
        hex_digits = f"{code:X}"
        width = max(4, flags.precision if flags.precision_present else 0)
        text = "U+" + hex_digits.rjust(width, "0")
        if flags.sharp and code <= 0x10FFFF and _is_print(_rune(code)):
            text += f" '{_rune(code)}'"
        return self.pad(text, spaces=True)

    # Floats.

    def floating(self, value: float, verb: str) -> str:
        flags = self.flags
        if verb == "v" or (flags.sharp_v and verb in "bgGxXfeEF"):
            return self.fmt_float(value, "g", -1)
        if verb in "bgGxX":
            return self.fmt_float(value, verb, -1)
        if verb in "eEfF":
            return self.fmt_float(value, verb, 6)
        return self.bad_verb(verb, value)

    def fmt_float(self, value: float, verb: str, precision: int) -> str:
        flags = self.flags
        if flags.precision_present:
            precision = flags.precision
        num = _float_text(value, verb, precision)
        if num[0] not in "+-":
            num = "+" + num
        if flags.space and num[0] == "+" and not flags.plus:
            num = " " + num[1:]
        if num[1] in "IN":
            if num[1] == "N" and not flags.space and not flags.plus:
                num = num[1:]
            return self.pad(num, spaces=True)
        if flags.sharp and verb != "b":
            num = _sharp_float(num, verb, precision)
        if flags.plus or num[0] != "+":
            if flags.zero and not flags.minus and flags.width_present and flags.width > len(num):
                return num[0] + self.padding(flags.width - len(num)) + num[1:]
            return self.pad(num)
        return self.pad(num[1:])

    # Strings.

    def string(self, value: str, verb: str) -> str:
        flags = self.flags
        if verb in "vs":
            if flags.sharp_v:
                return self.pad(quote(value))
            return self.pad(self.truncate(value))
        if verb == "q":
            text = self.truncate(value)
            if flags.sharp and _can_backquote(text):
                return self.pad("`" + text + "`")
            return self.pad(quote(text, ascii_only=flags.plus))
        if verb in "xX":
            return self.hex_bytes(
                value.encode("utf-8", "surrogatepass"), _LOWER if verb == "x" else _UPPER
            )
        return self.bad_verb(verb, value)

    def truncate(self, value: str) -> str:
        if self.flags.precision_present:
            return value[: self.flags.precision]
        return value

    def hex_bytes(self, data: bytes, digits: str) -> str:
        flags = self.flags
        length = len(data)
        if flags.precision_present and flags.precision < length:
            length = flags.precision
        width = 2 * length
        if width == 0:
            return self.padding(flags.width) if flags.width_present else ""
        if flags.space:
            if flags.sharp:
                width *= 2
            width += length - 1
        elif flags.sharp:
            width += 2
        parts: list[str] = []
        if flags.sharp:
            parts.append("0" + digits[16])
        for position in range(length):
            if flags.space and position > 0:
                parts.append(" ")
                if flags.sharp:
                    parts.append("0" + digits[16])
            byte = data[position]
            parts.append(digits[byte >> 4] + digits[byte & 0x0F])
        text = "".join(parts)
        if flags.width_present and flags.width > width:
            if flags.minus:
                return text + " " * (flags.width - width)
            return self.padding(flags.width - width) + text
        return text


def _rune(value: int) -> str:
    if 0 <= value <= 0x10FFFF and not 0xD800 <= value <= 0xDFFF:
        return chr(value)
    return "\ufffd"


def _float_text(value: float, verb: str, precision: int) -> str:
    """strconv.FormatFloat(value, verb, precision, 64), with F meaning f."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if verb in "fF":
        return format(value, f".{precision}f")
    if verb in "eE":
        return format(value, f".{precision}{verb}")
    if verb in "gG":
        text = format_float_g(value) if precision < 0 else format(value, f".{precision}g")
        return text.upper() if verb == "G" else text
    if verb in "xX":
        return _hex_float(value, precision, verb == "X")
    # 'b': decimalless mantissa and binary exponent.
    if value == 0:
        return ("-" if math.copysign(1.0, value) < 0 else "") + "0p-1074"
    mantissa, exponent = math.frexp(abs(value))
    bits = int(mantissa * (1 << 53))
    shift = exponent - 53
    if shift < -1074:
        bits >>= -1074 - shift
        shift = -1074
    return ("-" if value < 0 else "") + f"{bits}p{shift:+d}"


def _hex_float(value: float, precision: int, upper: bool) -> str:
    """Go's %x of a float: ``0x1.8p+01`` (shortest mantissa unless a precision is given)."""
    negative = math.copysign(1.0, value) < 0
    if value == 0:
        mantissa_hex, exponent = "", 0
        text = "0x0" + ("." + "0" * precision if precision > 0 else "") + "p+00"
    else:
        raw = float.hex(abs(value))  # 0x1.8000000000000p+1
        head, _, exponent_text = raw.partition("p")
        exponent = int(exponent_text)
        lead, _, mantissa_hex = head[2:].partition(".")
        if lead == "0":  # subnormal: normalise to a leading 1
            bits = int(mantissa_hex, 16)
            shift = 52 - bits.bit_length() + 1
            bits = (bits << shift) & ((1 << 52) - 1)
            exponent -= shift
            mantissa_hex = f"{bits:013x}"
        mantissa_hex = mantissa_hex.rstrip("0")
        if precision >= 0:
            if len(mantissa_hex) > precision:
                scaled = round(
                    int("1" + mantissa_hex, 16) / (16 ** (len(mantissa_hex) - precision))
                )
                if scaled >= 2 * 16**precision:
                    scaled //= 2
                    exponent += 1
                digits = f"{scaled:x}"
                mantissa_hex = digits[1:]
            mantissa_hex = mantissa_hex.ljust(precision, "0")
        sign = "-" if exponent < 0 else "+"
        text = f"0x1{'.' + mantissa_hex if mantissa_hex else ''}p{sign}{abs(exponent):02d}"
    if negative:
        text = "-" + text
    return text.upper() if upper else text


def _sharp_float(num: str, verb: str, precision: int) -> str:
    """The ``#`` flag: always a decimal point, and %g keeps its trailing zeros."""
    digits = 0
    if verb in "vgGxX":
        digits = precision if precision != -1 else 6
    tail = ""
    has_point = False
    seen_nonzero = False
    body = num
    for position in range(1, len(num)):
        char = num[position]
        if char == ".":
            has_point = True
        elif char in "pP" or (char in "eE" and verb not in "xX"):
            tail = num[position:]
            body = num[:position]
            break
        else:
            if char != "0":
                seen_nonzero = True
            if seen_nonzero:
                digits -= 1
    if not has_point:
        if len(body) == 2 and body[1] == "0":
            digits -= 1
        body += "."
    if digits > 0:
        body += "0" * digits
    return body + tail


class _Printf:
    """One Sprintf run: walks the format, consuming operands (Go's ``doPrintf``)."""

    def __init__(self, template: str, args: tuple[Any, ...]) -> None:
        self.template = template
        self.args = args
        self.arg_index = 0
        self.reordered = False
        self.good_arg_index = True
        self.out: list[str] = []

    def run(self) -> str:
        template = self.template
        end = len(template)
        out = self.out
        position = 0
        while position < end:
            percent = template.find("%", position)
            if percent < 0:
                out.append(template[position:])
                break
            out.append(template[position:percent])
            position = percent + 1
            flags = _Flags()
            self.good_arg_index = True
            while position < end:
                char = template[position]
                if char == "#":
                    flags.sharp = True
                elif char == "0":
                    flags.zero = not flags.minus
                elif char == "+":
                    flags.plus = True
                elif char == "-":
                    flags.minus = True
                    flags.zero = False
                elif char == " ":
                    flags.space = True
                else:
                    break
                position += 1
            position, after_index = self.arg_number(position)
            if position < end and template[position] == "*":
                position += 1
                width, ok = self.int_from_arg()
                if not ok:
                    out.append("%!(BADWIDTH)")
                    width = 0
                flags.width, flags.width_present = width, ok
                if flags.width < 0:
                    flags.width = -flags.width
                    flags.minus = True
                    flags.zero = False
                after_index = False
            else:
                flags.width, flags.width_present, position = _parse_number(template, position)
                if after_index and flags.width_present:
                    self.good_arg_index = False
            if position + 1 <= end and position < end and template[position] == ".":
                position += 1
                if after_index:
                    self.good_arg_index = False
                position, after_index = self.arg_number(position)
                if position < end and template[position] == "*":
                    position += 1
                    precision, ok = self.int_from_arg()
                    flags.precision, flags.precision_present = precision, ok
                    if flags.precision < 0:
                        flags.precision = 0
                        flags.precision_present = False
                    if not ok:
                        out.append("%!(BADPREC)")
                    after_index = False
                else:
                    flags.precision, flags.precision_present, position = _parse_number(
                        template, position
                    )
                    if not flags.precision_present:
                        flags.precision, flags.precision_present = 0, True
            if not after_index:
                position, after_index = self.arg_number(position)
            if position >= end:
                out.append("%!(NOVERB)")
                break
            verb = template[position]
            position += 1
            if verb == "%":
                out.append("%")
                continue
            if not self.good_arg_index:
                out.append(f"%!{verb}(BADINDEX)")
                continue
            if self.arg_index >= len(self.args):
                out.append(f"%!{verb}(MISSING)")
                continue
            if verb == "v":
                if flags.sharp:
                    flags.sharp, flags.sharp_v = False, True
                if flags.plus:
                    flags.plus, flags.plus_v = False, True
            operand = self.args[self.arg_index]
            self.arg_index += 1
            out.append(_Formatter(flags).value(operand, verb))
        if not self.reordered and self.arg_index < len(self.args):
            extras = []
            for operand in self.args[self.arg_index :]:
                extras.append(
                    "<nil>" if operand is None else f"{go_type(operand)}={format_v(operand)}"
                )
            out.append("%!(EXTRA " + ", ".join(extras) + ")")
        return "".join(out)

    def arg_number(self, position: int) -> tuple[int, bool]:
        """An explicit ``[n]`` operand index at ``position``: (new position, found)."""
        template = self.template
        if position >= len(template) or template[position] != "[":
            return position, False
        self.reordered = True
        close = template.find("]", position + 1)
        if close < 0:
            self.good_arg_index = False
            return position + 1, False
        text = template[position + 1 : close]
        if not text.isdigit() or not text.isascii():
            self.good_arg_index = False
            return close + 1, False
        index = int(text) - 1
        if 0 <= index < len(self.args):
            self.arg_index = index
            return close + 1, True
        self.good_arg_index = False
        return close + 1, True

    def int_from_arg(self) -> tuple[int, bool]:
        if self.arg_index >= len(self.args):
            return 0, False
        operand = self.args[self.arg_index]
        self.arg_index += 1
        if (
            isinstance(operand, int)
            and not isinstance(operand, bool)
            and -_MAX_WIDTH <= operand <= _MAX_WIDTH
        ):
            return operand, True
        return 0, False


def _parse_number(template: str, position: int) -> tuple[int, bool, int]:
    """Digits at ``position``: (value, present, new position); too large means absent."""
    end = position
    while end < len(template) and "0" <= template[end] <= "9":
        end += 1
    if end == position:
        return 0, False, position
    value = int(template[position:end])
    if value > _MAX_WIDTH:
        return 0, False, end
    return value, True, end
