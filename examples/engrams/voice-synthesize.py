"""Toy text-to-speech: turns each text it is handed into PCM16 audio, 50 frames per second.

The hub renders the step's ``runtime`` (``text: "{{ packet.text }}"``) into ``packet.inputs``;
without inputs the payload's ``text`` is used (counted ``inputs_missing``). A text becomes
``ceil(len(text) * msPerChar / 20)`` frames (config ``msPerChar``, default 20: one 20 ms frame
per character), 16 kHz mono PCM16 (640 bytes each), paced in real time unless ``realtime``
is false. Every frame carries metadata ``synthesis.id``, ``synthesis.frame`` and
``synthesis.frames`` (and ``participant`` when the text answers one); the first frame also
carries the payload ``{text, frames}`` so the player knows what it is saying. The step has
several upstreams: it ends after the ``bobravoz.example/eos`` marker of each of ``sources``
(default 2) and then sends its own.
"""

from __future__ import annotations

import math
import struct
import sys
import time
from contextlib import aclosing

import trio

from bobravoz.sdk import AudioFrame, Packet, StreamContext, report, run_engram

EOS_KEY = "bobravoz.example/eos"
SOURCE_KEY = "bobravoz.example/source"
SAMPLE_RATE_HZ = 16_000
FRAME_MS = 20
SAMPLES_PER_FRAME = SAMPLE_RATE_HZ * FRAME_MS // 1000
VOICE_HZ = 600.0


def frames_for(text: str, ms_per_char: float) -> int:
    """How many 20 ms frames it takes to say ``text`` (at least one)."""
    return max(1, math.ceil(len(text) * ms_per_char / FRAME_MS))


def speech_frame(frame_number: int, amplitude: int = 6_000) -> bytes:
    """Frame ``frame_number`` of the toy voice: 320 int16 samples, a continuous sine."""
    first = frame_number * SAMPLES_PER_FRAME
    step = 2 * math.pi * VOICE_HZ / SAMPLE_RATE_HZ
    samples = (round(amplitude * math.sin(step * (first + i))) for i in range(SAMPLES_PER_FRAME))
    return struct.pack(f"<{SAMPLES_PER_FRAME}h", *samples)


def text_of(packet: Packet) -> tuple[str, bool]:
    """The text to say and whether it came from the rendered ``inputs``."""
    if packet.inputs:
        return str(packet.inputs.get("text", "")), True
    return str((packet.payload or {}).get("text", "")), False


async def handle(stream: StreamContext) -> None:
    """Say every text as paced audio frames; after every upstream's end marker send one."""
    sources = int(stream.config.get("sources", 2))
    ms_per_char = float(stream.config.get("msPerChar", FRAME_MS))
    realtime = bool(stream.config.get("realtime", True))
    origin = {SOURCE_KEY: stream.step}
    texts = frames = inputs_missing = finished = 0
    async with aclosing(stream.packets()) as packets:
        async for packet in packets:
            if packet.metadata.get(EOS_KEY) == "true":
                finished += 1
                if finished >= sources:
                    break
                continue
            if packet.payload is None and not packet.inputs:
                continue
            text, from_inputs = text_of(packet)
            inputs_missing += not from_inputs
            texts += 1
            count = frames_for(text, ms_per_char)
            synthesis = f"{stream.step}-{texts}"
            metadata = {**origin, "synthesis.id": synthesis, "synthesis.frames": str(count)}
            participant = packet.metadata.get("participant", "")
            if participant:
                metadata["participant"] = participant
            start = trio.current_time()
            for index in range(count):
                if realtime:
                    await trio.sleep_until(start + index * FRAME_MS / 1000)
                audio = AudioFrame(
                    pcm=speech_frame(frames),
                    sample_rate_hz=SAMPLE_RATE_HZ,
                    channels=1,
                    codec="pcm16",
                    timestamp_ms=time.time_ns() // 1_000_000,
                )
                await stream.emit(
                    Packet(
                        audio=audio,
                        payload={"text": text, "frames": count} if index == 0 else None,
                        metadata={**metadata, "synthesis.frame": str(index)},
                    )
                )
                frames += 1
            report("progress", step=stream.step, role="transform", forwarded=frames)
    await stream.emit(Packet(metadata={**origin, EOS_KEY: "true"}))
    report(
        "summary",
        step=stream.step,
        role="transform",
        forwarded=frames,
        texts=texts,
        frames=frames,
        inputs_missing=inputs_missing,
        eos=finished,
    )


if __name__ == "__main__":
    sys.exit(run_engram(handle))
