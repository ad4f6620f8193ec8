"""Send a large binary payload as chunks, and join received chunks back into one packet.

:func:`split_binary` cuts bytes into packets whose envelopes carry the chunk fields of the
wire contract (``chunk_id``, ``chunk_index``, ``chunk_count`` ≤ 256, ``chunk_bytes``,
``total_bytes``); :class:`ChunkJoiner` turns such packets, arriving in any order, back into
the whole packet.
"""

from __future__ import annotations

import dataclasses
import math
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Final, final

from bobravoz.runtime.chunks import (
    MAX_CHUNK_BYTES,
    MAX_CHUNK_COUNT,
    MAX_TOTAL_BYTES,
    ChunkError,
    Reassembler,
    is_chunked,
)
from bobravoz.sdk.packet import Envelope, Packet

__all__ = ["MAX_CHUNK_BYTES", "MAX_CHUNK_COUNT", "ChunkError", "ChunkJoiner", "split_binary"]

#: The longest ``stream_id`` / ``chunk_id`` the wire carries.
_MAX_ID: Final = 128


def split_binary(
    data: bytes,
    *,
    chunk_size: int,
    stream_id: str,
    chunk_id: str | None = None,
    mime_type: str = "",
    metadata: Mapping[str, str] | None = None,
) -> list[Packet]:
    """``data`` as binary packets of at most ``chunk_size`` bytes each, in index order.

    Every packet carries ``mime_type``, a copy of ``metadata`` and an envelope with
    ``stream_id``, ``chunk_id`` (default: a random UUID, hex), its ``chunk_index``, the
    ``chunk_count``, its ``chunk_bytes`` and the ``total_bytes`` of ``data``. Empty data is
    one empty chunk. Raises ``ValueError`` when ``chunk_size`` is not positive or above
    10 MiB, ``stream_id`` or ``chunk_id`` is empty or longer than 128 characters, ``data``
    is above 64 MiB, or it would take more than 256 chunks.
    """
    if not 0 < chunk_size <= MAX_CHUNK_BYTES:
        raise ValueError(f"chunk_size {chunk_size}: must be 1 to {MAX_CHUNK_BYTES} bytes")
    chunk_id = uuid.uuid4().hex if chunk_id is None else chunk_id
    for name, value in (("stream_id", stream_id), ("chunk_id", chunk_id)):
        if not 0 < len(value) <= _MAX_ID:
            raise ValueError(f"{name} {value!r}: must be 1 to {_MAX_ID} characters")
    if len(data) > MAX_TOTAL_BYTES:
        raise ValueError(f"{len(data)} bytes: a chunked payload is at most {MAX_TOTAL_BYTES}")
    count = max(1, math.ceil(len(data) / chunk_size))
    if count > MAX_CHUNK_COUNT:
        raise ValueError(
            f"{len(data)} bytes in chunks of {chunk_size} take {count} chunks; the limit is "
            f"{MAX_CHUNK_COUNT} (use chunks of at least {math.ceil(len(data) / MAX_CHUNK_COUNT)})"
        )
    view = memoryview(data)
    packets: list[Packet] = []
    for index in range(count):
        piece = bytes(view[index * chunk_size : (index + 1) * chunk_size])
        packets.append(
            Packet(
                binary=piece,
                mime_type=mime_type,
                metadata=dict(metadata or {}),
                envelope=Envelope(
                    stream_id=stream_id,
                    chunk_id=chunk_id,
                    chunk_index=index,
                    chunk_count=count,
                    chunk_bytes=len(piece),
                    total_bytes=len(data),
                ),
            )
        )
    return packets


@final
class ChunkJoiner:
    """Joins chunked packets back into whole ones, per ``stream_id`` / ``partition`` /
    ``chunk_id``, whatever order they arrive in.

    At most ``max_assemblies`` payloads are in progress, holding at most ``max_bytes``; one
    not added to for ``ttl`` seconds is dropped. ``counts`` tallies ``assembled``,
    ``duplicate``, ``expired`` and each error reason.
    """

    def __init__(
        self,
        *,
        max_assemblies: int = 64,
        max_bytes: int = MAX_TOTAL_BYTES,
        ttl: float = 120.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._reassembler: Reassembler[Packet] = Reassembler(
            max_per_stream=max_assemblies,
            max_total=max_assemblies,
            max_bytes=max_bytes,
            ttl=ttl,
            clock=clock,
        )

    @property
    def counts(self) -> Counter[str]:
        """Outcomes so far, by reason."""
        return self._reassembler.counts

    def __len__(self) -> int:
        """Payloads in progress."""
        return len(self._reassembler)

    def add(self, packet: Packet) -> Packet | None:
        """The whole packet once ``packet`` completes its chunks (None while some are
        missing); a packet that is not a chunk is returned as it is.

        The whole packet is the first-arrived chunk's (metadata, MIME type, envelope stream
        fields) with the joined bytes and the chunk fields cleared. A repeated chunk is
        ignored. Raises :class:`ChunkError` (a ``ValueError``) naming the problem: a missing
        field, an index out of range, sizes that disagree, or a limit reached.
        """
        envelope = packet.envelope
        if envelope is None or not is_chunked(envelope):
            return packet
        assembled = self._reassembler.add(
            stream_id=envelope.stream_id,
            partition=envelope.partition,
            chunk_id=envelope.chunk_id,
            chunk_index=envelope.chunk_index,
            chunk_count=envelope.chunk_count,
            chunk_bytes=envelope.chunk_bytes,
            total_bytes=envelope.total_bytes,
            payload=packet.binary,
            first=packet,
        )
        if assembled is None:
            return None
        first = assembled.first
        whole_envelope = dataclasses.replace(
            first.envelope or envelope,
            chunk_id="",
            chunk_index=0,
            chunk_count=0,
            chunk_bytes=0,
            total_bytes=0,
        )
        return dataclasses.replace(
            first, binary=assembled.payload, metadata=dict(first.metadata), envelope=whole_envelope
        )

    def expire(self, now: float | None = None) -> int:
        """Drop the payloads not added to for ``ttl`` seconds; return how many."""
        return self._reassembler.expire(now)

    def drop_incomplete(self) -> int:
        """Drop every payload still missing chunks (no more can come); return how many."""
        return self._reassembler.drop_all()
