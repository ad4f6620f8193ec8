"""Sans-IO protobuf wire helpers for moving packets as bytes.

The hub and the connectors never decode a whole packet on the data path: they walk the
top-level fields (:func:`iter_fields`), read the few they need, and rewrite top-level tags
between the packet layouts of the contract (:func:`convert_layout`), copying nested bytes
untouched.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final, final

VARINT: Final = 0
I64: Final = 1
LEN: Final = 2
I32: Final = 5

#: The logical fields every packet message carries.
PACKET_FIELDS: Final = (
    "metadata",
    "payload",
    "inputs",
    "transports",
    "audio",
    "video",
    "binary",
    "envelope",
)


@final
class WireFormatError(ValueError):
    """The bytes are not a well-formed protobuf message (truncated, bad tag or wire type)."""


def encode_varint(value: int) -> bytes:
    """The base-128 varint of a non-negative ``value`` (negatives as 64-bit two's complement)."""
    if value < 0:
        value += 1 << 64
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def decode_varint(data: bytes | memoryview, pos: int) -> tuple[int, int]:
    """Decode the varint at ``pos``: (value, position after it)."""
    result = 0
    shift = 0
    end = len(data)
    while True:
        if pos >= end:
            raise WireFormatError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise WireFormatError("varint longer than 10 bytes")


@final
@dataclass(frozen=True, slots=True)
class WireField:
    """One top-level field: tag at ``start``, value bytes in ``value_start:end``.

    For varint fields the value bytes are the varint itself; for LEN fields the length
    prefix is excluded. ``data[start:end]`` is the whole field as it stands on the wire.
    """

    number: int
    wire_type: int
    start: int
    value_start: int
    end: int


#: The largest field number protobuf allows (2**29 - 1); parsers refuse larger ones.
MAX_FIELD_NUMBER: Final = (1 << 29) - 1


def iter_fields(data: bytes) -> Iterator[WireField]:
    """Walk the top-level fields of a serialized message, in wire order.

    Raises :class:`WireFormatError` for what protobuf's own parsers refuse as corrupt: field
    number 0 or above :data:`MAX_FIELD_NUMBER`, a tag or a length varint of more than five
    bytes, a length of 2 GiB or more, unknown wire types, truncation."""
    pos = 0
    end = len(data)
    while pos < end:
        start = pos
        key = data[pos]
        if key < 0x80:
            pos += 1
        else:
            key, pos = decode_varint(data, pos)
            if pos - start > 5:
                raise WireFormatError(f"tag longer than 5 bytes at offset {start}")
        number = key >> 3
        wire_type = key & 7
        if number == 0 or number > MAX_FIELD_NUMBER:
            raise WireFormatError(f"field number {number} at offset {start}")
        if wire_type == LEN:
            length = data[pos] if pos < end else 0x80
            if length < 0x80:
                pos += 1
            else:
                at = pos
                length, pos = decode_varint(data, pos)
                if pos - at > 5 or length >= 1 << 31:
                    raise WireFormatError(f"field {number}: length varint out of range")
            value_start = pos
            pos += length
        elif wire_type == VARINT:
            value_start = pos
            _, pos = decode_varint(data, pos)
        elif wire_type == I64:
            value_start = pos
            pos += 8
        elif wire_type == I32:
            value_start = pos
            pos += 4
        else:
            raise WireFormatError(f"unsupported wire type {wire_type} at offset {start}")
        if pos > end:
            raise WireFormatError(f"field {number} runs past the end of the message")
        yield WireField(number, wire_type, start, value_start, pos)


def encode_len_field(number: int, value: bytes) -> bytes:
    """A length-delimited field (bytes, string or embedded message)."""
    return encode_varint(number << 3 | LEN) + encode_varint(len(value)) + value


def encode_varint_field(number: int, value: int) -> bytes:
    """A varint field (ints, bools, enums)."""
    return encode_varint(number << 3 | VARINT) + encode_varint(value)


def encode_string_field(number: int, value: str) -> bytes:
    """A string field (UTF-8)."""
    return encode_len_field(number, value.encode())


class PacketLayout(enum.Enum):
    """Field numbers of the packet messages: same logical fields, different numbers.

    ``DATA_REQUEST`` also describes ``DataResponse`` and ``PublishRequest``.
    """

    #     metadata payload inputs transports audio video binary envelope
    DATA_PACKET = (1, 2, 3, 4, 5, 6, 7, 8)
    DATA_REQUEST = (4, 5, 6, 7, 1, 2, 3, 8)
    HUB_PUSH_REQUEST = (1, 2, 3, 7, 4, 5, 6, 8)
    HUB_PUSH_RESPONSE = (1, 2, 3, 4, 5, 6, 7, 8)

    def number_of(self, field: str) -> int:
        """The field number of logical ``field`` (one of :data:`PACKET_FIELDS`)."""
        return self.value[PACKET_FIELDS.index(field)]

    def field_of(self, number: int) -> str | None:
        """The logical field numbered ``number``, or None for an unknown number."""
        try:
            return PACKET_FIELDS[self.value.index(number)]
        except ValueError:
            return None


def _tag_map(source: PacketLayout, target: PacketLayout) -> dict[int, bytes]:
    """For each source field number whose number changes: the target's LEN tag bytes."""
    return {
        number: encode_varint(target.value[index] << 3 | LEN)
        for index, number in enumerate(source.value)
        if target.value[index] != number
    }


_TAG_MAPS: Final = {
    (source, target): _tag_map(source, target) for source in PacketLayout for target in PacketLayout
}


def convert_layout(data: bytes, source: PacketLayout, target: PacketLayout) -> bytes:
    """Rewrite a packet from ``source`` to ``target`` layout by changing top-level tags only.

    Values (length prefixes and nested bytes) are copied untouched, unknown fields are kept,
    field order is preserved. Equal layouts (same numbers) return ``data`` itself.
    """
    tags = _TAG_MAPS[(source, target)]
    if not tags:
        iter_check = iter_fields(data)
        for _ in iter_check:
            pass
        return data
    parts: list[bytes] = []
    for field in iter_fields(data):
        new_tag = tags.get(field.number) if field.wire_type == LEN else None
        if new_tag is None:
            parts.append(data[field.start : field.end])
        else:
            tag_length = 1 if data[field.start] < 0x80 else _varint_length(data, field.start)
            parts.append(new_tag)
            parts.append(data[field.start + tag_length : field.end])
    return b"".join(parts)


def _varint_length(data: bytes, pos: int) -> int:
    _, after = decode_varint(data, pos)
    return after - pos
