"""Toy voice ingress: participants take turns speaking PCM16 audio into the Story.

Audio is 16 kHz mono PCM16 in 20 ms frames (320 samples, 640 bytes): 50 frames per second,
paced in real time. Each participant speaks a tone of their own (a toy voice). Every packet
carries metadata ``participant``; after each utterance a metadata-only packet of type
``speech.vad.inactive`` (what a voice-activity detector says when someone stops talking)
tells the transcriber the utterance is over. A final ``bobravoz.example/eos`` marker ends
the stream.

Config (the step's ``with``): ``participants`` (names, default ``[alice, bob]``),
``utterances`` (turns per participant, default 2), ``framesPerUtterance`` (default 25: half a
second), ``pauseMs`` (silence after a turn, default 700: longer than a 300 ms debounce),
``bargeIns`` (default 1: in each participant's first N turns they add a short follow-up right
away, which lands inside the debounce of the turn before it) and ``bargeInFrames`` (default 5,
100 ms), ``seconds`` (optional: stop speaking after this much audio). Asked to stop
(SIGTERM), it stops before its next utterance and ends the stream as usual.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import trio
from toy import FRAME_MS, SOURCE_KEY, Pacer, end_marker, pcm16_frame, sine_frame

from bobravoz.sdk import Packet, StreamContext, report, run_engram

END_OF_UTTERANCE = "speech.vad.inactive"


@dataclass(frozen=True, slots=True)
class Utterance:
    """One stretch of speech: who, their n-th utterance, how many frames, the silence after."""

    participant: str
    number: int
    frames: int
    pause_ms: int
    barge_in: bool = False

    @property
    def id(self) -> str:
        """``<participant>-<number>``: what the transcript and the reply refer to."""
        return f"{self.participant}-{self.number}"


def participant_names(value: Any) -> list[str]:
    """The ``participants`` config: a list of names, or a count (``p1``, ``p2``, ...)."""
    if isinstance(value, int):
        return [f"p{index}" for index in range(1, value + 1)]
    return [str(name) for name in value]


def script(
    participants: Sequence[str],
    utterances: int,
    frames_per_utterance: int,
    pause_ms: int,
    barge_ins: int = 0,
    barge_in_frames: int = 5,
) -> list[Utterance]:
    """Who speaks when: turns in rounds; in a participant's first ``barge_ins`` turns a short
    follow-up of ``barge_in_frames`` comes right after the turn (no pause between them)."""
    spoken: dict[str, int] = dict.fromkeys(participants, 0)
    plan: list[Utterance] = []
    for turn in range(1, utterances + 1):
        for name in participants:
            spoken[name] += 1
            follow_up = turn <= barge_ins
            plan.append(
                Utterance(name, spoken[name], frames_per_utterance, 0 if follow_up else pause_ms)
            )
            if follow_up:
                spoken[name] += 1
                plan.append(Utterance(name, spoken[name], barge_in_frames, pause_ms, barge_in=True))
    return plan


def timeline_ms(plan: Sequence[Utterance]) -> Iterator[tuple[int, Utterance, int | None]]:
    """``(due, utterance, frame index)`` for every frame in order, ``frame index`` None for the
    end-of-utterance marker; ``due`` is milliseconds after the start (20 ms per frame; the
    marker goes with the utterance's last frame, the pause follows it)."""
    clock = 0
    for utterance in plan:
        for index in range(utterance.frames):
            yield clock, utterance, index
            clock += FRAME_MS
        yield clock, utterance, None
        clock += utterance.pause_ms


def tone_frequency(participant_index: int) -> float:
    """Each participant's toy voice: 220 Hz, 330 Hz, 440 Hz, ..."""
    return 220.0 * (1 + participant_index / 2)


def pcm_frame(frame_number: int, frequency_hz: float, amplitude: int = 8_000) -> bytes:
    """Frame ``frame_number`` of a continuous sine tone: 320 little-endian int16 samples."""
    return sine_frame(frame_number, frequency_hz, amplitude)


async def handle(stream: StreamContext) -> None:
    """Speak the script in real time (50 frames/s), then the end marker; report a summary."""
    config = stream.config
    names = participant_names(config.get("participants", ["alice", "bob"]))
    plan = script(
        names,
        int(config.get("utterances", 2)),
        int(config.get("framesPerUtterance", 25)),
        int(config.get("pauseMs", 700)),
        int(config.get("bargeIns", 1)),
        int(config.get("bargeInFrames", 5)),
    )
    limit_ms = float(config.get("seconds", 0)) * 1000 or math.inf
    voices = {name: tone_frequency(index) for index, name in enumerate(names)}
    origin = {SOURCE_KEY: stream.step}
    start = trio.current_time()
    frames = markers = 0
    spoken: set[str] = set()
    pacer = Pacer(clock=trio.current_time)
    for due_ms, utterance, index in timeline_ms(plan):
        if due_ms >= limit_ms or (stream.stop_requested and index == 0):
            break  # asked to stop: at the next utterance, so none is cut in half
        await trio.sleep_until(start + due_ms / 1000)
        metadata = {**origin, "participant": utterance.participant, "utterance": utterance.id}
        if index is None:
            await stream.emit(Packet(metadata={**metadata, "type": END_OF_UTTERANCE}))
            markers += 1
            continue
        audio = pcm16_frame(pcm_frame(frames, voices[utterance.participant]))
        await stream.emit(Packet(audio=audio, metadata=metadata))
        frames += 1
        spoken.add(utterance.id)
        if pacer.due():
            report("progress", step=stream.step, role="source", sent=frames)
    await stream.emit(end_marker(stream.step))
    report(
        "summary",
        step=stream.step,
        role="source",
        sent=frames,
        emitted=frames + markers + 1,
        utterances=markers,
        barge_ins=sum(u.barge_in for u in plan if u.id in spoken),
        participants=len(names),
        seconds=round(trio.current_time() - start, 3),
    )


if __name__ == "__main__":
    sys.exit(run_engram(handle))
