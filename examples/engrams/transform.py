"""Example transform engram: forwards every packet, tagging it with the step that touched it."""

from __future__ import annotations

import sys
import time

from bobravoz.sdk import Packet, StreamContext, report, run_engram

EOS_KEY = "bobravoz.example/eos"


async def handle(stream: StreamContext) -> None:
    """Forward each data packet unchanged but for a ``bobravoz.example/via`` tag; stop at EOS."""
    forwarded = 0
    last_report = time.monotonic()
    async for packet in stream.packets():
        metadata = {**packet.metadata, "bobravoz.example/via": stream.step}
        await stream.emit(
            Packet(binary=packet.binary, mime_type=packet.mime_type, metadata=metadata)
        )
        if packet.metadata.get(EOS_KEY) == "true":
            break
        forwarded += 1
        if time.monotonic() - last_report >= 0.5:
            report("progress", step=stream.step, role="transform", forwarded=forwarded)
            last_report = time.monotonic()
    report("summary", step=stream.step, role="transform", forwarded=forwarded)


if __name__ == "__main__":
    sys.exit(run_engram(handle))
