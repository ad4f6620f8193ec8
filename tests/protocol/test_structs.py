"""The wire-level Struct codec agrees with the generated ``google.protobuf.Struct``."""

from __future__ import annotations

import contextlib
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bobravoz.protocol.gen.google.protobuf import Struct
from bobravoz.protocol.structs import decode_struct, encode_struct
from bobravoz.protocol.wire import WireFormatError

scalars = (
    st.none()
    | st.booleans()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.integers(-(2**53), 2**53)
    | st.text(max_size=20)
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
objects = st.dictionaries(st.text(max_size=8), values, max_size=6)


def _as_json(value: Any) -> Any:
    """What a Struct gives back: numbers as floats."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, dict):
        return {key: _as_json(item) for key, item in value.items()}
    return [_as_json(item) for item in value]


@settings(max_examples=300, deadline=None)
@given(objects)
def test_round_trip_and_agreement_with_the_generated_class(value: dict[str, Any]) -> None:
    encoded = encode_struct(value)
    assert decode_struct(encoded) == _as_json(value)
    assert Struct.parse(encoded).to_dict() == _as_json(value)
    assert decode_struct(bytes(Struct.from_dict(_as_json(value)))) == _as_json(value)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_garbage_is_a_wire_format_error_or_a_dict(data: bytes) -> None:
    with contextlib.suppress(WireFormatError):
        assert isinstance(decode_struct(data), dict)


@pytest.mark.parametrize("bad", [{"x": math.nan}, {"x": math.inf}, {1: 2}, {"x": b"raw"}])
def test_what_a_struct_cannot_hold_is_refused(bad: dict[Any, Any]) -> None:
    with pytest.raises(ValueError, match="Struct"):
        encode_struct(bad)


metadata_maps = st.dictionaries(st.text(min_size=1, max_size=6), st.text(max_size=6), max_size=4)


@settings(max_examples=200, deadline=None)
@given(metadata_maps, metadata_maps, objects, st.none() | st.text(max_size=8), st.booleans())
def test_rewrite_packet_sets_what_it_is_given_and_keeps_the_rest(
    metadata: dict[str, str],
    updates: dict[str, str],
    inputs: dict[str, Any],
    partition: str | None,
    with_envelope: bool,
) -> None:
    from bobravoz.protocol.gen.transport.v1 import BinaryFrame, DataPacket, StreamEnvelope
    from bobravoz.protocol.packets import read_parts, rewrite_packet
    from bobravoz.protocol.wire import PacketLayout

    original = DataPacket(
        metadata=metadata,
        payload=Struct.from_dict({"p": 1.0}),
        binary=BinaryFrame(payload=b"frame", mime_type="x/y"),
        envelope=StreamEnvelope(stream_id="s", sequence=7, partition="old")
        if with_envelope
        else None,
    )
    rewritten = rewrite_packet(
        bytes(original),
        layout=PacketLayout.DATA_PACKET,
        metadata_updates=updates,
        inputs=encode_struct(inputs),
        partition=partition,
    )
    parsed = DataPacket.parse(rewritten)
    assert parsed.metadata == {**metadata, **updates}
    assert parsed.inputs is not None
    assert parsed.inputs.to_dict() == _as_json(inputs)
    assert parsed.payload is not None
    assert parsed.payload.to_dict() == {"p": 1.0}
    assert parsed.binary == original.binary
    parts = read_parts(rewritten, PacketLayout.DATA_PACKET)
    assert parts.metadata == parsed.metadata
    expected_partition = partition if partition is not None else ("old" if with_envelope else "")
    assert (parsed.envelope.partition if parsed.envelope else "") == expected_partition
    if with_envelope:
        assert parsed.envelope is not None
        assert (parsed.envelope.stream_id, parsed.envelope.sequence) == ("s", 7)


@settings(max_examples=200, deadline=None)
@given(
    metadata_maps,
    metadata_maps,
    st.none() | objects,
    st.none() | objects,
    st.none() | st.text(max_size=8),
    st.integers(0, 2**40),
    st.booleans(),
)
def test_stamp_rewritten_equals_the_general_path(
    metadata: dict[str, str],
    updates: dict[str, str],
    inputs: dict[str, Any] | None,
    payload: dict[str, Any] | None,
    partition: str | None,
    sequence: int,
    with_envelope: bool,
) -> None:
    from bobravoz.protocol.gen.transport.v1 import BinaryFrame, DataPacket, StreamEnvelope
    from bobravoz.protocol.packets import (
        rewrite_packet,
        split_process_message,
        wrap_process_message,
    )
    from bobravoz.protocol.scan import TargetStamp, stamp_rewritten
    from bobravoz.protocol.wire import PacketLayout

    stamp = TargetStamp(
        metadata_updates={"storyrun-name": "r", "current-step-id": "sink"}, stream_id="ns/r/sink"
    )
    packet = bytes(
        DataPacket(
            metadata={**metadata, "current-step-id": "source"},
            payload=Struct.from_dict({"old": 1.0}),
            inputs=Struct.from_dict({"old": 2.0}),
            binary=BinaryFrame(payload=b"frame"),
            envelope=StreamEnvelope(stream_id="up", sequence=9, partition="was", chunk_id="")
            if with_envelope
            else None,
        )
    )
    encoded_inputs = encode_struct(inputs) if inputs is not None else None
    encoded_payload = encode_struct(payload) if payload is not None else None
    fast = stamp_rewritten(
        stamp,
        packet,
        b"".join(
            bytes(DataPacket(metadata={key: value}))  # one map-entry field each
            for key, value in updates.items()
        ),
        tuple(key.encode() for key in updates),
        encoded_inputs,
        encoded_payload,
        partition,
        sequence,
    )
    general = wrap_process_message(
        rewrite_packet(
            packet,
            layout=PacketLayout.DATA_PACKET,
            metadata_updates={**updates, **stamp.updates},
            inputs=encoded_inputs,
            payload=encoded_payload,
            partition=partition,
            sequence=(stamp.stream_id, sequence) if sequence else None,
        )
    )
    fast_packet, _ = split_process_message(fast)
    general_packet, _ = split_process_message(general)
    assert fast_packet is not None
    assert general_packet is not None
    assert DataPacket.parse(fast_packet) == DataPacket.parse(general_packet)


def test_a_null_value_other_than_null_is_refused_as_protobuf_does() -> None:
    # {"k": null} with NullValue 1 (protobuf's Struct reader refuses it; found by hypothesis)
    data = b"\n\x07\n\x01k\x12\x02\x08\x01"
    with pytest.raises(WireFormatError, match="null_value"):
        decode_struct(data)
    assert decode_struct(data[:-1] + b"\x00") == {"k": None}
