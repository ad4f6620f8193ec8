"""Contract validation on packet bytes: the golden vectors of the reference notes (§5.4),
their accepted boundaries, on two packet layouts; and properties over random input."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bobravoz.protocol.gen.transport.v1 import (
    AudioFrame,
    BinaryFrame,
    ControlAction,
    ControlError,
    ControlRequest,
    ControlResponse,
    DataPacket,
    DataRequest,
    FlowControl,
    PartitionAck,
    StreamEnvelope,
    TransportConfig,
    TransportDescriptor,
    VideoFrame,
)
from bobravoz.protocol.validation import validate_flow, validate_message, validate_packet
from bobravoz.protocol.wire import PacketLayout

MIB = 1024 * 1024
LAYOUTS = [(DataPacket, PacketLayout.DATA_PACKET), (DataRequest, PacketLayout.DATA_REQUEST)]


def audio(**changes: Any) -> AudioFrame:
    return AudioFrame(**{"pcm": b"pcm", "sample_rate_hz": 48000, "channels": 2, **changes})


REJECTED: list[tuple[str, dict[str, Any], str, str]] = [
    ("pcm too large", {"audio": audio(pcm=b"a" * (10 * MIB + 1))}, "audio.pcm", "too_large"),
    ("rate 7999", {"audio": audio(sample_rate_hz=7999)}, "audio.sample_rate_hz", "out_of_range"),
    (
        "rate 192001",
        {"audio": audio(sample_rate_hz=192001)},
        "audio.sample_rate_hz",
        "out_of_range",
    ),
    ("rate 0", {"audio": audio(sample_rate_hz=0)}, "audio.sample_rate_hz", "out_of_range"),
    (
        "rate negative",
        {"audio": audio(sample_rate_hz=-8000)},
        "audio.sample_rate_hz",
        "out_of_range",
    ),
    ("channels 9", {"audio": audio(channels=9)}, "audio.channels", "out_of_range"),
    ("channels 0", {"audio": audio(channels=0)}, "audio.channels", "out_of_range"),
    ("codec 33", {"audio": audio(codec="c" * 33)}, "audio.codec", "too_long"),
    (
        "video too large",
        {"video": VideoFrame(payload=b"v" * (10 * MIB + 1), codec="h264", width=1920, height=1080)},
        "video.payload",
        "too_large",
    ),
    (
        "width 16385",
        {"video": VideoFrame(payload=b"v", width=16385)},
        "video.width",
        "out_of_range",
    ),
    (
        "height 16385",
        {"video": VideoFrame(payload=b"v", height=16385)},
        "video.height",
        "out_of_range",
    ),
    (
        "mime 256",
        {"binary": BinaryFrame(payload=b"payload", mime_type="m" * 256)},
        "binary.mime_type",
        "too_long",
    ),
    (
        "binary too large",
        {"binary": BinaryFrame(payload=b"b" * (10 * MIB + 1))},
        "binary.payload",
        "too_large",
    ),
    ("101 pairs", {"metadata": {f"k{i}": "v" for i in range(101)}}, "metadata", "too_many"),
    ("empty key", {"metadata": {"": "v"}}, "metadata", "empty_key"),
    ("value 1025", {"metadata": {"k": "v" * 1025}}, 'metadata["k"]', "too_long"),
    ("key 129", {"metadata": {"k" * 129: "v"}}, f'metadata["{"k" * 129}"]', "too_long"),
    (
        "11 transports",
        {"transports": [TransportDescriptor(name=f"t{i}") for i in range(11)]},
        "transports",
        "too_many",
    ),
    (
        "transport_ref 254",
        {
            "transports": [
                TransportDescriptor(
                    name="primary", typed_config=TransportConfig(transport_ref="r" * 254)
                )
            ]
        },
        "transports[0].typed_config.transport_ref",
        "too_long",
    ),
    (
        "mode_reason 513",
        {
            "transports": [
                TransportDescriptor(
                    typed_config=TransportConfig(transport_ref="livekit", mode_reason="m" * 513)
                )
            ]
        },
        "transports[0].typed_config.mode_reason",
        "too_long",
    ),
    (
        "name 129",
        {"transports": [TransportDescriptor(name="n" * 129)]},
        "transports[0].name",
        "too_long",
    ),
    (
        "index >= count",
        {"envelope": StreamEnvelope(stream_id="s", chunk_id="c", chunk_index=2, chunk_count=2)},
        "envelope.chunk_index",
        "envelope_rule",
    ),
    (
        "missing stream_id",
        {"envelope": StreamEnvelope(chunk_id="c", chunk_index=0, chunk_count=2)},
        "envelope.stream_id",
        "envelope_rule",
    ),
    (
        "chunk fields without count",
        {"envelope": StreamEnvelope(chunk_id="c", chunk_index=1)},
        "envelope.chunk_index",
        "envelope_rule",
    ),
    (
        "total_bytes alone",
        {"envelope": StreamEnvelope(total_bytes=5)},
        "envelope.total_bytes",
        "envelope_rule",
    ),
    (
        "chunk_bytes alone",
        {"envelope": StreamEnvelope(chunk_bytes=5)},
        "envelope.chunk_bytes",
        "envelope_rule",
    ),
    (
        "missing chunk_id",
        {"envelope": StreamEnvelope(stream_id="s", chunk_count=2)},
        "envelope.chunk_id",
        "envelope_rule",
    ),
    (
        "chunk_count 257",
        {"envelope": StreamEnvelope(stream_id="s", chunk_id="c", chunk_count=257)},
        "envelope.chunk_count",
        "out_of_range",
    ),
    (
        "total_bytes 64MiB+1",
        {"envelope": StreamEnvelope(total_bytes=64 * MIB + 1)},
        "envelope.total_bytes",
        "out_of_range",
    ),
    (
        "stream_id 129",
        {"envelope": StreamEnvelope(stream_id="s" * 129)},
        "envelope.stream_id",
        "too_long",
    ),
]

ACCEPTED: list[tuple[str, dict[str, Any]]] = [
    ("empty packet", {}),
    ("rate 8000", {"audio": audio(sample_rate_hz=8000)}),
    ("rate 192000", {"audio": audio(sample_rate_hz=192000, channels=8)}),
    ("width 16384", {"video": VideoFrame(payload=b"v", codec="h264", width=16384, height=16384)}),
    ("100 pairs", {"metadata": {f"k{i}": "v" * 1024 for i in range(100)}}),
    ("key 128 chars of 2 bytes", {"metadata": {"é" * 128: "v"}}),
    ("10 transports", {"transports": [TransportDescriptor(name=f"t{i}") for i in range(10)]}),
    ("frame 10 MiB", {"binary": BinaryFrame(payload=b"b" * (10 * MIB), mime_type="m" * 255)}),
    ("envelope empty", {"envelope": StreamEnvelope()}),
    ("sequenced", {"envelope": StreamEnvelope(stream_id="s", sequence=7, partition="p")}),
    (
        "chunked",
        {
            "envelope": StreamEnvelope(
                stream_id="s",
                chunk_id="c",
                chunk_index=1,
                chunk_count=2,
                chunk_bytes=3,
                total_bytes=6,
            )
        },
    ),
]


@pytest.mark.parametrize(("cls", "layout"), LAYOUTS)
@pytest.mark.parametrize(
    ("case", "fields", "path", "reason"), REJECTED, ids=[r[0] for r in REJECTED]
)
def test_golden_rejections(
    cls: type, layout: PacketLayout, case: str, fields: dict[str, Any], path: str, reason: str
) -> None:
    violation = validate_packet(bytes(cls(**fields)), layout)
    assert violation is not None, case
    assert (violation.field, violation.reason) == (path, reason)
    assert violation.message


@pytest.mark.parametrize(("cls", "layout"), LAYOUTS)
@pytest.mark.parametrize(("case", "fields"), ACCEPTED, ids=[a[0] for a in ACCEPTED])
def test_accepted_boundaries(
    cls: type, layout: PacketLayout, case: str, fields: dict[str, Any]
) -> None:
    assert validate_packet(bytes(cls(**fields)), layout) is None, case


def test_flow_control_limits() -> None:
    acks = [PartitionAck(partition=f"p{i}", ack=1) for i in range(257)]
    violation = validate_flow(bytes(FlowControl(partition_acks=acks)))
    assert violation is not None
    assert (violation.field, violation.reason) == ("partition_acks", "too_many")
    assert validate_flow(bytes(FlowControl(partition_acks=acks[:256]))) is None
    long_partition = FlowControl(partition_acks=[PartitionAck(partition="p" * 129)])
    assert validate_flow(bytes(long_partition)) is not None


def test_control_message_limits() -> None:
    too_long = ControlResponse(
        action=ControlAction.ERROR, error=ControlError(code=1, message="m" * 2049)
    )
    violation = validate_message(too_long)
    assert violation is not None
    assert violation.field == "error.message"
    negative = ControlResponse(action=ControlAction.ERROR, error=ControlError(code=-1))
    violation = validate_message(negative)
    assert violation is not None
    assert violation.reason == "negative"
    assert validate_message(ControlRequest(custom_action="c" * 129)) is not None
    assert validate_message(ControlRequest(action=ControlAction.HEARTBEAT)) is None
    assert validate_message(DataRequest(metadata={"": "x"})) is not None


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_never_raise(data: bytes) -> None:
    for layout in PacketLayout:
        violation = validate_packet(data, layout)
        assert violation is None or violation.reason


@settings(max_examples=150, deadline=None)
@given(
    metadata=st.dictionaries(st.text(min_size=1, max_size=128), st.text(max_size=200), max_size=20),
    payload=st.binary(max_size=100),
    mime=st.text(max_size=255),
    sequence=st.integers(0, 2**64 - 1),
    chunk=st.one_of(st.none(), st.integers(1, 256)),
)
def test_packets_within_limits_are_accepted(
    metadata: dict[str, str], payload: bytes, mime: str, sequence: int, chunk: int | None
) -> None:
    envelope = StreamEnvelope(stream_id="s", sequence=sequence)
    if chunk is not None:
        envelope = StreamEnvelope(
            stream_id="s", sequence=sequence, chunk_id="c", chunk_count=chunk, chunk_index=chunk - 1
        )
    for cls, layout in LAYOUTS:
        packet = cls(
            metadata=metadata,
            binary=BinaryFrame(payload=payload, mime_type=mime),
            envelope=envelope,
        )
        assert validate_packet(bytes(packet), layout) is None
