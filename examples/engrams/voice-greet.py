"""Toy greeter: says hello once, when the hub announces that the whole StoryRun is ready.

The step's ``if`` (``{{ eq (default "" packet.type) "storyrun.ready" }}``) lets only the hub's
``storyrun.ready`` hook through, so the first packet this engram sees is that hook. It answers
with one payload ``{text, kind: greeting}`` (metadata ``type: chat.greeting.v1``; ``text`` from
config, default ``"Hello! How can I help you today?"``), then sends the
``bobravoz.example/eos`` marker and ends: nothing else is meant for it. It never hangs: it
also ends on an end marker (a hub that does not evaluate ``if`` forwards everything; those
packets are counted ``ungated``) or after ``hookTimeoutSeconds`` (default 20) without the hook.
"""

from __future__ import annotations

import sys
import time
from contextlib import aclosing

import trio
from toy import EOS_KEY, SOURCE_KEY, end_marker

from bobravoz.sdk import Packet, StreamContext, report, run_engram

READY_EVENT = "storyrun.ready"
GREETING_TYPE = "chat.greeting.v1"
DEFAULT_GREETING = "Hello! How can I help you today?"


def is_ready_hook(packet: Packet) -> bool:
    """The hub's ``storyrun.ready`` lifecycle hook (metadata ``type``, or the payload's)."""
    payload = packet.payload or {}
    return READY_EVENT in (packet.metadata.get("type"), payload.get("type"))


async def handle(stream: StreamContext) -> None:
    """Wait for the ready hook, greet once, send the end marker and report."""
    greeting = str(stream.config.get("text", DEFAULT_GREETING))
    timeout = float(stream.config.get("hookTimeoutSeconds", 20))
    origin = {SOURCE_KEY: stream.step}
    started = time.monotonic()
    greeted = ungated = 0
    waited_ms = -1.0
    with trio.move_on_after(timeout):
        async with aclosing(stream.packets()) as packets:
            async for packet in packets:
                if is_ready_hook(packet):
                    waited_ms = (time.monotonic() - started) * 1000
                    await stream.emit(
                        Packet(
                            payload={"text": greeting, "kind": "greeting"},
                            metadata={**origin, "type": GREETING_TYPE},
                        )
                    )
                    greeted = 1
                    break
                if packet.metadata.get(EOS_KEY) == "true":
                    break
                ungated += 1
    await stream.emit(end_marker(stream.step))
    report(
        "summary",
        step=stream.step,
        role="transform",
        forwarded=greeted,
        greeted=greeted,
        ungated=ungated,
        hook_after_ms=round(waited_ms, 1),
    )


if __name__ == "__main__":
    sys.exit(run_engram(handle))
