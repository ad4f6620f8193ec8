"""Unit: the SDK's chunking: split_binary and ChunkJoiner, and their wire round trip."""

from __future__ import annotations

import dataclasses
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bobravoz.sdk.chunking import ChunkError, ChunkJoiner, split_binary
from bobravoz.sdk.packet import Envelope, Packet, decode_packet, encode_packet

MIB = 1024 * 1024


def test_split_sets_the_chunk_fields() -> None:
    packets = split_binary(
        b"abcdefgh",
        chunk_size=3,
        stream_id="s1",
        chunk_id="c1",
        mime_type="image/png",
        metadata={"k": "v"},
    )
    assert [p.binary for p in packets] == [b"abc", b"def", b"gh"]
    assert [p.envelope for p in packets] == [
        Envelope(
            stream_id="s1",
            chunk_id="c1",
            chunk_index=i,
            chunk_count=3,
            chunk_bytes=size,
            total_bytes=8,
        )
        for i, size in enumerate((3, 3, 2))
    ]
    assert all(p.mime_type == "image/png" and p.metadata == {"k": "v"} for p in packets)
    packets[0].metadata["k"] = "changed"
    assert packets[1].metadata == {"k": "v"}  # each packet has its own copy


def test_split_defaults() -> None:
    first, second = split_binary(b"xy", chunk_size=1, stream_id="s")
    assert first.envelope is not None
    assert second.envelope is not None
    assert len(first.envelope.chunk_id) == 32
    assert first.envelope.chunk_id == second.envelope.chunk_id
    assert first.metadata == {}
    other = split_binary(b"xy", chunk_size=1, stream_id="s")[0]
    assert other.envelope is not None
    assert other.envelope.chunk_id != first.envelope.chunk_id


def test_empty_data_is_one_empty_chunk() -> None:
    (only,) = split_binary(b"", chunk_size=4, stream_id="s", chunk_id="c")
    assert only.binary == b""
    assert only.envelope == Envelope(stream_id="s", chunk_id="c", chunk_count=1)


def test_split_limits() -> None:
    assert len(split_binary(b"x" * 256, chunk_size=1, stream_id="s")) == 256
    with pytest.raises(ValueError, match="257 chunks"):
        split_binary(b"x" * 257, chunk_size=1, stream_id="s")
    with pytest.raises(ValueError, match="chunk_size"):
        split_binary(b"x", chunk_size=0, stream_id="s")
    with pytest.raises(ValueError, match="chunk_size"):
        split_binary(b"x", chunk_size=10 * MIB + 1, stream_id="s")
    with pytest.raises(ValueError, match="stream_id"):
        split_binary(b"x", chunk_size=1, stream_id="")
    with pytest.raises(ValueError, match="chunk_id"):
        split_binary(b"x", chunk_size=1, stream_id="s", chunk_id="c" * 129)
    with pytest.raises(ValueError, match="at most"):
        split_binary(bytes(64 * MIB + 1), chunk_size=10 * MIB, stream_id="s")


def test_joiner_passes_plain_packets_through() -> None:
    joiner = ChunkJoiner()
    plain = Packet(binary=b"x")
    assert joiner.add(plain) is plain
    enveloped = Packet(binary=b"x", envelope=Envelope(stream_id="s", sequence=4, partition="p"))
    assert joiner.add(enveloped) is enveloped


def test_joiner_rebuilds_the_whole_packet() -> None:
    joiner = ChunkJoiner()
    split = split_binary(
        b"hello world", chunk_size=4, stream_id="s", chunk_id="c", mime_type="text/plain"
    )
    packets = [
        dataclasses.replace(
            packet,
            timestamp_ms=9,
            metadata={"arrival": str(n)},
            envelope=dataclasses.replace(
                packet.envelope or Envelope(), sequence=10 + n, partition="p1"
            ),
        )
        for n, packet in enumerate(split)
    ]
    assert joiner.add(packets[2]) is None
    assert joiner.add(packets[0]) is None
    assert len(joiner) == 1
    whole = joiner.add(packets[1])
    assert whole is not None
    assert whole.binary == b"hello world"
    assert whole.mime_type == "text/plain"
    assert whole.timestamp_ms == 9
    # The first chunk to arrive gives everything but the bytes; chunk fields are cleared.
    assert whole.metadata == {"arrival": "2"}
    assert whole.envelope == Envelope(stream_id="s", sequence=12, partition="p1")
    assert len(joiner) == 0
    assert joiner.counts["assembled"] == 1


def test_joiner_errors_name_the_problem() -> None:
    joiner = ChunkJoiner()
    bad = Packet(binary=b"abc", envelope=Envelope(stream_id="s", chunk_id="c", chunk_count=0))
    with pytest.raises(ValueError, match="chunk_count"):
        joiner.add(bad)
    out_of_range = Packet(
        binary=b"abc", envelope=Envelope(stream_id="s", chunk_id="c", chunk_index=3, chunk_count=2)
    )
    with pytest.raises(ChunkError, match="chunk_index 3 out of range") as caught:
        joiner.add(out_of_range)
    assert caught.value.reason == "index_out_of_range"
    no_binary = Packet(
        payload={"a": 1}, envelope=Envelope(stream_id="s", chunk_id="c", chunk_count=2)
    )
    with pytest.raises(ValueError, match="binary frame"):
        joiner.add(no_binary)


def test_joiner_bounds_and_expiry() -> None:
    now = [0.0]
    joiner = ChunkJoiner(max_assemblies=2, max_bytes=100, ttl=5, clock=lambda: now[0])
    for chunk_id in ("a", "b"):
        joiner.add(split_binary(b"xy", chunk_size=1, stream_id="s", chunk_id=chunk_id)[0])
    with pytest.raises(ValueError, match="too many chunk assemblies"):
        joiner.add(split_binary(b"xy", chunk_size=1, stream_id="s", chunk_id="c")[0])
    with pytest.raises(ValueError, match="limit"):
        joiner.add(split_binary(bytes(101), chunk_size=60, stream_id="t")[0])
    now[0] = 6.0
    assert joiner.expire() == 2
    assert len(joiner) == 0
    assert joiner.counts["expired"] == 2


@given(
    data=st.binary(max_size=400),
    chunk_size=st.integers(min_value=2, max_value=50),
    seed=st.integers(),
    duplicates=st.lists(st.integers(min_value=0, max_value=1000), max_size=8),
    over_the_wire=st.booleans(),
)
def test_split_then_join_in_any_order_gives_the_original(
    data: bytes, chunk_size: int, seed: int, duplicates: list[int], over_the_wire: bool
) -> None:
    packets = split_binary(data, chunk_size=chunk_size, stream_id="s", metadata={"m": "1"})
    arrivals = packets + [packets[d % len(packets)] for d in duplicates]
    random.Random(seed).shuffle(arrivals)
    joiner = ChunkJoiner()
    wholes = []
    for packet in arrivals:
        if over_the_wire:
            packet = decode_packet(encode_packet(packet))
        whole = joiner.add(packet)
        if whole is not None:
            wholes.append(whole)
            break  # later copies would open a new assembly of an already joined payload
    assert len(wholes) == 1
    assert wholes[0].binary == data
    assert wholes[0].metadata == {"m": "1"}
    assert wholes[0].envelope == Envelope(stream_id="s")
