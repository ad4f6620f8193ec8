"""``make loadtest SCENARIO=name``: run a locust scenario headless against a real hub.

The runner starts the hub (and the connectors the scenario names) from the scenario's Story,
runs ``locust --headless`` for a bounded time with the users in ``scenarios/<name>.py``,
writes locust's CSV and HTML report under ``loadtests/results/``, prints a one-screen
summary (packets/s, p50/p95/p99 latency, failures, lost) and checks the thresholds of
``scenarios/<name>.toml``; the exit status is 0 only when every threshold holds.
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

from loadtests.processes import read_event

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ROOT / "loadtests" / "scenarios"
RESULTS = ROOT / "loadtests" / "results"
CLI = [sys.executable, "-m", "bobravoz.sdk.cli"]


@dataclass
class Stack:
    """The hub and connectors a scenario runs against."""

    processes: list[subprocess.Popen[str]] = field(default_factory=list)
    hub: str = ""
    hub_metrics: str = ""
    connectors: list[str] = field(default_factory=list)

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
                },
            )
            self.processes.append(connector)
            self.connectors.append(read_event(connector, "ready")["listen"])

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


def _hub_totals(address: str) -> dict[str, float]:
    """Sums of the hub's counters that explain a run (drops, in/out, open streams)."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as response:
        text = response.read().decode()
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
    return totals


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
    args = parser.parse_args()
    config = tomllib.loads((SCENARIOS / f"{args.scenario}.toml").read_text())
    duration = args.duration or float(config["duration"])
    users = args.users or int(config["users"])
    RESULTS.mkdir(parents=True, exist_ok=True)
    prefix = RESULTS / args.scenario
    stack = Stack()
    try:
        stack.start(ROOT / config["story"], list(config.get("connectors", [])))
        env = {
            **os.environ,
            **{key: str(value) for key, value in config.get("env", {}).items()},
            "BOBRAVOZ_LOAD_HUB": stack.hub,
            "BOBRAVOZ_LOAD_CONNECTORS": json.dumps(stack.connectors),
            "PYTHONPATH": str(ROOT),
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
        hub = _hub_totals(stack.hub_metrics)
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
    expected = sent * float(config.get("fanout", 1))
    dropped = hub.get("bobravoz_packets_dropped_total", 0.0)
    lost = max(0.0, expected - delivered - dropped)
    failure_ratio = failures / requests if requests else 0.0
    p99 = _number(deliver, "99%")
    print(f"== loadtest {args.scenario}: {users} users, {duration:.0f}s ==")
    print(
        f"sent {sent:.0f}  delivered {delivered:.0f} (expected {expected:.0f})  "
        f"dropped {dropped:.0f}  lost {lost:.0f}  failures {failures:.0f}"
    )
    print(
        f"hub: buffered {hub.get('bobravoz_buffer_depth', 0):.0f}  "
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
    limits = config.get("thresholds", {})
    problems = []
    if limits.get("lossless", False) and lost > 0:
        problems.append(f"lost {lost:.0f} packets on a lossless edge")
    if failure_ratio > float(limits.get("max_failure_ratio", 0.0)):
        problems.append(f"failure ratio {failure_ratio:.4f} > {limits['max_failure_ratio']}")
    if "p99_ms" in limits and p99 > float(limits["p99_ms"]):
        problems.append(f"p99 {p99:.0f} ms > {limits['p99_ms']} ms")
    if delivered == 0:
        problems.append("nothing was delivered")
    for problem in problems:
        print(f"FAIL: {problem}")
    print("PASS" if not problems else "FAILED")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
