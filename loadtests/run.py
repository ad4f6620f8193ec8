"""``make loadtest SCENARIO=name``: run a locust scenario headless against a real hub.

The runner starts the hub (and the connectors the scenario names) from the scenario's Story,
runs ``locust --headless`` for a bounded time with the users in ``scenarios/<name>.py``,
writes locust's CSV and HTML report under ``loadtests/results/`` (or ``--results-dir``, or
``$BOBRAVOZ_LOADTEST_RESULTS``), prints a one-screen summary (packets/s, p50/p95/p99
latency, failures, drops by declared policy apart from every other loss) and checks the
thresholds of ``scenarios/<name>.toml``; the exit status is 0 only when every threshold
holds. ``lossless`` fails on any packet lost that no declared policy dropped: expected -
delivered - declared drops, where losses the hub or a connector counted (a broken stream, an
oversize packet, ...) are reported by reason but never excused.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tomllib
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bobravoz.sdk.accounting import (
    Accounting,
    Sample,
    TransportLoss,
    exposition_samples,
    format_reasons,
    transport_loss,
)
from loadtests.processes import read_event

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ROOT / "loadtests" / "scenarios"
RESULTS = ROOT / "loadtests" / "results"
RESULTS_ENV = "BOBRAVOZ_LOADTEST_RESULTS"
CLI = [sys.executable, "-m", "bobravoz.sdk.cli"]


@dataclass
class Stack:
    """The hub and connectors a scenario runs against."""

    processes: list[subprocess.Popen[str]] = field(default_factory=list)
    hub: str = ""
    hub_metrics: str = ""
    connectors: list[str] = field(default_factory=list)
    connector_metrics: list[str] = field(default_factory=list)

    def start(self, story: Path, connectors: list[dict[str, str]]) -> None:
        """Start the hub on a free port, then each connector (unix sockets would need paths;
        loopback TCP on free ports keeps grpcio's target syntax plain)."""
        quiet = {**os.environ, "BOBRAVOZ_LOG_LEVEL": "WARNING"}
        hub = subprocess.Popen(
            [
                *CLI,
                "hub",
                "--listen",
                "127.0.0.1:0",
                "--story",
                str(story),
                "--metrics",
                "127.0.0.1:0",
            ],
            stdout=subprocess.PIPE,
            text=True,
            env=quiet,
            cwd=ROOT,
        )
        self.processes.append(hub)
        ready = read_event(hub, "ready")
        self.hub, self.hub_metrics = ready["listen"], ready["metrics"]
        for spec in connectors:
            connector = subprocess.Popen(
                [*CLI, "connector"],
                stdout=subprocess.PIPE,
                text=True,
                cwd=ROOT,
                env={
                    **quiet,
                    "BUBU_HUB_ENDPOINT": self.hub,
                    "BUBU_STORYRUN_ID": spec["storyrun"],
                    "BUBU_POD_NAMESPACE": "default",
                    "BUBU_STEP_NAME": spec["step"],
                    "BUBU_CONNECTOR_GENERATION": "1",
                    "BUBU_GRPC_LOCAL_ENDPOINT": "127.0.0.1:0",
                    "BOBRAVOZ_METRICS_LISTEN": "127.0.0.1:0",
                },
            )
            self.processes.append(connector)
            ready = read_event(connector, "ready")
            self.connectors.append(ready["listen"])
            self.connector_metrics.append(ready["metrics"])

    def stop(self) -> None:
        """Terminate everything started, waiting for each."""
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _number(row: dict[str, str], column: str) -> float:
    value = row.get(column, "")
    return float(value) if value not in ("", "N/A") else 0.0


def _scrape(address: str) -> list[Sample]:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as response:
        return exposition_samples(response.read().decode())


def _totals(samples: list[Sample]) -> dict[str, float]:
    """Sums by sample name (drops, in/out, buffered, in flight, open streams, ...)."""
    totals: dict[str, float] = {}
    for name, _labels, value in samples:
        totals[name] = totals.get(name, 0.0) + value
    return totals


def accounting(
    sent: float, delivered: float, fanout: int, scrapes: list[list[Sample]]
) -> Accounting:
    """Expected deliveries (every packet sent, once per fan-out path) against what arrived and
    what the scraped processes (hub and connectors) say they dropped by policy or lost."""
    loss = TransportLoss()
    for samples in scrapes:
        loss.add(transport_loss(samples))
    return Accounting(expected=round(sent) * fanout, delivered=round(delivered), loss=loss)


def threshold_problems(
    limits: dict[str, Any], result: Accounting, *, failure_ratio: float, p99_ms: float
) -> list[str]:
    """The thresholds of a scenario's ``[thresholds]`` that the run broke (empty: PASS).
    ``lossless`` breaks on any packet lost that no declared policy dropped."""
    problems = []
    if limits.get("lossless", False) and (result.lost > 0 or result.loss.lost_counted > 0):
        counted = format_reasons(result.loss.lost) or "none counted by the transport"
        problems.append(
            f"lost {result.lost} packets no declared policy dropped on a lossless edge ({counted})"
        )
    if failure_ratio > float(limits.get("max_failure_ratio", 0.0)):
        problems.append(f"failure ratio {failure_ratio:.4f} > {limits['max_failure_ratio']}")
    if "p99_ms" in limits and p99_ms > float(limits["p99_ms"]):
        problems.append(f"p99 {p99_ms:.0f} ms > {limits['p99_ms']} ms")
    if result.delivered == 0:
        problems.append("nothing was delivered")
    return problems


def knee(history: list[dict[str, str]]) -> str:
    """The first ramp stage (user count) whose median delivery p99 is over 4x the first
    stage's and stays so for every later stage: where latency turns from flat to climbing."""
    stages: dict[int, list[tuple[float, float]]] = {}
    for row in history:
        if row["Name"] == "Process/deliver" and _number(row, "99%"):
            stages.setdefault(int(_number(row, "User Count")), []).append(
                (_number(row, "99%"), _number(row, "Requests/s"))
            )
    if not stages:
        return "no deliveries recorded"
    medians = [
        (users, statistics.median(p for p, _ in rows), max(r for _, r in rows))
        for users, rows in sorted(stages.items())
    ]
    baseline = medians[0][1]
    for position, (users, p99, rate) in enumerate(medians):
        if all(later > 4 * baseline for _, later, _ in medians[position:]):
            before = medians[max(0, position - 1)]
            return (
                f"knee at {users // 2} pairs: p99 {p99:.0f} ms (first stage {baseline:.0f} ms) "
                f"at {rate:.0f} deliveries/s; {before[0] // 2} pairs carried {before[2]:.0f}/s "
                f"at p99 {before[1]:.0f} ms"
            )
    users, p99, rate = medians[-1]
    return f"no knee up to {users // 2} pairs ({rate:.0f} deliveries/s, p99 {p99:.0f} ms)"


def main() -> int:
    """Run one scenario; see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("scenario", help="name of loadtests/scenarios/<name>.py")
    parser.add_argument("--duration", type=float, default=None, help="override seconds")
    parser.add_argument("--users", type=int, default=None, help="override the user count")
    parser.add_argument(
        "--results-dir",
        type=Path,
        default=Path(os.environ.get(RESULTS_ENV) or RESULTS),
        help=f"where locust's CSV and HTML go (default ${RESULTS_ENV}, else loadtests/results)",
    )
    parser.add_argument(
        "--no-latency-threshold",
        action="store_true",
        help="report p99 but do not check p99_ms (a smoke run on a shared, noisy machine)",
    )
    args = parser.parse_args()
    config = tomllib.loads((SCENARIOS / f"{args.scenario}.toml").read_text())
    duration = args.duration or float(config["duration"])
    users = args.users or int(config["users"])
    results: Path = args.results_dir.resolve()
    results.mkdir(parents=True, exist_ok=True)
    prefix = results / args.scenario
    stack = Stack()
    try:
        stack.start(ROOT / config["story"], list(config.get("connectors", [])))
        env = {
            **os.environ,
            **{key: str(value) for key, value in config.get("env", {}).items()},
            "BOBRAVOZ_LOAD_HUB": stack.hub,
            "BOBRAVOZ_LOAD_CONNECTORS": json.dumps(stack.connectors),
            # The repository (for ``loadtests``) ahead of whatever path the caller set.
            "PYTHONPATH": os.pathsep.join(
                part for part in (str(ROOT), os.environ.get("PYTHONPATH", "")) if part
            ),
        }
        command = [
            sys.executable,
            "-m",
            "locust",
            "-f",
            str(SCENARIOS / f"{args.scenario}.py"),
            "--headless",
            "-u",
            str(users),
            "-r",
            str(config["spawn_rate"]),
            "-t",
            f"{int(duration)}s",
            "--stop-timeout",
            "15",
            "--only-summary",
            "--csv",
            str(prefix),
            "--csv-full-history",
            "--html",
            f"{prefix}.html",
            "--loglevel",
            "WARNING",
            "--exit-code-on-error",
            "0",
        ]
        locust = subprocess.run(
            command,
            env=env,
            cwd=ROOT,
            timeout=duration + 90,
            capture_output=True,
            text=True,
            check=False,
        )
        if locust.returncode != 0:
            print(locust.stdout[-3000:], locust.stderr[-3000:], file=sys.stderr)
            return 2
        hub_samples = _scrape(stack.hub_metrics)
        scrapes = [hub_samples, *(_scrape(address) for address in stack.connector_metrics)]
    finally:
        stack.stop()
    stats = _rows(Path(f"{prefix}_stats.csv"))
    by_type: dict[str, dict[str, float]] = {}
    for row in stats:
        if row["Name"] == "Aggregated":
            continue
        totals = by_type.setdefault(row["Type"], {"count": 0.0, "failures": 0.0})
        totals["count"] += _number(row, "Request Count")
        totals["failures"] += _number(row, "Failure Count")
    deliver = next((row for row in stats if row["Name"] == "Process/deliver"), {})
    sent = by_type.get("grpc-send", {}).get("count", 0.0)
    delivered = by_type.get("grpc-deliver", {}).get("count", 0.0)
    requests = sum(item["count"] for item in by_type.values())
    failures = sum(item["failures"] for item in by_type.values())
    result = accounting(sent, delivered, int(config.get("fanout", 1)), scrapes)
    hub = _totals(hub_samples)
    failure_ratio = failures / requests if requests else 0.0
    p99 = _number(deliver, "99%")
    print(f"== loadtest {args.scenario}: {users} users, {duration:.0f}s ==")
    print(
        f"sent {sent:.0f}  delivered {result.delivered} (expected {result.expected})  "
        f"failures {failures:.0f}"
    )
    for line in result.lines():
        print(line)
    print(
        f"hub: buffered {hub.get('bobravoz_buffer_depth', 0):.0f}  "
        f"in flight {hub.get('bobravoz_packets_in_flight', 0):.0f}  "
        f"in {hub.get('bobravoz_packets_in_total', 0):.0f}  out "
        f"{hub.get('bobravoz_packets_out_total', 0):.0f}  rejected "
        f"{hub.get('bobravoz_packets_rejected_total', 0):.0f}  handshakes refused "
        f"{hub.get('bobravoz_handshakes_rejected_total', 0):.0f}"
    )
    print(
        f"packets/s {_number(deliver, 'Requests/s'):.0f}  latency p50 "
        f"{_number(deliver, '50%'):.0f} ms  p95 {_number(deliver, '95%'):.0f} ms  "
        f"p99 {p99:.0f} ms"
    )
    if args.scenario == "ramp":
        print(knee(_rows(Path(f"{prefix}_stats_history.csv"))))
    print(f"report: {prefix}.html, {prefix}_stats.csv")
    limits = dict(config.get("thresholds", {}))
    if args.no_latency_threshold:
        limits.pop("p99_ms", None)
    problems = threshold_problems(limits, result, failure_ratio=failure_ratio, p99_ms=p99)
    for problem in problems:
        print(f"FAIL: {problem}")
    print("PASS" if not problems else "FAILED")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
