"""Toy speech-to-text: one transcript per utterance, when the participant stops speaking.

It collects each participant's PCM16 frames (16 kHz mono, 20 ms = 640 bytes; frames of any
other shape are counted ``bad_frames``) and, on the ``speech.vad.inactive`` packet that ends
an utterance, emits a payload ``{text, participant, utterance, frames, durationMs}`` with
metadata ``participant`` and ``type: speech.transcript.v1``. The "transcription" describes
the audio it heard. It forwards the ``bobravoz.example/eos`` marker (no participant on it) and
ends.
"""

from __future__ import annotations

import sys
from collections import Counter
from contextlib import aclosing
from dataclasses import dataclass, field

from toy import (
    BYTES_PER_FRAME,
    FRAME_MS,
    SAMPLE_RATE_HZ,
    SOURCE_KEY,
    Ends,
    Pacer,
    data_packets,
    end_marker,
)

from bobravoz.sdk import Packet, StreamContext, report, run_engram

END_OF_UTTERANCE = "speech.vad.inactive"
TRANSCRIPT_TYPE = "speech.transcript.v1"


def is_pcm16_frame(packet: Packet) -> bool:
    """A 20 ms PCM16 frame at 16 kHz, one channel."""
    audio = packet.audio
    return (
        audio is not None
        and audio.codec == "pcm16"
        and audio.sample_rate_hz == SAMPLE_RATE_HZ
        and audio.channels == 1
        and len(audio.pcm) == BYTES_PER_FRAME
    )


def transcript_text(participant: str, utterance: str, frames: int) -> str:
    """What the toy hears: who spoke, which utterance, for how long."""
    return f"{participant} said {utterance} ({frames * FRAME_MS} ms)"


@dataclass
class Transcriber:
    """Frames heard per participant since their last end of utterance."""

    heard: Counter[str] = field(default_factory=Counter)
    bad_frames: int = 0

    def hear(self, packet: Packet) -> None:
        """Count one audio frame for its participant."""
        if is_pcm16_frame(packet):
            self.heard[packet.metadata.get("participant", "")] += 1
        else:
            self.bad_frames += 1

    def finish(self, participant: str, utterance: str) -> Packet:
        """The transcript packet of ``participant``'s utterance that just ended."""
        frames = self.heard.pop(participant, 0)
        text = transcript_text(participant, utterance, frames)
        return Packet(
            payload={
                "text": text,
                "participant": participant,
                "utterance": utterance,
                "frames": frames,
                "durationMs": frames * FRAME_MS,
            },
            metadata={
                "participant": participant,
                "type": TRANSCRIPT_TYPE,
                "utterance": utterance,
            },
        )


async def handle(stream: StreamContext) -> None:
    """Transcribe each finished utterance; forward the end marker and report."""
    transcriber = Transcriber()
    origin = {SOURCE_KEY: stream.step}
    frames = transcripts = 0
    pacer = Pacer()
    async with aclosing(data_packets(stream, Ends())) as packets:
        async for packet in packets:
            if packet.audio is not None:
                transcriber.hear(packet)
                frames += 1
            elif packet.metadata.get("type") == END_OF_UTTERANCE:
                participant = packet.metadata.get("participant", "")
                transcript = transcriber.finish(participant, packet.metadata.get("utterance", ""))
                transcript.metadata.update(origin)
                await stream.emit(transcript)
                transcripts += 1
            if pacer.due():
                report("progress", step=stream.step, role="transform", forwarded=transcripts)
    await stream.emit(end_marker(stream.step))
    report(
        "summary",
        step=stream.step,
        role="transform",
        forwarded=transcripts,
        frames=frames,
        transcripts=transcripts,
        bad_frames=transcriber.bad_frames,
        unfinished=sum(transcriber.heard.values()),
    )


if __name__ == "__main__":
    sys.exit(run_engram(handle))
