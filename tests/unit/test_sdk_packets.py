"""Unit: the SDK's packet type, its wire conversion, and the in-process testkit."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bobravoz.sdk import AudioFrame, Envelope, Packet, StreamContext
from bobravoz.sdk.packet import decode_packet, encode_packet
from bobravoz.sdk.testkit import run_handler

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.floats(allow_nan=False, allow_infinity=False, width=32)
    | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)


@given(
    binary=st.one_of(st.none(), st.binary(max_size=64)),
    metadata=st.dictionaries(st.text(min_size=1, max_size=8), st.text(max_size=8), max_size=4),
    payload=st.one_of(st.none(), st.dictionaries(st.text(max_size=5), json_values, max_size=3)),
    sequence=st.integers(min_value=0, max_value=2**64 - 1),
)
def test_packets_survive_the_wire(
    binary: bytes | None, metadata: dict[str, str], payload: dict | None, sequence: int
) -> None:
    packet = Packet(
        binary=binary,
        mime_type="application/x" if binary is not None else "",
        metadata=metadata,
        payload=payload,
        envelope=Envelope(stream_id="s", sequence=sequence),
    )
    assert decode_packet(encode_packet(packet)) == packet


def test_audio_frame_round_trip() -> None:
    audio = AudioFrame(
        pcm=b"\x01\x02", sample_rate_hz=16000, channels=1, codec="pcm16", timestamp_ms=20
    )
    assert decode_packet(encode_packet(Packet(audio=audio))).audio == audio


def test_two_frames_are_refused() -> None:
    with pytest.raises(ValueError, match="at most one frame"):
        Packet(binary=b"x", audio=AudioFrame(pcm=b"x", sample_rate_hz=8000, channels=1))


def test_malformed_bytes_raise_value_error() -> None:
    with pytest.raises(ValueError, match="malformed"):
        decode_packet(b"\x0a\xff\xff\xff")


async def test_testkit_runs_a_handler_without_sockets() -> None:
    async def upper(stream: StreamContext) -> None:
        async for packet in stream.packets():
            assert packet.binary is not None
            await stream.emit(
                Packet(binary=packet.binary.upper(), metadata={"n": str(stream.config["n"])})
            )

    outputs = await run_handler(
        upper, [Packet(binary=b"ab"), Packet(binary=b"cd")], config={"n": 7}
    )
    assert [p.binary for p in outputs] == [b"AB", b"CD"]
    assert all(p.metadata == {"n": "7"} for p in outputs)


async def test_testkit_surfaces_handler_errors() -> None:
    async def broken(stream: StreamContext) -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await run_handler(broken, [Packet(binary=b"x")])


plain_packets = st.builds(
    Packet,
    binary=st.one_of(st.none(), st.binary(max_size=40)),
    mime_type=st.sampled_from(["", "audio/opus", "é"]),
    timestamp_ms=st.integers(0, 2**64 - 1),
    metadata=st.dictionaries(st.text(min_size=1, max_size=6), st.text(max_size=6), max_size=3),
    envelope=st.one_of(
        st.none(),
        st.builds(
            Envelope,
            stream_id=st.text(max_size=4),
            sequence=st.integers(0, 2**64 - 1),
            partition=st.text(max_size=3),
        ),
    ),
)


_json_objects = st.dictionaries(
    st.text(max_size=6),
    st.recursive(
        st.none() | st.booleans() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
        max_leaves=8,
    ),
    max_size=4,
)


@given(
    packet=plain_packets,
    flip=st.tuples(st.integers(0, 120), st.integers(0, 255)),
    payload=st.none() | _json_objects,
    inputs=st.none() | _json_objects,
)
def test_the_plain_decoder_reads_what_the_generated_parser_reads(
    packet: Packet,
    flip: tuple[int, int],
    payload: dict[str, object] | None,
    inputs: dict[str, object] | None,
) -> None:
    """Metadata, binary, payload, inputs and envelope packets (damaged or not): whatever the
    plain decoder accepts, the generated parser decodes to the same packet."""
    from bobravoz.protocol.gen.google.protobuf import Struct
    from bobravoz.protocol.gen.transport.v1 import DataRequest, StreamEnvelope
    from bobravoz.sdk import packet as module

    request = DataRequest(metadata=packet.metadata)
    if payload is not None:
        request.payload = Struct.from_dict(payload)
    if inputs is not None:
        request.inputs = Struct.from_dict(inputs)
    if packet.binary is not None:
        from bobravoz.protocol.gen.transport.v1 import BinaryFrame

        request.binary = BinaryFrame(
            payload=packet.binary, mime_type=packet.mime_type, timestamp_ms=packet.timestamp_ms
        )
    if packet.envelope is not None:
        request.envelope = StreamEnvelope(
            stream_id=packet.envelope.stream_id,
            sequence=packet.envelope.sequence,
            partition=packet.envelope.partition,
        )
    data = bytearray(bytes(request))
    at, value = flip
    if at < len(data):
        data[at] = value
    raw = bytes(data)
    plain = module._decode_plain(raw)  # noqa: SLF001
    if plain is None:
        return  # declined: decode_packet takes the generated parser itself
    # what the plain path accepts, the generated parser reads the same way
    assert module._decode_general(raw) == plain  # noqa: SLF001
    assert decode_packet(raw) == plain


@given(packet=plain_packets, payload=st.none() | _json_objects, inputs=st.none() | _json_objects)
def test_the_plain_encoder_writes_what_the_generated_class_writes(
    packet: Packet, payload: dict[str, object] | None, inputs: dict[str, object] | None
) -> None:
    from bobravoz.protocol.gen.google.protobuf import Struct
    from bobravoz.protocol.gen.transport.v1 import BinaryFrame, DataRequest, StreamEnvelope

    packet.payload, packet.inputs = payload, inputs
    expected = DataRequest(metadata=packet.metadata)
    if packet.binary is not None:
        expected.binary = BinaryFrame(
            payload=packet.binary, mime_type=packet.mime_type, timestamp_ms=packet.timestamp_ms
        )
    if payload is not None:
        expected.payload = Struct.from_dict(payload)
    if inputs is not None:
        expected.inputs = Struct.from_dict(inputs)
    if packet.envelope is not None:
        expected.envelope = StreamEnvelope(
            stream_id=packet.envelope.stream_id,
            sequence=packet.envelope.sequence,
            partition=packet.envelope.partition,
        )
    assert DataRequest.parse(encode_packet(packet)) == expected


def test_binary_packets_take_the_plain_paths() -> None:
    """The packets streaming engrams send and get are read and written field by field."""
    from bobravoz.sdk import packet as module

    sample = Packet(binary=b"x" * 64, mime_type="a/b", metadata={"k": "v"})
    data = encode_packet(sample)
    assert data == module._encode_plain(sample)  # noqa: SLF001
    assert module._decode_plain(data) == sample  # noqa: SLF001
    # payload and inputs objects are read straight from the wire too (not by the generated
    # class); audio still takes the generated class
    objects = Packet(payload={"a": 1.0}, inputs={"b": [True, None]})
    assert module._decode_plain(encode_packet(objects)) == objects  # noqa: SLF001
    audio = Packet(audio=AudioFrame(pcm=b"\x00\x01", sample_rate_hz=16000, channels=1))
    assert module._decode_plain(encode_packet(audio)) is None  # noqa: SLF001
