"""``google.protobuf.Struct`` to and from plain Python values, straight on the wire.

The hub reads a packet's ``payload`` and writes its ``inputs`` when a Story primitive needs
them; the generated classes take ~200 µs for a small object, this takes a few. Values map as
JSON does: Struct ↔ dict, ListValue ↔ list, string, number (always a float on the wire; an
integral number decodes as ``float``, like protobuf's own ``MessageToDict``), bool, null ↔ None.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping, Sequence
from typing import Any, Final

from bobravoz.protocol.wire import (
    I64,
    LEN,
    VARINT,
    WireFormatError,
    decode_varint,
    encode_varint,
)

_DOUBLE: Final = struct.Struct("<d")
#: How deep a value may nest (the boundary already refuses deeper Structs; this guards callers).
MAX_DEPTH: Final = 64


def _fields(data: bytes, start: int, end: int) -> list[tuple[int, int, int, int]]:
    """(number, wire type, value start, value end) of the fields in ``data[start:end]``."""
    out: list[tuple[int, int, int, int]] = []
    pos = start
    while pos < end:
        key, pos = decode_varint(data, pos)
        number, wire_type = key >> 3, key & 7
        if wire_type == LEN:
            length, pos = decode_varint(data, pos)
            value_start, pos = pos, pos + length
        elif wire_type == VARINT:
            value_start = pos
            _, pos = decode_varint(data, pos)
        elif wire_type == I64:
            value_start, pos = pos, pos + 8
        elif wire_type == 5:
            value_start, pos = pos, pos + 4
        else:
            raise WireFormatError(f"unsupported wire type {wire_type}")
        if pos > end:
            raise WireFormatError("field runs past the end of the message")
        out.append((number, wire_type, value_start, pos))
    return out


def _value(data: bytes, start: int, end: int, depth: int) -> Any:
    if depth > MAX_DEPTH:
        raise WireFormatError("Struct nested too deep")
    result: Any = None
    for number, wire_type, value_start, value_end in _fields(data, start, end):
        if number == 1 and wire_type == VARINT:
            if decode_varint(data, value_start)[0] != 0:
                # NullValue has one member; protobuf's own Struct reader refuses others
                raise WireFormatError("a Struct null_value other than NULL_VALUE")
            result = None
        elif number == 2 and wire_type == I64:
            result = _DOUBLE.unpack_from(data, value_start)[0]
        elif number == 3 and wire_type == LEN:
            result = data[value_start:value_end].decode("utf-8")
        elif number == 4 and wire_type == VARINT:
            result = decode_varint(data, value_start)[0] != 0
        elif number == 5 and wire_type == LEN:
            result = _struct(data, value_start, value_end, depth + 1)
        elif number == 6 and wire_type == LEN:
            result = [
                _value(data, item_start, item_end, depth + 1)
                for item_number, item_type, item_start, item_end in _fields(
                    data, value_start, value_end
                )
                if item_number == 1 and item_type == LEN
            ]
    return result


def _struct(data: bytes, start: int, end: int, depth: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for number, wire_type, entry_start, entry_end in _fields(data, start, end):
        if number != 1 or wire_type != LEN:
            continue
        key = ""
        value: Any = None
        for inner, inner_type, value_start, value_end in _fields(data, entry_start, entry_end):
            if inner == 1 and inner_type == LEN:
                key = data[value_start:value_end].decode("utf-8")
            elif inner == 2 and inner_type == LEN:
                value = _value(data, value_start, value_end, depth)
        out[key] = value
    return out


def decode_struct(data: bytes) -> dict[str, Any]:
    """The Struct in ``data`` as a dict; :class:`WireFormatError` (a ValueError) when the
    bytes are not one (bad UTF-8 too)."""
    try:
        return _struct(data, 0, len(data), 0)
    except UnicodeDecodeError as error:
        raise WireFormatError(f"Struct string is not UTF-8: {error}") from None
    except (IndexError, struct.error) as error:
        raise WireFormatError(f"truncated Struct: {error}") from None


#: One-byte varints (lengths below 128: most keys and values), looked up, not built.
_SMALL: Final = tuple(bytes((n,)) for n in range(128))


def _length(size: int) -> bytes:
    return _SMALL[size] if size < 128 else encode_varint(size)


def _encode_value(value: Any, depth: int) -> bytes:
    """The ``Value`` bytes of ``value``."""
    kind = type(value)
    if kind is str:
        text: bytes = value.encode()
        return b"\x1a" + _length(len(text)) + text
    if value is None:
        return b"\x08\x00"
    if kind is bool:
        return b"\x20\x01" if value else b"\x20\x00"
    if kind is int or kind is float or isinstance(value, int | float):
        number = float(value)
        if math.isnan(number) or math.isinf(number):
            raise ValueError("a Struct number must be finite")
        return b"\x11" + _DOUBLE.pack(number)
    if depth > MAX_DEPTH:
        raise ValueError("value nested too deep for a Struct")
    if isinstance(value, str):
        text = value.encode()
        return b"\x1a" + _length(len(text)) + text
    if isinstance(value, Mapping):
        inner = _encode_struct(value, depth + 1)
        return b"\x2a" + _length(len(inner)) + inner
    if isinstance(value, Sequence) and not isinstance(value, bytes | bytearray):
        items = b"".join(
            b"\x0a" + _length(len(item)) + item
            for item in (_encode_value(element, depth + 1) for element in value)
        )
        return b"\x32" + _length(len(items)) + items
    raise ValueError(f"a Struct cannot hold a {type(value).__name__}")


def _encode_struct(values: Mapping[Any, Any], depth: int) -> bytes:
    parts: list[bytes] = []
    for key, value in values.items():
        if type(key) is not str:
            raise ValueError(f"a Struct key must be a string, not {type(key).__name__}")
        encoded_key = key.encode()
        encoded = _encode_value(value, depth)
        entry = (
            b"\x0a"
            + _length(len(encoded_key))
            + encoded_key
            + b"\x12"
            + _length(len(encoded))
            + encoded
        )
        parts.append(b"\x0a" + _length(len(entry)) + entry)
    return b"".join(parts)


def encode_struct(values: Mapping[str, Any]) -> bytes:
    """The Struct bytes of ``values`` (JSON-like); ValueError for what a Struct cannot hold
    (non-string keys, NaN or infinite numbers, other types)."""
    return _encode_struct(values, 0)
