"""``make bench``: hub throughput and latency against a minimal relay, measured in one run.

Producer, server and consumer are separate processes on loopback. Each round measures the
peak rate (producer unthrottled, 256-byte binary packets) through the hub and through the
baseline relay (:mod:`loadtests.relay`: plain grpclib, no actors, no validation), alternating
so both see the same machine; then end-to-end latency at half the hub's peak rate. Figures are
medians over the rounds; the ratio hub/baseline is what to compare across machines.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from loadtests.processes import read_event

ROOT = Path(__file__).resolve().parent.parent
STORY = ROOT / "loadtests" / "bench_story.yaml"
RESULTS = ROOT / "loadtests" / "results"


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _spawn(argv: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT
    )


def run_case(kind: str, count: int, rate: float, size: int) -> dict[str, Any]:
    """One producer → server → consumer run; ``kind`` is ``hub`` or ``relay``."""
    if kind == "hub":
        server_argv = [
            sys.executable,
            "-m",
            "bobravoz.sdk.cli",
            "hub",
            "--listen",
            "127.0.0.1:0",
            "--story",
            str(STORY),
        ]
    else:
        server_argv = [sys.executable, "-m", "loadtests.relay"]
    server = _spawn(server_argv)
    processes = [server]
    try:
        target = read_event(server, "ready")["listen"]
        client = [sys.executable, "-m", "loadtests.bench_client"]
        common = ["--target", target, "--count", str(count), "--size", str(size)]
        consumer = _spawn([*client, "consume", *common])
        processes.append(consumer)
        read_event(consumer, "ready")
        producer = _spawn([*client, "produce", *common, "--rate", str(rate)])
        processes.append(producer)
        cpu_before = _cpu_seconds(server.pid)
        result = read_event(consumer, "result")
        producer.wait(timeout=120)
        cpu = _cpu_seconds(server.pid) - cpu_before
        result["server_cpu_us"] = cpu / max(1, result["received"]) * 1e6
        return result
    finally:
        for process in processes:
            if process.poll() is None:
                process.terminate()
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()


def main() -> int:
    """Run the rounds, print the table and the ratio, save JSON under loadtests/results."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--count", type=int, default=20000)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--latency-seconds", type=float, default=5.0)
    args = parser.parse_args()
    peaks: dict[str, list[float]] = {"hub": [], "relay": []}
    cpu: dict[str, list[float]] = {"hub": [], "relay": []}
    for round_number in range(1, args.rounds + 1):
        for kind in ("relay", "hub"):
            result = run_case(kind, args.count, 0.0, args.size)
            peaks[kind].append(result["rate"])
            cpu[kind].append(result["server_cpu_us"])
            print(
                f"round {round_number} {kind:5s} peak {result['rate']:9.0f} packets/s "
                f"({result['received']}/{args.count} received, "
                f"server {result['server_cpu_us']:.0f} us CPU/packet)",
                flush=True,
            )
    hub_peak = statistics.median(peaks["hub"])
    relay_peak = statistics.median(peaks["relay"])
    half = hub_peak / 2
    count = max(1000, int(half * args.latency_seconds))
    latency = {kind: run_case(kind, count, half, args.size) for kind in ("relay", "hub")}
    ratio = hub_peak / relay_peak if relay_peak else 0.0
    print()
    print(f"{'':22s}{'baseline relay':>16s}{'hub':>14s}")
    print(f"{'peak packets/s':22s}{relay_peak:16.0f}{hub_peak:14.0f}")
    print(
        f"{'server CPU us/packet':22s}{statistics.median(cpu['relay']):16.0f}"
        f"{statistics.median(cpu['hub']):14.0f}"
    )
    print(
        f"{'p50 ms @ ' + format(half, '.0f') + '/s':22s}"
        f"{latency['relay']['p50_ms']:16.2f}{latency['hub']['p50_ms']:14.2f}"
    )
    print(
        f"{'p99 ms @ ' + format(half, '.0f') + '/s':22s}"
        f"{latency['relay']['p99_ms']:16.2f}{latency['hub']['p99_ms']:14.2f}"
    )
    print(f"hub/baseline throughput ratio: {ratio:.2f}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "bench.json").write_text(
        json.dumps(
            {
                "peaks": peaks,
                "server_cpu_us": cpu,
                "hub_peak": hub_peak,
                "relay_peak": relay_peak,
                "ratio": ratio,
                "latency_rate": half,
                "latency": latency,
            },
            indent=2,
        )
    )
    lost = [kind for kind, result in latency.items() if result["received"] < count]
    if lost:
        print(f"packets missing in the latency run of: {', '.join(lost)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
