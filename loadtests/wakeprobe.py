"""The machine's floor under a latency figure: one TCP hop between two processes, no server.

``make bench`` runs this beside the servers' latency rounds. A sender process writes an
8-byte wall-clock stamp over loopback TCP at a fixed rate (each stamp taken just before its
write, as the bench producer does); the receiver, blocked in ``recv``, takes the clock when
the kernel wakes it and keeps ``received - stamped`` per message. Nothing else runs in either
process, so the tail is the machine's: how late the scheduler (on a VM, the hypervisor) lets a
sleeping process run once its data is there. A packet through any of the measured servers
makes at least two such hops (producer -> server -> consumer), so a server's p99.9 cannot be
expected under this floor's on the same machine at the same time.

``python -m loadtests.wakeprobe --rate 1000 --seconds 5`` prints one JSON ``result`` line:
``samples``, ``p50_ms`` / ``p99_ms`` / ``p999_ms`` / ``max_ms``, and ``latencies_ns``
(arrival order) with ``--raw``.
"""

from __future__ import annotations

import argparse
import json
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from loadtests.benchwire import latency_summary

_STAMP = struct.Struct("<q")
#: Where ``python -m loadtests.wakeprobe`` finds this module.
_ROOT = Path(__file__).resolve().parent.parent


def send(port: int, rate: float, count: int) -> None:
    """Connect to ``port`` on loopback and write ``count`` stamps, one every ``1 / rate``
    seconds: a slot missed while descheduled is sent as soon as the sender runs again, each
    stamp taken just before its own write."""
    with socket.create_connection(("127.0.0.1", port)) as connection:
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        started = time.perf_counter()
        for number in range(count):
            wait = started + number / rate - time.perf_counter()
            if wait > 0:
                time.sleep(wait)  # the probe's own pacing: a blocking process, no loop
            connection.sendall(_STAMP.pack(time.time_ns()))


def receive(connection: socket.socket, count: int) -> list[int]:
    """Read ``count`` stamps from ``connection``; each one's latency in ns, in arrival order
    (stamps that arrive in one read share that read's clock)."""
    latencies: list[int] = []
    pending = b""
    while len(latencies) < count:
        data = connection.recv(65536)
        now = time.time_ns()
        if not data:
            break
        pending += data
        whole = len(pending) - len(pending) % _STAMP.size
        latencies += [now - stamp for (stamp,) in _STAMP.iter_unpack(pending[:whole])]
        pending = pending[whole:]
    return latencies


def probe(rate: float, seconds: float) -> dict[str, Any]:
    """Run a sender process against this one for ``seconds`` at ``rate`` stamps/s; the
    latencies (``latencies_ns``, arrival order), their percentiles and ``samples``."""
    count = max(1, round(rate * seconds))
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        sender = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "loadtests.wakeprobe",
                "--send",
                str(port),
                "--rate",
                str(rate),
                "--count",
                str(count),
            ],
            cwd=_ROOT,
        )
        try:
            connection, _ = listener.accept()
            with connection:
                latencies = receive(connection, count)
        finally:
            status = sender.wait()
    if status != 0 or len(latencies) != count:
        raise RuntimeError(f"the probe's sender exited {status} with {len(latencies)}/{count}")
    return {
        "event": "result",
        "rate": rate,
        "samples": len(latencies),
        **latency_summary(latencies),
        "max_ms": max(latencies) / 1e6,
        "latencies_ns": latencies,
    }


def main(argv: list[str] | None = None) -> int:
    """Probe (or, with ``--send``, be the probe's sender) and print the result as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=1000.0, help="stamps per second")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--raw", action="store_true", help="print every latency too")
    parser.add_argument("--send", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.send is not None:
        send(args.send, args.rate, args.count)
        return 0
    result = probe(args.rate, args.seconds)
    if not args.raw:
        del result["latencies_ns"]
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
