"""Layout conversion on bytes (top-level tags rewritten, nested bytes untouched), checked
against full decode/copy/encode with protoc's classes, on random packets of every layout."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_wire_pin import pb2_message

from bobravoz.protocol.wire import (
    PACKET_FIELDS,
    PacketLayout,
    WireFormatError,
    convert_layout,
    decode_varint,
    encode_len_field,
    encode_varint,
    iter_fields,
)

CLASSES = {
    PacketLayout.DATA_PACKET: "DataPacket",
    PacketLayout.DATA_REQUEST: "DataRequest",
    PacketLayout.HUB_PUSH_REQUEST: "HubPushRequest",
}
PAIRS = [(a, b) for a in CLASSES for b in CLASSES if a is not b]
SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def copy_fields(source: Any, target_cls: type) -> Any:
    """The field-by-field copy the byte rewrite must equal."""
    target = target_cls()
    for name in PACKET_FIELDS:
        if name == "metadata":
            target.metadata.update(source.metadata)
        elif name == "transports":
            target.transports.extend(source.transports)
        elif source.HasField(name):
            getattr(target, name).CopyFrom(getattr(source, name))
    return target


@pytest.mark.parametrize(("source", "target"), PAIRS)
def test_conversion_equals_full_decode_and_encode(
    pb2: dict[str, type], source: PacketLayout, target: PacketLayout
) -> None:
    @SETTINGS
    @given(pb2_message(pb2[CLASSES[source]]))
    def check(message: Any) -> None:
        data = message.SerializeToString(deterministic=True)
        converted = convert_layout(data, source, target)
        parsed = pb2[CLASSES[target]]()
        parsed.ParseFromString(converted)
        assert parsed == copy_fields(message, pb2[CLASSES[target]])
        assert convert_layout(converted, target, source) == data
        assert len(converted) == len(data)

    check()


@SETTINGS
@given(st.binary(min_size=1, max_size=64))
def test_nested_bytes_are_untouched_and_unknown_fields_kept(payload: bytes) -> None:
    frame = encode_len_field(1, payload)
    unknown = encode_varint(99 << 3 | 2) + encode_varint(len(payload)) + payload
    data = encode_len_field(7, frame) + unknown  # DataPacket.binary + unknown field 99
    converted = convert_layout(data, PacketLayout.DATA_PACKET, PacketLayout.DATA_REQUEST)
    fields = list(iter_fields(converted))
    assert [field.number for field in fields] == [3, 99]
    assert converted[fields[0].value_start : fields[0].end] == frame
    assert converted.endswith(unknown)


def test_same_numbers_return_the_input() -> None:
    data = encode_len_field(1, encode_len_field(1, b"k"))
    assert convert_layout(data, PacketLayout.DATA_PACKET, PacketLayout.HUB_PUSH_RESPONSE) is data


@pytest.mark.parametrize("data", [b"\x0a\x05ab", b"\x80", b"\x0b", b"\x00\x01"])
def test_malformed_input_raises_wire_format_error(data: bytes) -> None:
    with pytest.raises(WireFormatError):
        convert_layout(data, PacketLayout.DATA_PACKET, PacketLayout.DATA_REQUEST)


@given(st.integers(0, 2**64 - 1))
def test_varints_round_trip(value: int) -> None:
    encoded = encode_varint(value)
    assert decode_varint(encoded, 0) == (value, len(encoded))
