"""Benchmark clients of ``HubService.Process``: producers and consumers on asyncio's own loop.

The same code drives the hub and the baseline relay, so only the server differs, and it is
built to cost less per packet than either server:

- it runs on asyncio's default loop and imports nothing that changes it (no trio-asyncio, no
  ``bobravoz.runtime``); :func:`~loadtests.benchwire.require_default_loop` checks that at
  start-up;
- a producer writes a batch of length-prefixed messages with one HTTP/2 send (one
  ``struct.pack_into`` per message into a reused buffer, one clock read per batch);
- a consumer takes everything grpclib has buffered at once and finds every payload's stamp
  in it with one regular-expression pass (one clock read per read; see
  :class:`~loadtests.benchwire.StampReader`).

Each reports the CPU it spent (``time.process_time``) while moving packets, so a reader can
check it against the servers'. Roles: ``produce`` and ``consume`` (one stream each, as fast as
possible or paced) and ``many`` (many streams of one side in one process, each on its own
HTTP/2 connection and its own StoryRun; traffic starts on a ``go`` line on stdin).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sys
import time
from typing import Any

import grpclib.const
from grpclib.client import Channel

from loadtests.benchwire import (
    Framer,
    Pacer,
    StampReader,
    latency_summary,
    process_request_template,
    require_default_loop,
    tls_context,
)
from loadtests.grpc_raw import METHOD, RawCodec, binding_headers, read_chunk, write_client

#: Messages a producer hands to one write at most.
BATCH = 64


def _emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


def _open(channel: Channel, storyrun: str, step: str) -> Any:
    return channel.request(
        METHOD,
        grpclib.const.Cardinality.STREAM_STREAM,
        bytes,
        bytes,
        metadata=binding_headers(storyrun, step),
    )


async def _finish_producing(stream: Any) -> None:
    """Half-close and wait until the server ends the call, so nothing in flight is cut."""
    await stream.end()
    while await read_chunk(stream):
        pass
    await stream.recv_trailing_metadata()


async def produce(
    host: str, port: int, storyrun: str, count: int, rate: float, size: int, batch: int
) -> dict[str, Any]:
    """Send ``count`` packets: unpaced (``rate`` 0) in batches of ``batch``, or paced at
    ``rate`` per second, each wake-up sending every packet then due (a batch of one when the
    producer keeps up). Stamps carry the write's wall-clock time."""
    require_default_loop()
    head, tail = process_request_template(size)
    framer = Framer(head, tail, batch)
    channel = Channel(host, port, codec=RawCodec(), ssl=tls_context("client"))
    pacer = Pacer(count, rate, batch)
    try:
        async with _open(channel, storyrun, "producer") as stream:
            await stream.send_request()
            await stream.recv_initial_metadata()
            cpu = time.process_time()
            started = time.perf_counter()
            writes = 0
            async for first, number in pacer.batches():
                data = framer.build(first, number, time.time_ns())
                await write_client(stream, data, number)
                writes += 1
            sent = pacer.sent
            seconds = time.perf_counter() - started
            cpu = time.process_time() - cpu
            await _finish_producing(stream)
    finally:
        channel.close()
    return {
        "sent": sent,
        "writes": writes,
        "seconds": seconds,
        "cpu_s": cpu,
        "cpu_us_per_packet": cpu / max(1, sent) * 1e6,
        "max_lag_s": pacer.lag,
    }


async def consume(
    host: str, port: int, storyrun: str, count: int, idle: float, deadline: float, raw: bool
) -> dict[str, Any]:
    """Receive until ``count`` packets, ``idle`` seconds of silence or ``deadline`` seconds in
    all; report rate, latency (from the stamps; every sample with ``raw``) and CPU per
    packet."""
    require_default_loop()
    channel = Channel(host, port, codec=RawCodec(), ssl=tls_context("client"))
    stamps = StampReader()
    received = reads = 0
    first = last = 0.0
    cpu = 0.0
    try:
        async with _open(channel, storyrun, "consumer") as stream:
            await stream.send_request()
            await stream.recv_initial_metadata()
            _emit("ready")
            cpu = time.process_time()
            loop = asyncio.get_running_loop()
            give_up = loop.time() + deadline
            extended = 0.0
            try:
                async with asyncio.timeout(min(idle, deadline)) as timer:
                    while received < count:
                        chunk = await read_chunk(stream)
                        if not chunk:
                            break
                        reads += 1
                        if stamps.feed(chunk, time.time_ns()):
                            last = time.perf_counter()
                            if not received:
                                first = last
                            received = stamps.packets
                            if last - extended > 0.25:  # move the timer now and then only
                                extended = last
                                timer.reschedule(min(loop.time() + idle, give_up))
            except TimeoutError:
                pass  # silence for ``idle`` seconds, or the deadline
            latencies = stamps.latencies_ns()
            cpu = time.process_time() - cpu
            await stream.cancel()
    finally:
        channel.close()
    span = last - first
    return {
        "received": received,
        "reads": reads,
        "rate": (received - 1) / span if span > 0 else 0.0,
        "cpu_s": cpu,
        "cpu_us_per_packet": cpu / max(1, received) * 1e6,
        **latency_summary(latencies),
        **({"latencies_ns": latencies} if raw else {}),
    }


async def _open_streams(host: str, port: int, names: list[str], step: str) -> list[Any]:
    """One connection per StoryRun of ``names``, each with one ``step`` stream admitted."""
    gate = asyncio.Semaphore(50)  # connections being set up at once

    async def one(name: str) -> Any:
        async with gate:
            channel = Channel(host, port, codec=RawCodec(), ssl=tls_context("client"))
            stream = await _open(channel, name, step).__aenter__()
            await stream.send_request()
            await stream.recv_initial_metadata()
            return channel, stream

    return list(await asyncio.gather(*(one(name) for name in names)))


async def many(
    host: str,
    port: int,
    side: str,
    names: list[str],
    rate: float,
    seconds: float,
    size: int,
    idle: float,
) -> None:
    """Many streams of one side (``producer`` or ``consumer``), one connection and one
    StoryRun each: open them all and report ``ready``; on a ``go`` line on stdin, producers
    send ``rate`` packets/s per stream (each at a random phase) for ``seconds`` and consumers
    receive what ``rate`` and ``seconds`` make; report, then keep the connections until stdin
    closes (the orchestrator reads the server's memory meanwhile)."""
    require_default_loop()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    head, tail = process_request_template(size)  # imports the generated protobuf classes
    opened = await _open_streams(host, port, names, side)
    _emit("ready", streams=len(opened))
    if (await reader.readline()).strip() != b"go":
        raise RuntimeError("expected a go line on stdin")
    count = max(1, round(rate * seconds))
    readers: list[StampReader] = []
    totals = {"sent": 0, "received": 0}
    cpu = time.process_time()
    started = time.perf_counter()

    marks = {"last_ns": 0, "lag_s": 0.0}

    async def send(stream: Any) -> None:
        framer = Framer(head, tail, 1)
        begin = started + random.random() / rate  # a phase, not a secret
        for sequence in range(count):
            delay = begin + sequence / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            elif -delay > marks["lag_s"]:
                marks["lag_s"] = -delay
            now = time.time_ns()
            await write_client(stream, framer.build(sequence, 1, now), 1)
            totals["sent"] += 1
            marks["last_ns"] = max(marks["last_ns"], now)

    async def receive(stream: Any) -> None:
        stamps = StampReader()
        readers.append(stamps)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout_at(loop.time() + seconds + idle):
                while stamps.packets < count:
                    chunk = await read_chunk(stream)
                    if not chunk:
                        return
                    now = time.time_ns()
                    if stamps.feed(chunk, now):
                        marks["last_ns"] = now

    work = send if side == "producer" else receive
    await asyncio.gather(*(work(stream) for _, stream in opened))
    latencies = [latency for stamps in readers for latency in stamps.latencies_ns()]
    totals["received"] = sum(stamps.packets for stamps in readers)
    cpu = time.process_time() - cpu
    done = totals["sent"] if side == "producer" else totals["received"]
    _emit(
        "result",
        side=side,
        streams=len(opened),
        expected=count * len(opened),
        cpu_s=cpu,
        cpu_us_per_packet=cpu / max(1, done) * 1e6,
        latencies_ns=latencies,
        **totals,
        **marks,
    )
    await reader.read()  # until the orchestrator closes stdin
    for channel, _ in opened:
        channel.close()


def main() -> None:
    """``python -m loadtests.bench_client produce|consume|many --target HOST:PORT ...``."""
    require_default_loop()
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["produce", "consume", "many"])
    parser.add_argument("--target", required=True)
    parser.add_argument("--storyrun", default="bench")
    parser.add_argument("--storyruns", default="", help="many: comma-separated StoryRun names")
    parser.add_argument("--side", choices=["producer", "consumer"], default="producer")
    parser.add_argument("--count", type=int, default=20000)
    parser.add_argument("--rate", type=float, default=0.0, help="packets/s (per pair); 0: max")
    parser.add_argument("--seconds", type=float, default=5.0, help="many: sending time")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=BATCH)
    parser.add_argument("--idle", type=float, default=5.0)
    parser.add_argument("--deadline", type=float, default=120.0)
    parser.add_argument("--raw", action="store_true", help="consume: report every latency")
    args = parser.parse_args()
    host, _, port = args.target.rpartition(":")
    if args.role == "produce":
        result = asyncio.run(
            produce(host, int(port), args.storyrun, args.count, args.rate, args.size, args.batch)
        )
    elif args.role == "consume":
        result = asyncio.run(
            consume(host, int(port), args.storyrun, args.count, args.idle, args.deadline, args.raw)
        )
    else:
        names = [name for name in args.storyruns.split(",") if name]
        asyncio.run(
            many(host, int(port), args.side, names, args.rate, args.seconds, args.size, args.idle)
        )
        return
    _emit("result", **result)


if __name__ == "__main__":
    main()
