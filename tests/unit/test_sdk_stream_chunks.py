"""The SDK sends large binary payloads as chunk sets and joins received ones: a handler only
ever sees whole packets."""

from __future__ import annotations

import os

import trio

from bobravoz.sdk import Packet, StreamContext


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
