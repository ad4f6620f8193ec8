"""What the toy engrams share (a helper module, not an engram: no Story names it).

- the end marker: :data:`EOS_KEY` (``"true"`` on a packet that ends one upstream path),
  :func:`end_marker` (a step's own), :func:`data_packets` (read until every upstream's);
- the audio format of the voice examples: 16 kHz mono PCM16 in 20 ms frames
  (:func:`sine_frame`, :func:`pcm16_frame`);
- reporting: :class:`Pacer` (a progress report at most every half second) and
  :class:`Arrivals` (the seconds and end-to-end latencies a sink reports).
"""

from __future__ import annotations

import math
import struct
import time
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import dataclass, field

from bobravoz.sdk import AudioFrame, Packet, StreamContext

EOS_KEY = "bobravoz.example/eos"
SOURCE_KEY = "bobravoz.example/source"
SENT_KEY = "bobravoz.example/sent_ms"
SAMPLE_RATE_HZ = 16_000
FRAME_MS = 20
SAMPLES_PER_FRAME = SAMPLE_RATE_HZ * FRAME_MS // 1000
BYTES_PER_FRAME = SAMPLES_PER_FRAME * 2  # PCM16, one channel


def end_marker(step: str) -> Packet:
    """The end marker a step sends after its last packet, tagged with the step as source."""
    return Packet(metadata={SOURCE_KEY: step, EOS_KEY: "true"})


@dataclass
class Ends:
    """The end markers a step waits for: one of each of ``sources`` upstream paths."""

    sources: int = 1
    seen: int = 0
    last: Packet | None = None


async def data_packets(stream: StreamContext, ends: Ends) -> AsyncIterator[Packet]:
    """The stream's packets up to the end marker of every upstream path in ``ends``; the
    markers are counted in ``ends`` (the last one kept there), never yielded."""
    async with aclosing(stream.packets()) as packets:
        async for packet in packets:
            if packet.metadata.get(EOS_KEY) == "true":
                ends.seen += 1
                ends.last = packet
                if ends.seen >= ends.sources:
                    return
                continue
            yield packet


def sine_frame(frame_number: int, frequency_hz: float, amplitude: int) -> bytes:
    """Frame ``frame_number`` of a continuous sine tone: 320 little-endian int16 samples."""
    first = frame_number * SAMPLES_PER_FRAME
    step = 2 * math.pi * frequency_hz / SAMPLE_RATE_HZ
    samples = (round(amplitude * math.sin(step * (first + i))) for i in range(SAMPLES_PER_FRAME))
    return struct.pack(f"<{SAMPLES_PER_FRAME}h", *samples)


def pcm16_frame(pcm: bytes) -> AudioFrame:
    """``pcm`` as a 16 kHz mono PCM16 audio frame stamped with the wall clock (ms)."""
    return AudioFrame(
        pcm=pcm,
        sample_rate_hz=SAMPLE_RATE_HZ,
        channels=1,
        codec="pcm16",
        timestamp_ms=time.time_ns() // 1_000_000,
    )


class Pacer:
    """Says when a progress report is due: at most once every ``seconds`` of ``clock``."""

    def __init__(self, seconds: float = 0.5, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self.clock = clock
        self.last = clock()

    def due(self) -> bool:
        """Whether ``seconds`` have passed since the last report (the clock then restarts)."""
        now = self.clock()
        if now - self.last < self.seconds:
            return False
        self.last = now
        return True


@dataclass
class Arrivals:
    """When a sink's data arrived, and each packet's end-to-end latency from its sender."""

    latencies_ms: list[float] = field(default_factory=list)
    first_at: float = 0.0
    last_at: float = 0.0

    def arrived(self, sent_ms: float | None) -> None:
        """Account for one packet the sender stamped at ``sent_ms`` (wall clock; None or 0:
        not stamped)."""
        if sent_ms:
            self.latencies_ms.append(time.time_ns() / 1e6 - sent_ms)
        self.last_at = time.monotonic()
        self.first_at = self.first_at or self.last_at

    @property
    def seconds(self) -> float:
        """From the first arrival to the last, rounded to the millisecond."""
        return round(self.last_at - self.first_at, 3)

    @property
    def rounded_latencies_ms(self) -> list[float]:
        """The latencies, rounded to the microsecond."""
        return [round(value, 3) for value in self.latencies_ms]
