"""Toy speaker: plays the synthesized audio and reports what it was asked to say.

A sink. It counts PCM16 frames (16 kHz mono, 640 bytes; anything else is ``bad_frames``) and,
per ``synthesis.id``, checks the frames arrive in order (``out_of_order``) and all of them
(``synthesis.frames`` declared; the shortfall is ``missing_frames``). The first frame of each
synthesis carries its text: the summary lists the texts played. End-to-end latency is taken
from each frame's ``timestamp_ms``. It ends after the ``bobravoz.example/eos`` marker of each
of ``sources`` (default 1) upstream paths.
"""

from __future__ import annotations

import sys
from contextlib import aclosing
from dataclasses import dataclass, field

from toy import BYTES_PER_FRAME, Arrivals, Ends, Pacer, data_packets

from bobravoz.sdk import Packet, StreamContext, report, run_engram


@dataclass
class Player:
    """What has been played so far, per synthesis."""

    frames: int = 0
    bad_frames: int = 0
    out_of_order: int = 0
    texts: list[str] = field(default_factory=list)
    declared: dict[str, int] = field(default_factory=dict)
    received: dict[str, int] = field(default_factory=dict)
    last_index: dict[str, int] = field(default_factory=dict)

    def play(self, packet: Packet) -> None:
        """Account for one audio frame."""
        audio = packet.audio
        if audio is None or audio.codec != "pcm16" or len(audio.pcm) != BYTES_PER_FRAME:
            self.bad_frames += 1
            return
        self.frames += 1
        synthesis = packet.metadata.get("synthesis.id", "")
        index = int(packet.metadata.get("synthesis.frame", "0"))
        if index <= self.last_index.get(synthesis, -1):
            self.out_of_order += 1
        self.last_index[synthesis] = max(index, self.last_index.get(synthesis, -1))
        self.received[synthesis] = self.received.get(synthesis, 0) + 1
        self.declared[synthesis] = int(packet.metadata.get("synthesis.frames", "0"))
        if index == 0 and packet.payload is not None:
            self.texts.append(str(packet.payload.get("text", "")))

    @property
    def missing_frames(self) -> int:
        """Frames declared by a synthesis that did not arrive."""
        return sum(max(0, n - self.received.get(s, 0)) for s, n in self.declared.items())

    @property
    def complete(self) -> int:
        """Syntheses played from their first frame to their last."""
        return sum(self.received.get(s, 0) >= n for s, n in self.declared.items())


async def handle(stream: StreamContext) -> None:
    """Play until every upstream path's end marker, then report."""
    ends = Ends(sources=int(stream.config.get("sources", 1)))
    player = Player()
    arrivals = Arrivals()
    pacer = Pacer()
    async with aclosing(data_packets(stream, ends)) as packets:
        async for packet in packets:
            if packet.audio is None:
                continue
            player.play(packet)
            arrivals.arrived(packet.audio.timestamp_ms)
            if pacer.due():
                report("progress", step=stream.step, role="sink", received=player.frames)
    report(
        "summary",
        step=stream.step,
        role="sink",
        received=player.frames,
        played=len(player.texts),
        complete=player.complete,
        missing_frames=player.missing_frames,
        bad_frames=player.bad_frames,
        out_of_order=player.out_of_order,
        eos=ends.seen,
        texts=player.texts,
        seconds=arrivals.seconds,
        latencies_ms=arrivals.rounded_latencies_ms,
    )


if __name__ == "__main__":
    sys.exit(run_engram(handle))
