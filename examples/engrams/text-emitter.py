"""Toy text source: emits ``count`` short JSON texts in a mix of languages, some noisy.

Item ``i`` (1-based) has payload ``{id, text, lang, debug}`` and metadata ``lang`` (the
``langs`` config cycled: default ``[en, fr]``) and ``noisy`` (``"true"`` every ``noisyEvery``-th
item, default 5). Items whose language is in ``joinLangs`` (default ``[en]``: what the Story's
``english-only`` rule lets through to ``translate``) go down both branches of the fan-out, so
they carry metadata ``bubu.join.key: item-<i>`` for the hub to join the two halves before
``archive``; the others reach ``archive`` by one branch only and need no join. Paced at
``rate`` items per second (default 20). The final ``bobravoz.example/eos`` marker is tagged
``lang: en, noisy: false`` so the Story's rules let it reach every step. Asked to stop
(SIGTERM), it stops emitting, ends with the marker all the same and reports what it sent.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import Any

import trio
from toy import EOS_KEY, SENT_KEY, SOURCE_KEY, Pacer

from bobravoz.sdk import Packet, StreamContext, report, run_engram

JOIN_KEY = "bubu.join.key"
PHRASES = {
    "en": ["good morning", "the meeting starts now", "thank you all", "see you tomorrow"],
    "fr": ["bonjour", "la réunion commence", "merci à tous", "à demain"],
}


def item(
    number: int,
    langs: Sequence[str] = ("en", "fr"),
    noisy_every: int = 5,
    join_langs: Sequence[str] = ("en",),
) -> tuple[dict[str, Any], dict[str, str]]:
    """Payload and metadata of item ``number`` (1-based)."""
    lang = langs[(number - 1) % len(langs)]
    phrases = PHRASES.get(lang, [f"text in {lang}"])
    noisy = noisy_every > 0 and number % noisy_every == 0
    payload = {
        "id": number,
        "text": phrases[(number - 1) // len(langs) % len(phrases)],
        "lang": lang,
        "debug": {"emitter": "text-emitter", "noisy": noisy},
    }
    metadata = {"lang": lang, "noisy": "true" if noisy else "false"}
    if lang in join_langs:
        metadata[JOIN_KEY] = f"item-{number}"
    return payload, metadata


async def handle(stream: StreamContext) -> None:
    """Emit the items at the configured rate, then the end marker; report a summary."""
    config = stream.config
    count = int(config.get("count", 40))
    rate = float(config.get("rate", 20))
    langs = [str(lang) for lang in config.get("langs", ["en", "fr"])]
    noisy_every = int(config.get("noisyEvery", 5))
    join_langs = [str(lang) for lang in config.get("joinLangs", ["en"])]
    origin = {SOURCE_KEY: stream.step}
    start = trio.current_time()
    pacer = Pacer(clock=trio.current_time)
    by_lang: dict[str, int] = {}
    noisy = sent = 0
    for number in range(1, count + 1):
        if stream.stop_requested:
            break
        if rate > 0:
            await trio.sleep_until(start + (number - 1) / rate)
        payload, metadata = item(number, langs, noisy_every, join_langs)
        metadata.update(origin)
        metadata[SENT_KEY] = f"{time.time_ns() / 1e6:.3f}"
        await stream.emit(Packet(payload=payload, metadata=metadata))
        by_lang[payload["lang"]] = by_lang.get(payload["lang"], 0) + 1
        noisy += metadata["noisy"] == "true"
        sent = number
        if pacer.due():
            report("progress", step=stream.step, role="source", sent=number)
    await stream.emit(Packet(metadata={**origin, EOS_KEY: "true", "lang": "en", "noisy": "false"}))
    report(
        "summary",
        step=stream.step,
        role="source",
        sent=sent,
        emitted=sent + 1,
        langs=by_lang,
        noisy=noisy,
        seconds=round(trio.current_time() - start, 3),
        **({"stopped": True} if sent < count else {}),
    )


if __name__ == "__main__":
    sys.exit(run_engram(handle))
