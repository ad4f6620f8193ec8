"""Toy chat model: answers each transcript it is handed.

The hub renders the step's ``runtime`` per packet into ``packet.inputs``: ``userPrompt`` (from
``steps.transcribe.text``) and ``speaker`` (from ``packet.metadata.participant``). The reply is
``replyFormat`` (default ``"Hi {speaker}, I heard: {prompt}"``) filled from those inputs; it
goes out as payload ``{text, participant, inReplyTo}`` with metadata ``participant`` and
``type: chat.reply.v1``. Counted for the summary: ``inputs_missing`` (a packet without
rendered inputs: the payload was used instead) and ``prompt_mismatch`` (the rendered prompt is
not the packet's own transcript: ``steps.transcribe`` had moved on). It forwards the
``bobravoz.example/eos`` marker and ends.
"""

from __future__ import annotations

import sys
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

from toy import SOURCE_KEY, Ends, data_packets, end_marker

from bobravoz.sdk import Packet, StreamContext, report, run_engram

REPLY_TYPE = "chat.reply.v1"
DEFAULT_FORMAT = "Hi {speaker}, I heard: {prompt}"


@dataclass(frozen=True, slots=True)
class Prompt:
    """What to answer and to whom, and where it came from."""

    text: str
    speaker: str
    from_inputs: bool
    matches_packet: bool


def prompt_of(packet: Packet) -> Prompt:
    """The prompt in the packet's rendered ``inputs``, else (no inputs) in its payload."""
    payload: dict[str, Any] = packet.payload or {}
    own_text = str(payload.get("text", ""))
    inputs = packet.inputs
    if not inputs:
        speaker = packet.metadata.get("participant", str(payload.get("participant", "")))
        return Prompt(own_text, speaker, from_inputs=False, matches_packet=True)
    text = str(inputs.get("userPrompt", ""))
    speaker = str(inputs.get("speaker", ""))
    return Prompt(text, speaker, from_inputs=True, matches_packet=text == own_text)


def reply_text(prompt: Prompt, reply_format: str = DEFAULT_FORMAT) -> str:
    """The toy model's answer."""
    return reply_format.format(speaker=prompt.speaker, prompt=prompt.text)


async def handle(stream: StreamContext) -> None:
    """Reply to every transcript; forward the end marker and report."""
    reply_format = str(stream.config.get("replyFormat", DEFAULT_FORMAT))
    origin = {SOURCE_KEY: stream.step}
    replies = inputs_missing = mismatched = 0
    async with aclosing(data_packets(stream, Ends())) as packets:
        async for packet in packets:
            if packet.payload is None:
                continue
            prompt = prompt_of(packet)
            inputs_missing += not prompt.from_inputs
            mismatched += not prompt.matches_packet
            utterance = packet.metadata.get("utterance", "")
            await stream.emit(
                Packet(
                    payload={
                        "text": reply_text(prompt, reply_format),
                        "participant": prompt.speaker,
                        "inReplyTo": utterance,
                    },
                    metadata={
                        **origin,
                        "participant": prompt.speaker,
                        "type": REPLY_TYPE,
                        "utterance": utterance,
                    },
                )
            )
            replies += 1
            report("progress", step=stream.step, role="transform", forwarded=replies)
    await stream.emit(end_marker(stream.step))
    report(
        "summary",
        step=stream.step,
        role="transform",
        forwarded=replies,
        replies=replies,
        inputs_missing=inputs_missing,
        prompt_mismatch=mismatched,
    )


if __name__ == "__main__":
    sys.exit(run_engram(handle))
