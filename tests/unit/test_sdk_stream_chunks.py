"""The SDK sends large binary payloads as chunk sets and joins received ones: a handler only
ever sees whole packets."""

from __future__ import annotations

import json
import os

import pytest
import trio

from bobravoz.sdk import Envelope, Packet, StreamContext
from bobravoz.sdk.losses import CHUNK_SET_INCOMPLETE, UNDECODABLE, SdkLosses


def _context(
    inbox: trio.MemoryReceiveChannel[Packet], outbox: trio.MemorySendChannel[Packet]
) -> StreamContext:
    return StreamContext(inbox=inbox, outbox=outbox, config={}, step="s", chunk_bytes=1 << 20)


async def test_a_large_payload_goes_as_chunks_and_comes_back_whole() -> None:
    data = os.urandom(3 * (1 << 20) + 5)
    out_send, out_receive = trio.open_memory_channel[Packet](16)
    in_send, in_receive = trio.open_memory_channel[Packet](16)
    sender = _context(trio.open_memory_channel[Packet](0)[1], out_send)
    receiver = _context(in_receive, trio.open_memory_channel[Packet](0)[0])
    original = Packet(binary=data, mime_type="audio/raw", metadata={"k": "v"}, payload={"n": 1})
    await sender.emit(original)
    await sender.emit(Packet(binary=b"small", metadata={"k": "small"}))
    chunks = [out_receive.receive_nowait() for _ in range(5)]
    assert [c.envelope.chunk_count if c.envelope else 0 for c in chunks] == [4, 4, 4, 4, 0]
    assert max(len(c.binary or b"") for c in chunks) == 1 << 20
    assert all(c.metadata == {"k": "v"} and c.payload == {"n": 1} for c in chunks[:4])
    # delivered out of order, with a duplicate: still one whole packet, then the small one
    for chunk in [chunks[2], chunks[0], chunks[3], chunks[0], chunks[1], chunks[4]]:
        in_send.send_nowait(chunk)
    in_send.close()
    received = [packet async for packet in receiver.packets()]
    assert [p.binary for p in received] == [data, b"small"]
    assert received[0].mime_type == "audio/raw"
    assert received[0].metadata == {"k": "v"}
    assert received[0].payload == {"n": 1}


def _chunk(data: bytes, index: int, count: int, chunk_id: str = "set") -> Packet:
    return Packet(
        binary=data,
        envelope=Envelope(
            stream_id="up",
            chunk_id=chunk_id,
            chunk_index=index,
            chunk_count=count,
            chunk_bytes=len(data),
            total_bytes=len(data) * count,
        ),
    )


async def test_a_chunk_set_still_incomplete_when_the_upstream_ends_is_counted_lost(
    caplog: pytest.LogCaptureFixture,
) -> None:
    in_send, in_receive = trio.open_memory_channel[Packet](16)
    receiver = _context(in_receive, trio.open_memory_channel[Packet](0)[0])
    in_send.send_nowait(Packet(binary=b"whole"))
    in_send.send_nowait(_chunk(b"half", 0, 2))
    in_send.close()
    received = [packet.binary async for packet in receiver.packets()]
    assert received == [b"whole"]
    assert receiver.losses.counts == {CHUNK_SET_INCOMPLETE: 1}
    assert "lost in the SDK" in caplog.text
    receiver.drop_incomplete_chunk_sets()  # the engram's end: nothing counted twice
    assert receiver.losses.total == 1


async def test_a_chunk_the_joiner_refuses_is_counted_by_its_reason() -> None:
    in_send, in_receive = trio.open_memory_channel[Packet](16)
    receiver = _context(in_receive, trio.open_memory_channel[Packet](0)[0])
    in_send.send_nowait(_chunk(b"x", 5, 2))  # index out of range
    in_send.send_nowait(_chunk(b"ab", 0, 2, "ok"))
    in_send.send_nowait(_chunk(b"cd", 1, 2, "ok"))
    in_send.close()
    received = [packet.binary async for packet in receiver.packets()]
    assert received == [b"abcd"]
    assert receiver.losses.counts == {"chunk_index_out_of_range": 1}


async def test_losses_are_reported_once_as_a_losses_line_and_not_when_there_are_none(
    capsys: pytest.CaptureFixture[str],
) -> None:
    losses = SdkLosses()
    losses.report("sink")
    assert capsys.readouterr().out == ""
    losses.count(UNDECODABLE, "a packet does not decode")
    losses.count(CHUNK_SET_INCOMPLETE, "a half set", 2)
    losses.count(CHUNK_SET_INCOMPLETE, "nothing", 0)
    losses.report("sink")
    line = json.loads(capsys.readouterr().out)
    assert line == {
        "event": "losses",
        "step": "sink",
        "lost": 3,
        "reasons": {CHUNK_SET_INCOMPLETE: 2, UNDECODABLE: 1},
    }
