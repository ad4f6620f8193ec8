"""NATS clients for the benchmark's outside anchor (nats-py, on asyncio's default loop).

The publisher sends the same 256-byte stamped payloads as the gRPC producers (``MAGIC``,
sequence, send time; see :mod:`loadtests.benchwire`) on one subject: unpaced in batches of
``--batch`` publishes followed by one ``flush`` (a PING/PONG round trip, so at most a batch is
in flight beyond the socket), or paced at ``--rate``, each wake-up's packets handed to
nats-py's flusher task, which writes them at once (no round trip per packet). The subscriber
counts and times every message. nats-py parses each message in Python, so at peak these
clients cost more per packet than nats-server does: the NATS peak says how fast Python
clients move packets through a very cheap broker, not how fast the broker is (its CPU per
packet is). Both print ``ready`` / ``result`` JSON lines like :mod:`loadtests.bench_client`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from typing import Any

import nats

from loadtests.benchwire import (
    MAGIC,
    STAMP,
    Pacer,
    latency_summary,
    payload_padding,
    require_default_loop,
)

SUBJECT = "bench.packets"


def _emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


async def publish(url: str, count: int, rate: float, size: int, batch: int) -> dict[str, Any]:
    require_default_loop()
    connection = await nats.connect(
        url, allow_reconnect=False, connect_timeout=5, pending_size=8 * 1024 * 1024
    )
    padding = payload_padding(size)
    pack = STAMP.pack
    pacer = Pacer(count, rate, batch)
    try:
        cpu = time.process_time()
        started = time.perf_counter()
        async for first, number in pacer.batches():
            now = time.time_ns()
            for sequence in range(first, first + number):
                await connection.publish(SUBJECT, MAGIC + pack(sequence, now) + padding)
            if rate <= 0:
                await connection.flush()  # a round trip per batch bounds what is in flight
        sent = pacer.sent
        await connection.flush()
        seconds = time.perf_counter() - started
        cpu = time.process_time() - cpu
    finally:
        await connection.close()
    return {
        "sent": sent,
        "seconds": seconds,
        "cpu_s": cpu,
        "cpu_us_per_packet": cpu / max(1, sent) * 1e6,
        "max_lag_s": pacer.lag,
    }


async def subscribe(
    url: str, count: int, idle: float, deadline: float, raw: bool
) -> dict[str, Any]:
    require_default_loop()
    connection = await nats.connect(url, allow_reconnect=False, connect_timeout=5)
    latencies: list[int] = []
    append = latencies.append
    unpack = STAMP.unpack_from
    offset = len(MAGIC)
    marks = {"first": 0.0, "last": 0.0}
    done = asyncio.Event()

    async def on_message(message: Any) -> None:
        append(time.time_ns() - unpack(message.data, offset)[1])
        marks["last"] = time.perf_counter()
        if len(latencies) == 1:
            marks["first"] = marks["last"]
        if len(latencies) >= count:
            done.set()

    subscription = await connection.subscribe(
        SUBJECT, cb=on_message, pending_msgs_limit=0, pending_bytes_limit=0
    )
    await connection.flush()
    _emit("ready")
    cpu = time.process_time()
    started = time.perf_counter()
    while not done.is_set():
        # A watchdog, not a wait per message: wake four times a second to check for silence.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), 0.25)
        now = time.perf_counter()
        if now - (marks["last"] or started) > idle or now - started > deadline:
            break
    cpu = time.process_time() - cpu
    await subscription.unsubscribe()
    await connection.close()
    received = len(latencies)
    span = marks["last"] - marks["first"]
    return {
        "received": received,
        "rate": (received - 1) / span if span > 0 and received > 1 else 0.0,
        "cpu_s": cpu,
        "cpu_us_per_packet": cpu / max(1, received) * 1e6,
        **latency_summary(latencies),
        **({"latencies_ns": latencies} if raw else {}),
    }


def main() -> None:
    """``python -m loadtests.nats_client publish|subscribe --url nats://127.0.0.1:PORT``."""
    require_default_loop()
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["publish", "subscribe"])
    parser.add_argument("--url", required=True)
    parser.add_argument("--count", type=int, default=20000)
    parser.add_argument("--rate", type=float, default=0.0)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--idle", type=float, default=5.0)
    parser.add_argument("--deadline", type=float, default=120.0)
    parser.add_argument("--raw", action="store_true", help="subscribe: report every latency")
    args = parser.parse_args()
    if args.role == "publish":
        result = asyncio.run(publish(args.url, args.count, args.rate, args.size, args.batch))
    else:
        result = asyncio.run(subscribe(args.url, args.count, args.idle, args.deadline, args.raw))
    _emit("result", **result)


if __name__ == "__main__":
    main()
