"""Bytes of the benchmark's packets, gRPC message framing and latency statistics.

Pure code (no I/O, nothing that touches an event loop): the clients, the baseline relay and
the orchestrator all use it. A benchmark payload is ``MAGIC`` + ``>QQ`` (sequence, send time
in ``time.time_ns()``) + zero padding. Readers find it with ``bytes.find(MAGIC)`` inside each
message instead of parsing the protobuf around it: the hub rewrites a packet's identity and
sequence fields, so the payload's offset differs between what a producer sends and what a
consumer gets, but the payload bytes are forwarded unchanged (:class:`StampReader`).
"""

from __future__ import annotations

import asyncio
import math
import os
import re
import ssl
import struct
import sys
import time
from collections.abc import AsyncIterator, Sequence
from typing import Final

#: Eight bytes that start every benchmark payload (and occur nowhere else in a message).
MAGIC: Final = b"\xb0\xb5BVZ\x7f\xe1\x5a"
STAMP: Final = struct.Struct(">QQ")
#: The 5-byte prefix of a gRPC message on the wire: compressed flag, big-endian length.
GRPC_PREFIX: Final = struct.Struct(">?I")
_LENGTH: Final = struct.Struct(">I")
#: Bytes of a payload before its padding.
PAYLOAD_HEAD: Final = len(MAGIC) + STAMP.size


def tls_context(side: str) -> ssl.SSLContext | None:
    """With ``BENCH_TLS_CERT``/``_KEY``/``_CA`` set (``make bench BENCH_ARGS=--tls``), a TLS 1.3
    mTLS context for ``side`` (``server`` requires client certificates; ``client`` presents
    one), as the hub's own; None otherwise (plaintext)."""
    cert, key, ca = (os.environ.get(f"BENCH_TLS_{part}") for part in ("CERT", "KEY", "CA"))
    if not (cert and key and ca):
        return None
    server = side == "server"
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.set_alpn_protocols(["h2"])
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_cert_chain(cert, key)
    context.load_verify_locations(cafile=ca)
    return context


def payload_padding(size: int) -> bytes:
    """The zero bytes that bring a payload to ``size`` bytes (at least its head)."""
    return b"\x00" * max(0, size - PAYLOAD_HEAD)


def process_request_template(size: int) -> tuple[bytes, bytes]:
    """(bytes before the payload's stamp, bytes after it) of one gRPC-framed ProcessRequest
    holding a binary frame of ``size`` payload bytes; the stamp (``STAMP``) goes between."""
    from bobravoz.protocol.gen.transport.v1 import BinaryFrame, DataPacket, ProcessRequest

    size = max(size, PAYLOAD_HEAD)
    marker = MAGIC + b"\xff" * STAMP.size
    payload = marker + payload_padding(size)
    message = bytes(ProcessRequest(packet=DataPacket(binary=BinaryFrame(payload=payload))))
    at = message.index(marker) + len(MAGIC)
    framed = GRPC_PREFIX.pack(False, len(message)) + message
    at += GRPC_PREFIX.size
    return framed[:at], framed[at + STAMP.size :]


class Framer:
    """Writes ``count`` framed messages into one reusable buffer, stamping each in place.

    ``head + stamp + tail`` is one framed message (see :func:`process_request_template`); a
    batch is built with one ``struct.pack_into`` per message and sent with one write.
    """

    def __init__(self, head: bytes, tail: bytes, batch: int) -> None:
        self.size = len(head) + STAMP.size + len(tail)
        self.offset = len(head)
        self.batch = batch
        self.buffer = bytearray((head + b"\x00" * STAMP.size + tail) * batch)
        self._view = memoryview(self.buffer)

    def build(self, first_sequence: int, count: int, stamp_ns: int) -> bytes:
        """``count`` (at most ``batch``) messages numbered from ``first_sequence``."""
        pack = STAMP.pack_into
        buffer = self.buffer
        offset = self.offset
        size = self.size
        for index in range(count):
            pack(buffer, offset + index * size, first_sequence + index, stamp_ns)
        return bytes(self._view[: count * size])


def complete_frames(data: bytes | bytearray) -> tuple[int, int]:
    """(end of the last complete gRPC message in ``data``, how many complete messages)."""
    unpack = _LENGTH.unpack_from
    size = len(data)
    position = count = 0
    while position + 5 <= size:
        end = position + 5 + unpack(data, position + 1)[0]
        if end > size:
            break
        position = end
        count += 1
    return position, count


_STAMPS: Final = re.compile(re.escape(MAGIC) + b"(.{%d})" % STAMP.size, re.DOTALL)
#: Bytes at the end of a read that may hold the start of a marker cut by the read's end.
_MARKER_TAIL: Final = len(MAGIC) - 1


class StampReader:
    """Finds the stamp of every benchmark packet in a stream of reads, however the reads cut
    the messages.

    A consumer does not need the gRPC framing to count and time packets: each one carries
    one ``MAGIC`` marker, so one regular-expression pass over everything read (a loop in C)
    finds them all; heartbeats and other messages carry none. Latencies are worked out from
    the kept stamps by :meth:`latencies_ns`.
    """

    def __init__(self) -> None:
        self.packets = 0
        self._tail = b""
        self._reads: list[tuple[int, bytes]] = []

    def feed(self, chunk: bytes, received_ns: int) -> int:
        """Take one read received at ``received_ns``; returns the packets completed in it."""
        data = self._tail + chunk if self._tail else chunk
        last = data.rfind(MAGIC)
        if last >= 0 and last + PAYLOAD_HEAD > len(data):
            self._tail = data[last:]  # that marker's stamp is still on its way
            data = data[:last]
        elif last >= 0:
            self._tail = data[max(last + PAYLOAD_HEAD, len(data) - _MARKER_TAIL) :]
        else:
            self._tail = data[-_MARKER_TAIL:]
        stamps = _STAMPS.findall(data)
        if stamps:
            self._reads.append((received_ns, b"".join(stamps)))
            self.packets += len(stamps)
        return len(stamps)

    def latencies_ns(self) -> list[int]:
        """Receive time - send time of every packet found, in arrival order."""
        latencies: list[int] = []
        for received_ns, stamps in self._reads:
            latencies.extend([received_ns - sent_ns for _, sent_ns in STAMP.iter_unpack(stamps)])
        return latencies


def stamp_of(payload: bytes) -> tuple[int, int] | None:
    """(sequence, send time ns) of a benchmark payload anywhere in ``payload``, or None."""
    at = payload.find(MAGIC)
    if at < 0 or at + PAYLOAD_HEAD > len(payload):
        return None
    sequence, sent_ns = STAMP.unpack_from(payload, at + len(MAGIC))
    return sequence, sent_ns


def percentile_ms(ordered_ns: Sequence[int], fraction: float) -> float:
    """The ``fraction`` quantile (nearest rank) of sorted nanosecond values, in ms."""
    if not ordered_ns:
        return math.nan
    index = min(len(ordered_ns) - 1, max(0, math.ceil(fraction * len(ordered_ns)) - 1))
    return ordered_ns[index] / 1e6


def latency_summary(latencies_ns: list[int]) -> dict[str, float]:
    """p50, p99 and p99.9 in ms (``latencies_ns`` keeps its order: arrival order tells a
    stall from a steady tail)."""
    ordered = sorted(latencies_ns)
    return {
        "p50_ms": percentile_ms(ordered, 0.50),
        "p99_ms": percentile_ms(ordered, 0.99),
        "p999_ms": percentile_ms(ordered, 0.999),
    }


#: Modules a client or the baseline must never load: each hosts asyncio on trio.
FOREIGN_LOOP_MODULES: Final = ("trio_asyncio", "bobravoz.runtime.grpc_bridge")


def require_default_loop() -> None:
    """Fail unless asyncio runs on its own default event loop: the default policy, no
    trio-asyncio loaded, and (when called inside a loop) a plain selector loop. The clients and
    the baseline call it at start-up so they never measure another loop than asyncio's."""
    policy = asyncio.get_event_loop_policy()
    if type(policy) is not asyncio.DefaultEventLoopPolicy:
        raise RuntimeError(f"asyncio policy is {type(policy).__module__}.{type(policy).__name__}")
    loaded = [name for name in FOREIGN_LOOP_MODULES if name in sys.modules]
    if loaded:
        raise RuntimeError(f"modules that replace asyncio's loop are loaded: {loaded}")
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return
    if type(loop) is not asyncio.SelectorEventLoop:
        raise RuntimeError(f"running loop is {type(loop).__module__}.{type(loop).__name__}")


class Pacer:
    """Paces ``count`` packets at ``rate`` per second (unthrottled when ``rate`` <= 0) in
    batches of at most ``batch``: each wake-up yields (first sequence, how many) for every
    packet then due; ``lag`` is the worst delay behind schedule seen."""

    def __init__(self, count: int, rate: float, batch: int) -> None:
        self.count = count
        self.rate = rate
        self.batch = batch
        self.lag = 0.0
        self.sent = 0

    async def batches(self) -> AsyncIterator[tuple[int, int]]:
        """Yield (first sequence, number) until ``count`` packets were handed out."""
        count, rate, batch = self.count, self.rate, self.batch
        started = time.perf_counter()
        while self.sent < count:
            if rate > 0:
                due = min(count, int((time.perf_counter() - started) * rate) + 1)
                if due <= self.sent:
                    await asyncio.sleep(started + self.sent / rate - time.perf_counter())
                    continue
                self.lag = max(self.lag, time.perf_counter() - (started + (due - 1) / rate))
                number = min(batch, due - self.sent)
            else:
                number = min(batch, count - self.sent)
            yield self.sent, number
            self.sent += number
