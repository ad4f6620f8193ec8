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
import sys
from contextlib import aclosing

import trio
from toy import FRAME_MS, SOURCE_KEY, Ends, data_packets, end_marker, pcm16_frame, sine_frame

from bobravoz.sdk import Packet, StreamContext, report, run_engram

VOICE_HZ = 600.0


def frames_for(text: str, ms_per_char: float) -> int:
    """How many 20 ms frames it takes to say ``text`` (at least one)."""
    return max(1, math.ceil(len(text) * ms_per_char / FRAME_MS))


def speech_frame(frame_number: int, amplitude: int = 6_000) -> bytes:
    """Frame ``frame_number`` of the toy voice: 320 int16 samples, a continuous sine."""
    return sine_frame(frame_number, VOICE_HZ, amplitude)


def text_of(packet: Packet) -> tuple[str, bool]:
    """The text to say and whether it came from the rendered ``inputs``."""
    if packet.inputs:
        return str(packet.inputs.get("text", "")), True
    return str((packet.payload or {}).get("text", "")), False


async def handle(stream: StreamContext) -> None:
    """Say every text as paced audio frames; after every upstream's end marker send one."""
    ends = Ends(sources=int(stream.config.get("sources", 2)))
    ms_per_char = float(stream.config.get("msPerChar", FRAME_MS))
    realtime = bool(stream.config.get("realtime", True))
    origin = {SOURCE_KEY: stream.step}
    texts = frames = inputs_missing = 0
    async with aclosing(data_packets(stream, ends)) as packets:
        async for packet in packets:
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
                await stream.emit(
                    Packet(
                        audio=pcm16_frame(speech_frame(frames)),
                        payload={"text": text, "frames": count} if index == 0 else None,
                        metadata={**metadata, "synthesis.frame": str(index)},
                    )
                )
                frames += 1
            report("progress", step=stream.step, role="transform", forwarded=frames)
    await stream.emit(end_marker(stream.step))
    report(
        "summary",
        step=stream.step,
        role="transform",
        forwarded=frames,
        texts=texts,
        frames=frames,
        inputs_missing=inputs_missing,
        eos=ends.seen,
    )


if __name__ == "__main__":
    sys.exit(run_engram(handle))
