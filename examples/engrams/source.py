"""Example source engram: emits ``count`` binary packets of ``size`` bytes at ``rate`` per second.

Each payload starts with its sequence number and send time (``>QQ``: seq, time_ns) so sinks
can check order and measure end-to-end latency. A final packet with metadata
``bobravoz.example/eos: true`` marks the end of the stream. The summary line reports ``sent``
(data packets) and ``emitted`` (every packet handed to the transport, the marker included).
Asked to stop (SIGTERM), it stops sending, ends its stream with the marker all the same and
reports what it sent (``stopped: true``).
"""

from __future__ import annotations

import struct
import sys
import time

import trio

from bobravoz.sdk import Packet, StreamContext, report, run_engram

HEADER = struct.Struct(">QQ")
EOS_KEY = "bobravoz.example/eos"


async def handle(stream: StreamContext) -> None:
    """Emit the configured packets, paced to the configured rate (fewer when asked to stop),
    then the end marker."""
    count = int(stream.config.get("count", 1000))
    rate = float(stream.config.get("rate", 100))
    size = max(HEADER.size, int(stream.config.get("size", 256)))
    padding = b"\x00" * (size - HEADER.size)
    origin = {"bobravoz.example/source": stream.step}
    start = time.monotonic()
    last_report = start
    sent = 0
    for sequence in range(1, count + 1):
        if stream.stop_requested:
            break
        due = start + (sequence - 1) / rate if rate > 0 else 0.0
        delay = due - time.monotonic()
        if delay > 0:
            await trio.sleep(delay)
        body = HEADER.pack(sequence, time.time_ns()) + padding
        await stream.emit(
            Packet(binary=body, mime_type="application/octet-stream", metadata=origin)
        )
        sent = sequence
        now = time.monotonic()
        if now - last_report >= 0.5:
            report("progress", step=stream.step, role="source", sent=sequence)
            last_report = now
    await stream.emit(Packet(metadata={**origin, EOS_KEY: "true"}))
    report(
        "summary",
        step=stream.step,
        role="source",
        sent=sent,
        emitted=sent + 1,  # every packet handed to the transport: the data and the end marker
        seconds=round(time.monotonic() - start, 3),
        **({"stopped": True} if sent < count else {}),
    )


if __name__ == "__main__":
    sys.exit(run_engram(handle))
