"""Toy archive: a sink that files every record it receives.

A record is either joined (payload ``{joined: {<step>: <payload>, ...}}``, metadata
``bubu.join.parts`` and ``bubu.join.complete``, made by the hub's fan-in) or plain (one
branch's payload). The summary counts ``joined``, ``partial`` (a join the hub completed on
quorum at its timeout), ``plain``, ``noisy`` (records tagged ``noisy: true``: the Story's
``drop-noise`` rule should keep them out), ``duplicates`` (an item id filed twice), and the
end-to-end latency from the emitter's ``bobravoz.example/sent_ms``. It ends after the
``bobravoz.example/eos`` marker of each of ``sources`` (default 2) upstream paths.
"""

from __future__ import annotations

import sys
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

from toy import SENT_KEY, Arrivals, Ends, data_packets

from bobravoz.sdk import Packet, StreamContext, report, run_engram


@dataclass
class Archive:
    """Records filed so far."""

    joined: int = 0
    partial: int = 0
    plain: int = 0
    noisy: int = 0
    duplicates: int = 0
    ids: set[Any] = field(default_factory=set)

    @property
    def records(self) -> int:
        """Every record filed."""
        return self.joined + self.plain

    def file(self, packet: Packet) -> None:
        """File one record."""
        payload = packet.payload or {}
        parts = payload.get("joined")
        if isinstance(parts, dict):
            self.joined += 1
            self.partial += packet.metadata.get("bubu.join.complete") == "false"
            ids = {part.get("id") for part in parts.values() if isinstance(part, dict)}
            number = next(iter(ids), None) if len(ids) == 1 else tuple(sorted(map(str, ids)))
        else:
            self.plain += 1
            number = payload.get("id")
        self.noisy += packet.metadata.get("noisy") == "true"
        if number in self.ids:
            self.duplicates += 1
        self.ids.add(number)


async def handle(stream: StreamContext) -> None:
    """File records until every upstream path's end marker, then report."""
    ends = Ends(sources=int(stream.config.get("sources", 2)))
    archive = Archive()
    arrivals = Arrivals()
    async with aclosing(data_packets(stream, ends)) as packets:
        async for packet in packets:
            archive.file(packet)
            sent = packet.metadata.get(SENT_KEY)
            arrivals.arrived(float(sent) if sent else None)
            report("progress", step=stream.step, role="sink", received=archive.records)
    report(
        "summary",
        step=stream.step,
        role="sink",
        received=archive.records,
        joined=archive.joined,
        partial=archive.partial,
        plain=archive.plain,
        noisy=archive.noisy,
        duplicates=archive.duplicates,
        eos=ends.seen,
        seconds=arrivals.seconds,
        latencies_ms=arrivals.rounded_latencies_ms,
    )


if __name__ == "__main__":
    sys.exit(run_engram(handle))
