"""Example sink engram: counts packets, checks their order per source, measures latency.

It reads its stream until the stream ends: after the end-of-stream marker of each of
``sources`` upstream paths (default 1; a source's marker reaches a sink once per path), or
when the upstream closes. It never gives up on a quiet stream: a marker that does not arrive
is loss, and the run shows it. The summary line reports what arrived, and per source the
first and last sequence seen.
"""

from __future__ import annotations

import struct
import sys
import time

from bobravoz.sdk import StreamContext, report, run_engram

HEADER = struct.Struct(">QQ")
EOS_KEY = "bobravoz.example/eos"
SOURCE_KEY = "bobravoz.example/source"


async def handle(stream: StreamContext) -> None:
    """Consume until the end of the stream (every source's end marker), then report."""
    sources = int(stream.config.get("sources", 1))
    first_sequence: dict[str, int] = {}
    last_sequence: dict[str, int] = {}
    received = out_of_order = finished = 0
    latencies_ms: list[float] = []
    last_report = time.monotonic()
    first_at = last_at = 0.0
    async for packet in stream.packets():
        origin = packet.metadata.get(SOURCE_KEY, "")
        if packet.metadata.get(EOS_KEY) == "true":
            finished += 1
            if finished >= sources:
                break
            continue
        if packet.binary is None or len(packet.binary) < HEADER.size:
            continue
        sequence, sent_ns = HEADER.unpack_from(packet.binary)
        latencies_ms.append((time.time_ns() - sent_ns) / 1e6)
        last_at = time.monotonic()
        first_at = first_at or last_at
        if sequence != last_sequence.get(origin, 0) + 1:
            out_of_order += 1
        first_sequence.setdefault(origin, sequence)
        last_sequence[origin] = sequence
        received += 1
        if time.monotonic() - last_report >= 0.5:
            report("progress", step=stream.step, role="sink", received=received)
            last_report = time.monotonic()
    report(
        "summary",
        step=stream.step,
        role="sink",
        received=received,
        out_of_order=out_of_order,
        eos=finished,
        sequences={
            origin: [first_sequence[origin], last] for origin, last in last_sequence.items()
        },
        seconds=round(last_at - first_at, 3),
        latencies_ms=[round(value, 3) for value in latencies_ms],
    )


if __name__ == "__main__":
    sys.exit(run_engram(handle))
