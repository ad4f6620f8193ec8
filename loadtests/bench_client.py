"""Benchmark clients: a producer and a consumer of ``HubService.Process`` on plain grpclib.

The same client code drives the hub and the baseline relay, so only the server differs. Each
packet is a ``ProcessRequest`` with a binary frame whose payload starts with the sequence
number and the send time (``>QQ``); the consumer reports throughput and end-to-end latency.
(grpcio clients were tried first: their Python-level streaming iterators cost more CPU per
message than the servers being measured.)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import struct
import time
from typing import Any

import grpclib.const
from grpclib.client import Channel

from bobravoz.protocol.gen.transport.v1 import BinaryFrame, DataPacket, ProcessRequest
from bobravoz.protocol.packets import split_process_message
from bobravoz.protocol.wire import iter_fields
from bobravoz.runtime.grpc_bridge import ForwardingCodec, RawMessage

METHOD = "/transport.v1.HubService/Process"
HEADER = struct.Struct(">QQ")


def headers(step: str) -> dict[str, str]:
    """The binding headers a hub expects."""
    return {
        "bubu-transport-protocol": "1.0.0",
        "storyrun-name": "bench",
        "storyrun-namespace": "default",
        "current-step-id": step,
        "connector-generation": "1",
    }


def frame_payload(packet: bytes) -> bytes:
    """The binary frame payload of a DataPacket (field 7, then field 1 inside)."""
    for field in iter_fields(packet):
        if field.number == 7:
            frame = packet[field.value_start : field.end]
            for inner in iter_fields(frame):
                if inner.number == 1:
                    return frame[inner.value_start : inner.end]
    return b""


def _open(channel: Channel, step: str) -> Any:
    return channel.request(
        METHOD,
        grpclib.const.Cardinality.STREAM_STREAM,
        RawMessage,
        RawMessage,
        metadata=headers(step),
    )


async def produce(host: str, port: int, count: int, rate: float, size: int) -> dict[str, Any]:
    """Send ``count`` packets (``rate`` per second, 0 = as fast as possible), half-close, and
    wait for the server to end the call, so nothing in flight is cut off."""
    template = bytes(ProcessRequest(packet=DataPacket(binary=BinaryFrame(payload=b"\x00" * size))))
    prefix = template[: len(template) - size]
    padding = b"\x00" * (size - HEADER.size)
    channel = Channel(host, port, codec=ForwardingCodec())
    started = time.perf_counter()
    try:
        async with _open(channel, "producer") as stream:
            await stream.send_request()
            for sequence in range(count):
                if rate > 0:
                    delay = started + sequence / rate - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                await stream.send_message(prefix + HEADER.pack(sequence, time.time_ns()) + padding)
            await stream.end()
            async for _ in stream:
                pass
    finally:
        channel.close()
    return {"sent": count, "seconds": time.perf_counter() - started}


async def consume(host: str, port: int, count: int, idle: float) -> dict[str, Any]:
    """Receive until ``count`` packets or ``idle`` seconds of silence; report rate, latency."""
    channel = Channel(host, port, codec=ForwardingCodec())
    latencies: list[int] = []
    first = last = 0.0
    try:
        async with _open(channel, "consumer") as stream:
            await stream.send_request()
            await stream.recv_initial_metadata()
            print(json.dumps({"event": "ready"}), flush=True)
            loop = asyncio.get_running_loop()
            try:
                async with asyncio.timeout(idle) as deadline:
                    while len(latencies) < count:
                        message = await stream.recv_message()
                        if message is None:
                            break
                        deadline.reschedule(loop.time() + idle)
                        now = time.time_ns()
                        packet, _ = split_process_message(message)
                        payload = frame_payload(packet or b"")
                        if len(payload) < HEADER.size:
                            continue  # a heartbeat
                        _, sent_ns = HEADER.unpack_from(payload)
                        latencies.append(now - sent_ns)
                        last = time.perf_counter()
                        if len(latencies) == 1:
                            first = last
            except TimeoutError:
                pass
            await stream.cancel()
    finally:
        channel.close()
    latencies.sort()

    def pct(q: float) -> float:
        if not latencies:
            return 0.0
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] / 1e6

    span = last - first
    return {
        "received": len(latencies),
        "rate": (len(latencies) - 1) / span if span > 0 else 0.0,
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
    }


def main() -> None:
    """``python -m loadtests.bench_client produce|consume --target HOST:PORT ...``."""
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["produce", "consume"])
    parser.add_argument("--target", required=True)
    parser.add_argument("--count", type=int, default=20000)
    parser.add_argument("--rate", type=float, default=0.0)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--idle", type=float, default=5.0)
    args = parser.parse_args()
    host, _, port = args.target.rpartition(":")
    if args.role == "produce":
        result = asyncio.run(produce(host, int(port), args.count, args.rate, args.size))
    else:
        result = asyncio.run(consume(host, int(port), args.count, args.idle))
    print(json.dumps({"event": "result", **result}), flush=True)


if __name__ == "__main__":
    main()
