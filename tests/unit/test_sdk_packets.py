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
