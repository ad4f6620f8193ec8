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
import time
from contextlib import aclosing
from dataclasses import dataclass, field

from bobravoz.sdk import Packet, StreamContext, report, run_engram

EOS_KEY = "bobravoz.example/eos"
SAMPLE_RATE_HZ = 16_000
BYTES_PER_FRAME = SAMPLE_RATE_HZ * 20 // 1000 * 2


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
    sources = int(stream.config.get("sources", 1))
    player = Player()
    latencies_ms: list[float] = []
    finished = 0
    first_at = last_at = 0.0
    last_report = time.monotonic()
    async with aclosing(stream.packets()) as packets:
        async for packet in packets:
            if packet.metadata.get(EOS_KEY) == "true":
                finished += 1
                if finished >= sources:
                    break
                continue
            if packet.audio is None:
                continue
            player.play(packet)
            if packet.audio.timestamp_ms:
                latencies_ms.append(time.time_ns() / 1e6 - packet.audio.timestamp_ms)
            last_at = time.monotonic()
            first_at = first_at or last_at
            if last_at - last_report >= 0.5:
                report("progress", step=stream.step, role="sink", received=player.frames)
                last_report = last_at
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
        eos=finished,
        texts=player.texts,
        seconds=round(last_at - first_at, 3),
        latencies_ms=[round(value, 3) for value in latencies_ms],
    )


if __name__ == "__main__":
    sys.exit(run_engram(handle))
