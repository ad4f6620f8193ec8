"""Example sink engram: counts packets, checks their order per source, measures latency.

It ends after the end-of-stream marker of each of ``sources`` upstream sources (default 1),
or after ``idle_timeout`` seconds without a packet, and reports a summary line.
"""

from __future__ import annotations

import struct
import sys
import time

import trio

from bobravoz.sdk import StreamContext, report, run_engram

HEADER = struct.Struct(">QQ")
EOS_KEY = "bobravoz.example/eos"
SOURCE_KEY = "bobravoz.example/source"


async def handle(stream: StreamContext) -> None:
    """Consume until every source said EOS (or idle timeout), then report."""
    sources = int(stream.config.get("sources", 1))
    idle_timeout = float(stream.config.get("idle_timeout", 15))
    last_sequence: dict[str, int] = {}
    received = out_of_order = finished = 0
    latencies_ms: list[float] = []
    last_report = time.monotonic()
    first_at = last_at = 0.0
    packets = stream.packets()
    while finished < sources:
        with trio.move_on_after(idle_timeout):
            packet = await anext(packets, None)
            if packet is None:
                break
            origin = packet.metadata.get(SOURCE_KEY, "")
            if packet.metadata.get(EOS_KEY) == "true":
                finished += 1
                continue
            if packet.binary is None or len(packet.binary) < HEADER.size:
                continue
            sequence, sent_ns = HEADER.unpack_from(packet.binary)
            latencies_ms.append((time.time_ns() - sent_ns) / 1e6)
            last_at = time.monotonic()
            first_at = first_at or last_at
            if sequence != last_sequence.get(origin, 0) + 1:
                out_of_order += 1
            last_sequence[origin] = sequence
            received += 1
            if time.monotonic() - last_report >= 0.5:
                report("progress", step=stream.step, role="sink", received=received)
                last_report = time.monotonic()
            continue
        break
    report(
        "summary",
        step=stream.step,
        role="sink",
        received=received,
        out_of_order=out_of_order,
        eos=finished,
        seconds=round(last_at - first_at, 3),
        latencies_ms=[round(value, 3) for value in latencies_ms],
    )


if __name__ == "__main__":
    sys.exit(run_engram(handle))
