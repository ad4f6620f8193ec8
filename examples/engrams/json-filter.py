"""Toy JSON filter: keeps only the payload fields named in config ``keep``.

Default ``keep: [id, text, lang]`` (the emitter's ``debug`` field is removed). Metadata is kept
(``lang``, ``noisy``, ``bubu.join.key``, ...) for the hub's rules and joins. Forwards the
``bobravoz.example/eos`` marker and ends; the summary counts the fields it removed.
"""

from __future__ import annotations

import sys
from collections.abc import Collection
from contextlib import aclosing
from typing import Any

from toy import Ends, data_packets

from bobravoz.sdk import Packet, StreamContext, report, run_engram


def project(payload: dict[str, Any], keep: Collection[str]) -> dict[str, Any]:
    """``payload`` with only the ``keep`` fields, in the payload's order."""
    return {key: value for key, value in payload.items() if key in keep}


async def handle(stream: StreamContext) -> None:
    """Filter each payload's fields; forward the end marker and report."""
    keep = {str(name) for name in stream.config.get("keep", ["id", "text", "lang"])}
    passed = removed = 0
    ends = Ends()
    async with aclosing(data_packets(stream, ends)) as packets:
        async for packet in packets:
            payload = packet.payload or {}
            kept = project(payload, keep)
            removed += len(payload) - len(kept)
            await stream.emit(Packet(payload=kept, metadata=dict(packet.metadata)))
            passed += 1
            report("progress", step=stream.step, role="transform", forwarded=passed)
    if ends.last is not None:
        await stream.emit(Packet(metadata=dict(ends.last.metadata)))
    report("summary", step=stream.step, role="transform", forwarded=passed, fields_removed=removed)


if __name__ == "__main__":
    sys.exit(run_engram(handle))
