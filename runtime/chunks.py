"""Reassemble chunked binary packets (``StreamEnvelope`` chunk fields) into whole ones.

A sender splits a large binary payload into up to 256 chunks sharing a ``chunk_id``; each
chunk is a packet whose envelope carries ``chunk_index``/``chunk_count`` (and optionally
``chunk_bytes``, its payload length, and ``total_bytes``, the whole length). The
:class:`Reassembler` collects them, in any order, per ``stream_id`` / ``partition`` /
``chunk_id``, and returns the joined payload with the opaque object of the first chunk that
arrived (the hub passes that chunk's packet, to rebuild the whole packet from it).

It is pure Python over decoded fields: no I/O, time from the ``clock`` it is given. Memory is
bounded: assemblies per stream and overall, bytes held overall (checked before a chunk is
stored) and per chunk. A broken chunk raises :class:`ChunkError`, whose ``reason`` is a
stable metric label; an error about an assembly also discards that assembly.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, Generic, TypeVar, final

from bobravoz.protocol.packets import EnvelopeFields

__all__ = [
    "CHUNK_ERROR_REASONS",
    "MAX_CHUNK_BYTES",
    "MAX_CHUNK_COUNT",
    "MAX_TOTAL_BYTES",
    "Assembled",
    "ChunkError",
    "Reassembler",
    "is_chunked",
]

F = TypeVar("F")

_MIB: Final = 1024 * 1024
#: Wire limits (``StreamEnvelope``): chunks per payload, bytes per chunk, bytes per payload.
MAX_CHUNK_COUNT: Final = 256
MAX_CHUNK_BYTES: Final = 10 * _MIB
MAX_TOTAL_BYTES: Final = 64 * _MIB

#: Every :attr:`ChunkError.reason`.
CHUNK_ERROR_REASONS: Final = (
    "missing_chunk_id",
    "missing_stream_id",
    "missing_chunk_count",
    "missing_binary",
    "index_out_of_range",
    "too_many_chunks",
    "chunk_too_large",
    "chunk_bytes_mismatch",
    "count_mismatch",
    "total_bytes_mismatch",
    "too_many_assemblies",
    "too_many_per_stream",
    "too_many_bytes",
)


def is_chunked(envelope: EnvelopeFields | None) -> bool:
    """True when ``envelope`` has any chunk field set (the packet must be reassembled)."""
    return envelope is not None and bool(
        envelope.chunk_id
        or envelope.chunk_count
        or envelope.chunk_index
        or envelope.chunk_bytes
        or envelope.total_bytes
    )


class ChunkError(ValueError):
    """A chunk that cannot be reassembled; ``reason`` is one of :data:`CHUNK_ERROR_REASONS`."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason: Final = reason
        self.message: Final = message


@final
@dataclass(frozen=True, slots=True)
class Assembled(Generic[F]):
    """A completed payload: the chunks' bytes in index order and the first-arrived chunk's
    opaque object."""

    stream_id: str
    partition: str
    chunk_id: str
    payload: bytes
    first: F


@dataclass(eq=False, slots=True)
class _Assembly(Generic[F]):
    stream_id: str
    count: int
    total_bytes: int
    first: F
    last_seen: float
    parts: dict[int, bytes] = field(default_factory=dict)
    size: int = 0


@final
class Reassembler(Generic[F]):
    """Chunk assemblies in progress.

    Limits: ``max_per_stream`` assemblies per ``stream_id``, ``max_total`` overall,
    ``max_bytes`` held overall, ``max_chunk`` bytes per chunk; an assembly not added to for
    ``ttl`` seconds expires. ``counts`` (for metrics): ``assembled``, ``duplicate``,
    ``expired``, ``dropped`` and every error reason.
    """

    def __init__(
        self,
        *,
        max_per_stream: int = 64,
        max_total: int = 1024,
        max_bytes: int = 64 * _MIB,
        ttl: float = 120.0,
        max_chunk: int = MAX_CHUNK_BYTES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_per_stream: Final = max_per_stream
        self.max_total: Final = max_total
        self.max_bytes: Final = max_bytes
        self.ttl: Final = ttl
        self.max_chunk: Final = max_chunk
        self.counts: Counter[str] = Counter()
        self._clock = clock
        # Ordered by last chunk (moved to the end on each), so expiry reads from the front.
        self._assemblies: dict[tuple[str, str, str], _Assembly[F]] = {}
        self._per_stream: Counter[str] = Counter()
        self._bytes = 0

    def __len__(self) -> int:
        """Assemblies in progress."""
        return len(self._assemblies)

    @property
    def in_flight_bytes(self) -> int:
        """Payload bytes held by incomplete assemblies."""
        return self._bytes

    def add(
        self,
        *,
        stream_id: str,
        partition: str,
        chunk_id: str,
        chunk_index: int,
        chunk_count: int,
        chunk_bytes: int,
        total_bytes: int,
        payload: bytes | None,
        first: F,
    ) -> Assembled[F] | None:
        """Add one chunk (``payload`` None: the packet has no binary frame); return the whole
        payload when this chunk completes it, else None.

        ``first`` is kept only from the chunk that opens an assembly. A chunk index already
        received is ignored (the first copy wins). Expired assemblies are dropped first.
        Raises :class:`ChunkError` for a malformed chunk, an inconsistent assembly (which is
        then discarded) or a limit reached (nothing is stored).
        """
        if payload is None:
            raise self._error("missing_binary", "a chunked packet needs a binary frame")
        self._check_fields(stream_id, chunk_id, chunk_index, chunk_count, chunk_bytes, payload)
        now = self._clock()
        self.expire(now)
        key = (stream_id, partition, chunk_id)
        assembly = self._assemblies.get(key)
        if assembly is None:
            self._check_room(stream_id, len(payload), total_bytes)
            assembly = _Assembly(stream_id, chunk_count, total_bytes, first, now)
            self._assemblies[key] = assembly
            self._per_stream[stream_id] += 1
        else:
            if chunk_count != assembly.count:
                self._discard(key, assembly)
                raise self._error(
                    "count_mismatch",
                    f"chunk {chunk_id!r}: chunk_count {chunk_count} after {assembly.count}",
                )
            self._assemblies[key] = self._assemblies.pop(key)  # now the most recent
            assembly.last_seen = now
            if chunk_index in assembly.parts:
                self.counts["duplicate"] += 1
                return None
            if self._bytes + len(payload) > self.max_bytes:
                raise self._error(
                    "too_many_bytes",
                    f"chunk reassembly holds {self._bytes} bytes; {len(payload)} more would "
                    f"pass the {self.max_bytes} limit",
                )
        if assembly.total_bytes and assembly.size + len(payload) > assembly.total_bytes:
            self._discard(key, assembly)
            raise self._error(
                "total_bytes_mismatch",
                f"chunk {chunk_id!r} has more than its total_bytes {assembly.total_bytes}",
            )
        assembly.parts[chunk_index] = payload
        assembly.size += len(payload)
        self._bytes += len(payload)
        if len(assembly.parts) < assembly.count:
            return None
        self._discard(key, assembly)
        if assembly.total_bytes and assembly.size != assembly.total_bytes:
            raise self._error(
                "total_bytes_mismatch",
                f"chunk {chunk_id!r}: {assembly.size} bytes, total_bytes says "
                f"{assembly.total_bytes}",
            )
        self.counts["assembled"] += 1
        whole = b"".join(assembly.parts[index] for index in range(assembly.count))
        return Assembled(stream_id, partition, chunk_id, whole, assembly.first)

    def expire(self, now: float | None = None) -> int:
        """Drop the assemblies whose last chunk is more than ``ttl`` seconds before ``now``
        (default: the clock's time); return how many."""
        now = self._clock() if now is None else now
        expired = 0
        while self._assemblies:
            key, assembly = next(iter(self._assemblies.items()))
            if now - assembly.last_seen <= self.ttl:
                break
            self._discard(key, assembly)
            expired += 1
        self.counts["expired"] += expired
        return expired

    def next_deadline(self) -> float | None:
        """The clock time after which the least recently added-to assembly expires."""
        for assembly in self._assemblies.values():
            return assembly.last_seen + self.ttl
        return None

    def drop_stream(self, stream_id: str) -> int:
        """Drop every assembly of ``stream_id`` (its stream ended); return how many."""
        if not self._per_stream.get(stream_id):
            return 0
        return self._drop(
            [
                (key, assembly)
                for key, assembly in self._assemblies.items()
                if assembly.stream_id == stream_id
            ]
        )

    def drop_all(self) -> int:
        """Drop every assembly in progress (no more chunks can come); return how many."""
        return self._drop(list(self._assemblies.items()))

    def _drop(self, doomed: list[tuple[tuple[str, str, str], _Assembly[F]]]) -> int:
        for key, assembly in doomed:
            self._discard(key, assembly)
        self.counts["dropped"] += len(doomed)
        return len(doomed)

    def _check_fields(
        self,
        stream_id: str,
        chunk_id: str,
        index: int,
        count: int,
        chunk_bytes: int,
        payload: bytes,
    ) -> None:
        if not chunk_id:
            raise self._error("missing_chunk_id", "a chunked packet needs envelope.chunk_id")
        if not stream_id:
            raise self._error("missing_stream_id", "a chunked packet needs envelope.stream_id")
        if count <= 0:
            raise self._error("missing_chunk_count", "a chunked packet needs chunk_count > 0")
        if count > MAX_CHUNK_COUNT:
            raise self._error(
                "too_many_chunks", f"chunk_count {count} is above the {MAX_CHUNK_COUNT} limit"
            )
        if not 0 <= index < count:
            raise self._error(
                "index_out_of_range", f"chunk_index {index} out of range (chunk_count {count})"
            )
        if len(payload) > self.max_chunk:
            raise self._error(
                "chunk_too_large",
                f"chunk of {len(payload)} bytes is above the {self.max_chunk} limit",
            )
        if chunk_bytes and chunk_bytes != len(payload):
            raise self._error(
                "chunk_bytes_mismatch",
                f"chunk_bytes {chunk_bytes} does not match the payload's {len(payload)} bytes",
            )

    def _check_room(self, stream_id: str, size: int, total_bytes: int) -> None:
        if len(self._assemblies) >= self.max_total:
            raise self._error(
                "too_many_assemblies",
                f"too many chunk assemblies in flight (limit {self.max_total})",
            )
        if self._per_stream[stream_id] >= self.max_per_stream:
            raise self._error(
                "too_many_per_stream",
                f"too many chunk assemblies for stream {stream_id!r} (limit {self.max_per_stream})",
            )
        if self._bytes + size > self.max_bytes:
            raise self._error(
                "too_many_bytes",
                f"chunk reassembly holds {self._bytes} bytes; {size} more would pass the "
                f"{self.max_bytes} limit",
            )
        if total_bytes > self.max_bytes:
            raise self._error(
                "too_many_bytes",
                f"total_bytes {total_bytes} is above the {self.max_bytes} reassembly limit",
            )

    def _discard(self, key: tuple[str, str, str], assembly: _Assembly[F]) -> None:
        del self._assemblies[key]
        self._bytes -= assembly.size
        self._per_stream[assembly.stream_id] -= 1
        if self._per_stream[assembly.stream_id] <= 0:
            del self._per_stream[assembly.stream_id]

    def _error(self, reason: str, message: str) -> ChunkError:
        self.counts[reason] += 1
        return ChunkError(reason, message)
