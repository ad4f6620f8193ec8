"""Run a stream handler in-process against given packets: no sockets, no connector.

>>> outputs = trio.run(run_handler, handle, [Packet(binary=b"hi")])

The handler sees exactly ``packets`` (then the end of the stream) and everything it emits is
returned in order. It runs once, unsupervised, so its exceptions reach the test.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import trio

from bobravoz.sdk.engram import Handler, StreamContext
from bobravoz.sdk.packet import Packet, decode_packet, encode_packet


async def run_handler(
    handler: Handler,
    packets: Iterable[Packet],
    *,
    config: Mapping[str, Any] | None = None,
    step: str = "test-step",
    wire: bool = True,
) -> list[Packet]:
    """Feed ``packets`` to ``handler`` and return what it emitted.

    With ``wire`` (the default) every packet in both directions is encoded to the real wire
    messages and decoded again, so a packet the SDK could not send fails the test here.
    """
    inputs = list(packets)
    inbox_send, inbox_receive = trio.open_memory_channel[Packet](max(1, len(inputs)))
    outbox_send, outbox_receive = trio.open_memory_channel[Packet](math.inf)
    for packet in inputs:
        inbox_send.send_nowait(decode_packet(encode_packet(packet)) if wire else packet)
    inbox_send.close()
    context = StreamContext(
        inbox=inbox_receive, outbox=outbox_send, config=dict(config or {}), step=step
    )
    async with outbox_send:
        await handler(context)
    outputs: list[Packet] = []
    async with outbox_receive:
        async for packet in outbox_receive:
            outputs.append(decode_packet(encode_packet(packet)) if wire else packet)
    return outputs
