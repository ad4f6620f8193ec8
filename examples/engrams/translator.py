"""Toy translator: English text to French, word by word from a small dictionary.

Payload ``{id, text, lang, ...}`` in, ``{id, text, lang: <to>, original}`` out (config ``to``,
default ``fr``); metadata is kept (``lang``, ``noisy``, ``bubu.join.key``, ...) so the hub can
apply the Story's rules and join this half with the other branch's. Items not in English are
passed on untranslated and counted ``not_english`` (the Story's ``english-only`` rule should
keep them away). Forwards the ``bobravoz.example/eos`` marker and ends.
"""

from __future__ import annotations

import sys
from contextlib import aclosing
from typing import Any

from toy import Ends, data_packets

from bobravoz.sdk import Packet, StreamContext, report, run_engram

WORDS = {
    "good": "bon",
    "morning": "matin",
    "the": "la",
    "meeting": "réunion",
    "starts": "commence",
    "now": "maintenant",
    "thank": "merci",
    "you": "vous",
    "all": "tous",
    "see": "à",
    "tomorrow": "demain",
}


def translate(text: str) -> str:
    """Each known English word replaced by its French one; unknown words kept."""
    return " ".join(WORDS.get(word, word) for word in text.split())


def translated(payload: dict[str, Any], to: str) -> dict[str, Any]:
    """The translated payload of an English item."""
    return {
        "id": payload.get("id"),
        "text": translate(str(payload.get("text", ""))),
        "lang": to,
        "original": payload.get("text", ""),
    }


async def handle(stream: StreamContext) -> None:
    """Translate each English item; forward the end marker and report."""
    to = str(stream.config.get("to", "fr"))
    done = not_english = 0
    ends = Ends()
    async with aclosing(data_packets(stream, ends)) as packets:
        async for packet in packets:
            payload = packet.payload or {}
            if payload.get("lang") != "en":
                not_english += 1
                await stream.emit(Packet(payload=payload, metadata=dict(packet.metadata)))
                continue
            await stream.emit(
                Packet(payload=translated(payload, to), metadata=dict(packet.metadata))
            )
            done += 1
            report("progress", step=stream.step, role="transform", forwarded=done)
    if ends.last is not None:
        await stream.emit(Packet(metadata=dict(ends.last.metadata)))
    report(
        "summary",
        step=stream.step,
        role="transform",
        forwarded=done + not_english,
        translated=done,
        not_english=not_english,
    )


if __name__ == "__main__":
    sys.exit(run_engram(handle))
