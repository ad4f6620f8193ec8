"""Hub-side packet operations on bytes: split/wrap, metadata, envelopes, retargeting."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bobravoz.protocol.gen.transport.v1 import (
    BinaryFrame,
    DataPacket,
    DataRequest,
    FlowControl,
    ProcessRequest,
    StreamEnvelope,
)
from bobravoz.protocol.packets import (
    EnvelopeFields,
    Retargeter,
    has_frame,
    is_heartbeat,
    read_envelope,
    read_metadata,
    retarget_packet,
    split_process_message,
    wrap_process_message,
)
from bobravoz.protocol.wire import PacketLayout

DATA = PacketLayout.DATA_PACKET
IDENTITY = {"storyrun-name": "run", "storyrun-namespace": "ns", "current-step-id": "sink"}
metadata_maps = st.dictionaries(
    st.sampled_from(["a", "b", "storyrun-name", "current-step-id", "bubu-heartbeat"]),
    st.text(max_size=6),
    max_size=4,
)
envelopes = st.one_of(
    st.none(),
    st.builds(
        StreamEnvelope,
        stream_id=st.text(max_size=5),
        sequence=st.integers(0, 2**64 - 1),
        partition=st.text(max_size=3),
    ),
)


def retarget_cases(test: Callable[..., None]) -> Callable[..., None]:
    """Run ``test`` on random packets and sequence stamps (the retargeting properties)."""
    cases = given(
        metadata=metadata_maps,
        envelope=envelopes,
        payload=st.binary(max_size=20),
        sequence=st.one_of(st.none(), st.integers(1, 2**64 - 1)),
    )
    decorated: Callable[..., None] = settings(max_examples=200, deadline=None)(cases(test))
    return decorated


def test_split_and_wrap_are_inverse() -> None:
    packet = bytes(DataPacket(binary=BinaryFrame(payload=b"x")))
    flow = bytes(FlowControl(ack=3))
    wrapped = wrap_process_message(packet, flow)
    assert ProcessRequest.parse(wrapped) == ProcessRequest(
        packet=DataPacket.parse(packet), flow=FlowControl.parse(flow)
    )
    assert split_process_message(wrapped) == (packet, flow)
    assert split_process_message(wrap_process_message(None, flow)) == (None, flow)
    assert split_process_message(b"") == (None, None)


def test_repeated_embedded_messages_merge_like_protobuf() -> None:
    first = wrap_process_message(bytes(DataPacket(metadata={"a": "1"})))
    second = wrap_process_message(bytes(DataPacket(binary=BinaryFrame(payload=b"p"))))
    packet, _ = split_process_message(first + second)
    assert packet is not None
    assert DataPacket.parse(packet) == DataPacket(
        metadata={"a": "1"}, binary=BinaryFrame(payload=b"p")
    )


@pytest.mark.parametrize(("value", "expected"), [("true", True), ("TRUE", True), ("no", False)])
def test_heartbeat_detection(value: str, expected: bool) -> None:
    assert is_heartbeat(bytes(DataPacket(metadata={"bubu-heartbeat": value})), DATA) is expected
    assert not is_heartbeat(bytes(DataPacket(metadata={"other": "true"})), DATA)


def test_frames_and_envelopes_are_read() -> None:
    packet = bytes(
        DataRequest(
            binary=BinaryFrame(payload=b"x"), envelope=StreamEnvelope(stream_id="s", sequence=9)
        )
    )
    layout = PacketLayout.DATA_REQUEST
    assert has_frame(packet, layout)
    assert not has_frame(bytes(DataRequest(metadata={"k": "v"})), layout)
    assert read_envelope(packet, layout) == EnvelopeFields(stream_id="s", sequence=9)
    assert read_envelope(bytes(DataRequest()), layout) is None


@retarget_cases
def test_retarget_rewrites_identity_and_sequence_only(
    metadata: dict[str, str],
    envelope: StreamEnvelope | None,
    payload: bytes,
    sequence: int | None,
) -> None:
    original = DataPacket(metadata=metadata, binary=BinaryFrame(payload=payload), envelope=envelope)
    stamp = None if sequence is None else ("ns/run/sink", sequence)
    result = DataPacket.parse(
        retarget_packet(bytes(original), layout=DATA, metadata_updates=IDENTITY, sequence=stamp)
    )
    assert result.metadata == {**metadata, **IDENTITY}
    assert result.binary == original.binary
    if sequence is None:
        assert result.envelope == envelope
    else:
        base = envelope or StreamEnvelope()
        assert result.envelope == StreamEnvelope(
            stream_id="ns/run/sink", sequence=sequence, partition=base.partition
        )
    assert read_metadata(bytes(result), DATA) == result.metadata


@retarget_cases
def test_retargeter_equals_retarget_packet(
    metadata: dict[str, str],
    envelope: StreamEnvelope | None,
    payload: bytes,
    sequence: int | None,
) -> None:
    packet = bytes(
        DataPacket(metadata=metadata, binary=BinaryFrame(payload=payload), envelope=envelope)
    )
    fast = Retargeter(layout=DATA, metadata_updates=IDENTITY, stream_id="ns/run/sink")
    slow = retarget_packet(
        packet,
        layout=DATA,
        metadata_updates=IDENTITY,
        sequence=None if sequence is None else ("ns/run/sink", sequence),
    )
    assert DataPacket.parse(fast(packet, sequence)) == DataPacket.parse(slow)
