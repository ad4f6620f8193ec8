"""``bobravoz up``: run a Story on this machine, every part its own OS process.

The runner starts the hub, one connector per streaming step (each on a unix socket) and each
step's engram program (``<engrams-dir>/<engram>.py``), wires them with the same environment a
cluster would give them, shows live progress, and ends with a summary: sent, delivered,
dropped by declared policy, rejected, lost (expected - delivered - declared drops, with the
losses the transport itself counted, by reason), packets/s and end-to-end latency. Exit
status 1 when any packet was lost that no declared policy dropped, or a process failed.
For a Story whose primitives decide what reaches which step (``if``, ``runtime``, routing
rules, fan-in, ``sleep``/``stop``, ``spec.concurrency``) there is no expected count: the
summary shows what the Story filtered, by reason, and the verdict is the transport's own
count of lost packets (and every engram finished); each engram's summary is shown too.
``--inputs JSON`` gives the StoryRun its inputs (the hub reads ``BOBRAVOZ_STORYRUN_INPUTS``).
Ctrl-C (or any failure of the runner) stops every child: SIGTERM, then SIGKILL after a grace
period.

With ``--trace`` the runner also receives every process's spans (OTLP/HTTP on loopback,
:mod:`bobravoz.sdk.trace_view`) and prints the slowest packet's trace as a waterfall.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, final

import trio

from bobravoz.runtime.binding_envelope import BindingEnvelope, BindingInfo, encode_binding
from bobravoz.runtime.groups import lone_exception
from bobravoz.runtime.shutdown import TwoStageStop
from bobravoz.runtime.story import Story, StoryError, load_story
from bobravoz.runtime.topology import Topology, TopologyError, streaming_topology
from bobravoz.runtime.tracing import TRACING_SETTINGS_ENV
from bobravoz.sdk.accounting import (
    Accounting,
    TransportLoss,
    story_has_primitives,
    story_lines,
    transport_loss_from_text,
)
from bobravoz.sdk.local_pki import LocalPki
from bobravoz.sdk.trace_view import TraceReceiver, render_waterfall, slowest_trace

READY_TIMEOUT: Final = 20.0
STOP_GRACE: Final = 3.0
#: Seconds the engrams have to finish once ``--duration`` asked the sources to stop: an
#: engram's own stop grace (``BOBRAVOZ_STOP_GRACE``, 10 s) and a margin to write and drain.
DRAIN_TIMEOUT: Final = 15.0


@final
@dataclass(frozen=True, slots=True)
class UpOptions:
    """What ``bobravoz up`` was asked to do."""

    story: Path
    duration: float = 60.0
    engrams_dir: Path | None = None
    storyrun: str = "local"
    live: bool = True
    #: Run every network hop (connector <-> hub) over mTLS with an ephemeral CA.
    tls: bool = False
    #: The StoryRun's inputs (a JSON object's text), for the hub's ``inputs.*`` templates.
    inputs: str | None = None
    #: Collect every process's spans and print the slowest packet's trace.
    trace: bool = False


@final
@dataclass
class Child:
    """One process the runner started, with the JSON lines it printed."""

    name: str
    role: str
    process: trio.Process
    reports: list[dict[str, Any]] = field(default_factory=list)
    stopping: bool = False
    #: An engram's ``losses`` report: what its SDK lost, by reason (kept apart so
    #: :attr:`last` stays its own summary).
    losses: dict[str, int] = field(default_factory=dict)

    @property
    def last(self) -> dict[str, Any]:
        """The most recent progress or summary report (empty before the first)."""
        return self.reports[-1] if self.reports else {}

    @property
    def failed(self) -> bool:
        """Exited non-zero without the runner asking it to stop."""
        code = self.process.returncode
        return code is not None and code != 0 and not self.stopping


async def _read_lines(child: Child, ready: trio.Event | None) -> None:
    stream = child.process.stdout
    assert stream is not None
    buffer = b""
    async for chunk in stream:
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            try:
                report = json.loads(line)
            except ValueError:
                print(f"[{child.name}] {line.decode(errors='replace')}", file=sys.stderr)
                continue
            if isinstance(report, dict) and report.get("event") == "losses":
                reasons = report.get("reasons")
                if isinstance(reasons, dict):
                    child.losses = {str(k): int(v) for k, v in reasons.items()}
            elif isinstance(report, dict):
                child.reports.append(report)
                if ready is not None and report.get("event") == "ready":
                    ready.set()


@final
class Runner:
    """Starts and stops the processes of one local Story run."""

    def __init__(self, options: UpOptions, story: Story, topology: Topology) -> None:
        self.options = options
        self.story = story
        self.topology = topology
        self.children: list[Child] = []
        #: Environment given to every child (tracing's exporter settings with ``--trace``).
        self.extra_env: dict[str, str] = {}
        self.engrams_dir = options.engrams_dir or options.story.resolve().parent.parent / "engrams"

    async def start(
        self,
        nursery: trio.Nursery,
        name: str,
        role: str,
        argv: list[str],
        env: Mapping[str, str],
        *,
        wait_ready: bool,
    ) -> Child:
        """Start one child; with ``wait_ready``, return after its JSON readiness line."""
        quiet = {"BOBRAVOZ_LOG_LEVEL": os.environ.get("BOBRAVOZ_LOG_LEVEL", "WARNING")}
        process = await trio.lowlevel.open_process(
            argv,
            env={**os.environ, **quiet, **self.extra_env, **env},
            stdout=-1,  # subprocess.PIPE
            stdin=-3,  # subprocess.DEVNULL
            start_new_session=True,
        )
        child = Child(name=name, role=role, process=process)
        self.children.append(child)
        ready = trio.Event() if wait_ready else None
        nursery.start_soon(_read_lines, child, ready)
        if ready is not None:
            with trio.move_on_after(READY_TIMEOUT):
                while not ready.is_set():
                    if process.returncode is not None:
                        raise RuntimeError(f"{name} exited with status {process.returncode}")
                    with trio.move_on_after(0.05):
                        await ready.wait()
            if not ready.is_set():
                raise RuntimeError(f"{name} did not report ready within {READY_TIMEOUT:.0f}s")
        return child

    async def stop_sources(self, engrams: list[Child]) -> bool:
        """Ask the source engrams (steps nothing streams into) to stop (SIGTERM: the SDK's
        graceful stop) and wait up to :data:`DRAIN_TIMEOUT` for every engram to finish as
        when the Story ends by itself; True when all of them did."""
        for child in engrams:
            if child.process.returncode is None and not self.topology.upstream_of(child.name):
                child.stopping = True
                child.process.send_signal(signal.SIGTERM)
        with trio.move_on_after(DRAIN_TIMEOUT):
            for child in engrams:
                await child.process.wait()
        return all(child.process.returncode is not None for child in engrams)

    async def stop_all(self) -> None:
        """SIGTERM every live child (a graceful stop); after :data:`STOP_GRACE`, SIGTERM
        again what is left (stop at once, counting what it held); SIGKILL what is still
        left :data:`STOP_GRACE` later."""
        for child in self.children:
            if child.process.returncode is None:
                child.stopping = True
                child.process.send_signal(signal.SIGTERM)
        for last_resort in (False, True):
            with trio.move_on_after(STOP_GRACE):
                for child in self.children:
                    await child.process.wait()
            for child in self.children:
                if child.process.returncode is None:
                    if last_resort:
                        child.process.kill()
                        await child.process.wait()
                    else:
                        child.process.send_signal(signal.SIGTERM)


def _step_config(story: Story, step_id: str) -> dict[str, Any]:
    for step in story.spec.steps:
        if step.step_id == step_id:
            raw = step.with_
            if raw is None:
                return {}
            return dict(raw) if isinstance(raw, Mapping) else json.loads(bytes(raw))
    return {}


def _scrape(address: str) -> TransportLoss:
    """Declared drops, counted losses and rejections at a ``/metrics`` address."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as response:
        text = response.read().decode()
    return transport_loss_from_text(text)


def _percentile(values: list[float], fraction: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))
    return ordered[index]


@final
@dataclass
class Summary:
    """What a run did, computed from the engrams' reports and the processes' metrics."""

    sent: int = 0
    expected: int = 0
    delivered: int = 0
    out_of_order: int = 0
    #: Declared drops, counted losses and rejections of every scraped process.
    loss: TransportLoss = field(default_factory=TransportLoss)
    elapsed: float = 0.0
    streaming_seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    interrupted: bool = False
    #: What ended the run before every engram finished (``--duration 5s``, ``Ctrl-C``);
    #: empty when they all finished. Sent and delivered are then the last progress reports.
    cut: str = ""
    #: What asked the sources to stop (``--duration 5s``, ``Ctrl-C``), after which every
    #: engram finished by itself; empty when the Story ended on its own. Counts are complete.
    stopped: str = ""
    #: What the hub and each connector reported serving and dialling (``mtls``/``plaintext``).
    security: dict[str, str] = field(default_factory=dict)
    #: The Story's primitives decide what reaches which step: the verdict is the transport's
    #: own count (filtered by the Story is not loss; no expected count exists).
    story_accounting: bool = False
    #: Each engram step's last report (its summary when it finished), in Story order.
    steps: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: What each engram's SDK lost, by reason (steps with none left out).
    engram_losses: dict[str, dict[str, int]] = field(default_factory=dict)
    #: With ``--trace``: the slowest packet's trace, rendered as a waterfall.
    waterfall: str = ""

    @property
    def accounting(self) -> Accounting:
        """Expected, delivered and the transport's counts, taken together."""
        return Accounting(expected=self.expected, delivered=self.delivered, loss=self.loss)

    @property
    def dropped(self) -> int:
        """Packets dropped by a declared policy (``drop_oldest``/``drop_newest``) only."""
        return self.loss.declared_drops

    @property
    def rejected(self) -> int:
        """Packets refused for breaking the wire contract."""
        return self.loss.rejected_total

    @property
    def lost(self) -> int:
        """Packets neither delivered nor dropped by a declared policy (expected - delivered -
        declared drops); what the transport counted as lost is never subtracted. For a Story
        with primitives, or a run ``--duration`` cut (whose sent and delivered are partial):
        what the transport and the engrams' SDKs counted as lost."""
        if self.story_accounting or self.cut:
            return self.loss.lost_counted + self.engram_lost
        return self.accounting.lost

    @property
    def engram_lost(self) -> int:
        """What the engrams' SDKs lost (in or out), all steps."""
        return sum(sum(reasons.values()) for reasons in self.engram_losses.values())

    @property
    def lost_counted(self) -> int:
        """Packets the transport itself counted as lost (any reason but a declared policy)."""
        return self.loss.lost_counted

    @property
    def exit_status(self) -> int:
        """130 when interrupted; 1 on loss no policy declared (missing at the sinks, or counted
        by the transport), a failed process or reordering."""
        if self.interrupted:
            return 130
        lossy = self.lost or self.lost_counted or self.engram_lost
        return 1 if lossy or self.failed or self.out_of_order else 0

    def describe_security(self) -> str:
        """What the processes reported: mTLS on every hub hop, plaintext, or a mix."""
        modes = set(self.security.values())
        if modes == {"mtls"}:
            return (
                f"mTLS on all {len(self.security)} hub and connector endpoints (ephemeral CA); "
                "engrams reach their connector over unix sockets"
            )
        if modes <= {"plaintext"}:
            return "plaintext on loopback and unix sockets (--tls for mTLS)"
        return "mixed: " + ", ".join(f"{k} {v}" for k, v in sorted(self.security.items()))

    def render(self) -> str:
        """The closing block printed by ``bobravoz up``."""
        span = self.streaming_seconds or self.elapsed
        rate = self.delivered / span if span > 0 else 0.0
        p50 = _percentile(self.latencies_ms, 0.50)
        p99 = _percentile(self.latencies_ms, 0.99)
        lines = [
            "== bobravoz up: summary ==",
            f"sent       {self.sent}",
            *self._count_lines(),
            f"reordered  {self.out_of_order}",
            f"rate       {rate:.0f} packets/s delivered over {span:.1f}s of streaming "
            f"({self.elapsed:.1f}s in all)",
            f"latency    p50 {p50:.2f} ms, p99 {p99:.2f} ms (end to end)",
            f"security   {self.describe_security()}",
        ]
        if self.story_accounting:
            lines.extend(
                f"step       {name}: {describe_report(r)}" for name, r in self.steps.items()
            )
        lines.extend(
            f"engram     {name} lost {sum(reasons.values())} in its SDK: "
            + ", ".join(f"{reason}={count}" for reason, count in sorted(reasons.items()))
            for name, reasons in self.engram_losses.items()
        )
        if self.failed:
            lines.append(f"failed     {', '.join(self.failed)}")
        if self.cut:
            lines.append(
                f"cut        {self.cut} ended the run before every engram finished (within "
                f"{DRAIN_TIMEOUT:g}s of asking the sources to stop): sent and delivered are "
                "their last progress reports"
            )
        if self.stopped:
            lines.append(
                f"stopped    {self.stopped} asked the sources to stop; every engram then "
                "finished: the counts are complete"
            )
        elif self.interrupted:
            lines.append("interrupted: every process was stopped; counts are partial")
        return "\n".join(lines)

    def _count_lines(self) -> list[str]:
        if self.story_accounting:
            return [
                f"delivered  {self.delivered} at the sinks (the Story decides what reaches them)",
                *story_lines(self.loss, width=10),
            ]
        if self.cut:
            # Expected - delivered of a cut run mixes packets in flight with reports that lag:
            # not a loss count in either direction. What was counted lost still is one.
            return [
                f"delivered  {self.delivered} (expected {self.expected}; partial: the run was cut)",
                *self.accounting.lines(width=10, counted_lost=self.lost),
            ]
        return [
            f"delivered  {self.delivered} (expected {self.expected})",
            *self.accounting.lines(width=10),
        ]


#: Report fields that are not worth repeating in the summary's step lines.
_UNDESCRIBED = frozenset({"event", "step", "role", "seconds", "latencies_ms", "sequences"})


def describe_report(report: Mapping[str, Any]) -> str:
    """An engram's report as ``key=value`` pairs: numbers, text, short lists of text and small
    maps (``texts=["Hello!", ...]``); long or numeric lists are left out."""
    parts = []
    for key, value in report.items():
        if key in _UNDESCRIBED:
            continue
        if isinstance(value, list):
            if not value or len(value) > 8 or not all(isinstance(v, str) for v in value):
                continue
        elif isinstance(value, dict):
            if len(value) > 8:
                continue
        elif not isinstance(value, str | int | float | bool):
            continue
        number = isinstance(value, int | float) and not isinstance(value, bool)
        parts.append(f"{key}={value if number else json.dumps(value, ensure_ascii=False)}")
    return " ".join(parts)


def _inputs_env(options: UpOptions) -> dict[str, str]:
    """``BOBRAVOZ_STORYRUN_INPUTS`` for the hub when ``--inputs`` was given."""
    return {"BOBRAVOZ_STORYRUN_INPUTS": options.inputs} if options.inputs is not None else {}


def _expected_per_sink(topology: Topology, sent: Mapping[str, int]) -> dict[str, int]:
    """Packets each sink should see: every source's count once per path to it."""
    paths: dict[str, dict[str, int]] = {}
    for node in topology.steps:
        counts = {node.id: 1} if node.id in sent else {}
        for edge in topology.upstream_of(node.id):
            for source, number in paths.get(edge.source, {}).items():
                counts[source] = counts.get(source, 0) + number
        paths[node.id] = counts
    sinks = [node.id for node in topology.steps if not topology.downstream_of(node.id)]
    return {
        sink: sum(sent.get(source, 0) * n for source, n in paths[sink].items() if source != sink)
        for sink in sinks
    }


async def _cancel_when_set(event: trio.Event, scope: trio.CancelScope) -> None:
    """Cancel ``scope`` once ``event`` is set (at once if it is entered only later)."""
    await event.wait()
    scope.cancel()


async def _progress(runner: Runner, started: float) -> None:
    while True:
        await trio.sleep(1.0)
        parts = []
        for child in runner.children:
            if child.role != "engram":
                continue
            last = child.last
            count = last.get("sent", last.get("received", last.get("forwarded", 0)))
            parts.append(f"{child.name}={count}")
        print(
            f"\r[{time.monotonic() - started:5.1f}s] " + " ".join(parts),
            end="",
            file=sys.stderr,
            flush=True,
        )


def _tls_env(
    scratch: Path, namespace: str, tls: bool
) -> tuple[dict[str, str], Callable[[str], dict[str, str]]]:
    """The hub's and each connector's TLS environment: with ``tls`` an ephemeral CA in
    ``scratch`` issues the hub a certificate and each connector one naming ``namespace``
    (SPIFFE), so the hub's identity check is what a cluster would run; else nothing."""
    if not tls:
        return {}, lambda step: {}
    pki = LocalPki(scratch / "pki")
    hub = pki.issue("hub", namespace="bobravoz-system").files
    hub_env = {
        "BUBU_TRANSPORT_SECURITY_MODE": "tls",
        "BUBU_HUB_TLS_CERT_FILE": hub.cert,
        "BUBU_HUB_TLS_KEY_FILE": hub.key,
        "BUBU_HUB_CA_FILE": hub.ca,
    }

    def connector_env(step: str) -> dict[str, str]:
        files = pki.issue(f"connector-{step}", namespace=namespace).files
        return {
            "BUBU_TRANSPORT_SECURITY_MODE": "tls",
            "BUBU_GRPC_CLIENT_CERT_FILE": files.cert,
            "BUBU_GRPC_CLIENT_KEY_FILE": files.key,
            "BUBU_GRPC_CA_FILE": files.ca,
        }

    return hub_env, connector_env


def _tracing_env(topology: Topology, step_id: str) -> dict[str, str]:
    """``BOBRAVOZ_TRACING`` for a step: the ``observability.tracing`` settings of its
    transport's merged streaming settings (those of its outgoing edges, else of its incoming
    ones); nothing when the Story sets none."""
    for edge in topology.downstream_of(step_id) or topology.upstream_of(step_id):
        observability = edge.settings.observability
        if observability is not None and observability.tracing is not None:
            return {TRACING_SETTINGS_ENV: json.dumps(observability.tracing)}
    return {}


def trace_export_env(endpoint: str) -> dict[str, str]:
    """What every child gets with ``--trace``: OTLP/HTTP export to ``endpoint`` every 200 ms
    (the user's own service name and traces endpoint blanked out)."""
    return {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        "OTEL_SERVICE_NAME": "",
    }


async def _run(options: UpOptions, story: Story, topology: Topology, summary: Summary) -> None:
    if not options.trace:
        await _run_story(options, story, topology, summary, {})
        return
    # The receiver outlives every child: each exports what it still holds as it exits.
    receiver = TraceReceiver()
    async with trio.open_nursery() as nursery:
        endpoint = await nursery.start(receiver.serve)
        await _run_story(options, story, topology, summary, trace_export_env(endpoint))
        nursery.cancel_scope.cancel()
    slowest = slowest_trace(receiver.spans)
    summary.waterfall = (
        f"== slowest packet's trace (of {len(receiver.traces())} traces) ==\n"
        + render_waterfall(slowest)
        if slowest
        else "== no spans were received (is tracing sampled out?) =="
    )


async def _run_story(
    options: UpOptions,
    story: Story,
    topology: Topology,
    summary: Summary,
    extra_env: Mapping[str, str],
) -> None:
    runner = Runner(options, story, topology)
    runner.extra_env.update(extra_env)
    namespace = topology.namespace
    storyrun = options.storyrun
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bobravoz-") as scratch, trio.CancelScope() as run:
        # The first Ctrl-C (or SIGTERM) ends the streaming as --duration does: the sources are
        # asked to stop and the rest finish behind them. A second one stops everything at once.
        signals = TwoStageStop()
        streaming = trio.CancelScope()  # its deadline is set when the engrams stream
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(signals.watch, run)
                nursery.start_soon(_cancel_when_set, signals.requested, streaming)
                cli = [sys.executable, "-m", "bobravoz.sdk.cli"]
                hub_env, connector_env = _tls_env(Path(scratch), namespace, options.tls)
                hub = await runner.start(
                    nursery,
                    "hub",
                    "hub",
                    [
                        *cli,
                        "hub",
                        "--listen",
                        "127.0.0.1:0",
                        "--story",
                        str(options.story),
                        "--metrics",
                        "127.0.0.1:0",
                    ],
                    {**hub_env, **_inputs_env(options)},
                    wait_ready=True,
                )
                hub_address = hub.last["listen"]
                summary.security[hub.name] = str(hub.last.get("tls", "unknown"))
                metrics_addresses = [(hub.name, hub.last["metrics"])]
                engrams: list[tuple[str, list[str], dict[str, str]]] = []
                for node in topology.streaming_steps():
                    socket = f"unix://{scratch}/{node.id}.sock"
                    identity = {
                        "BUBU_STORYRUN_ID": storyrun,
                        "BUBU_POD_NAMESPACE": namespace,
                        "BUBU_STEP_NAME": node.id,
                        **_tracing_env(topology, node.id),
                    }
                    connector = await runner.start(
                        nursery,
                        f"connector/{node.id}",
                        "connector",
                        [*cli, "connector"],
                        {
                            **identity,
                            **connector_env(node.id),
                            "BUBU_HUB_ENDPOINT": hub_address,
                            "BUBU_CONNECTOR_GENERATION": "1",
                            "BUBU_GRPC_LOCAL_ENDPOINT": socket,
                            "BOBRAVOZ_METRICS_LISTEN": "127.0.0.1:0",
                        },
                        wait_ready=True,
                    )
                    metrics_addresses.append((connector.name, connector.last["metrics"]))
                    summary.security[connector.name] = str(connector.last.get("tls", "unknown"))
                    binding = BindingEnvelope(
                        name=f"{storyrun}-{node.id}-transport",
                        namespace=namespace,
                        info=BindingInfo(
                            endpoint=socket, transport_ref="bobravoz-grpc", driver="grpc"
                        ),
                    )
                    program = runner.engrams_dir / f"{node.engram}.py"
                    if not program.is_file():
                        raise RuntimeError(f"step {node.id}: no engram program {program}")
                    engrams.append(
                        (
                            node.id,
                            [sys.executable, str(program)],
                            {
                                **identity,
                                "BUBU_TRANSPORT_BINDING": encode_binding(binding),
                                "BUBU_STEP_CONFIG": json.dumps(_step_config(story, node.id)),
                                "BUBU_EXECUTION_MODE": "streaming",
                            },
                        )
                    )
                # Downstream steps first, each connected before the next starts, so what is
                # measured is streaming, not packets waiting for a consumer to start up.
                engram_children = [
                    await runner.start(nursery, step, "engram", argv, env, wait_ready=True)
                    for step, argv, env in reversed(engrams)
                ]
                if options.live:
                    nursery.start_soon(_progress, runner, started)
                streaming.deadline = trio.current_time() + options.duration
                with streaming:
                    for child in engram_children:
                        await child.process.wait()
                if streaming.cancelled_caught:
                    # The sources stop and end their streams; the rest finish behind them.
                    cause = (
                        "Ctrl-C"
                        if signals.requested.is_set()
                        else f"--duration {options.duration:g}s"
                    )
                    if await runner.stop_sources(engram_children):
                        summary.stopped = cause
                    else:
                        summary.cut = cause
                summary.elapsed = time.monotonic() - started
                for name, address in metrics_addresses:
                    try:
                        loss = await trio.to_thread.run_sync(_scrape, address)
                    except OSError as error:
                        # Its drops and losses are unknown: the run cannot be called lossless.
                        summary.failed.append(f"{name} (metrics unreadable: {error})")
                        continue
                    summary.loss.add(loss)
                nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                await runner.stop_all()
            if options.live:
                print(file=sys.stderr)
    summary.interrupted = signals.requested.is_set()
    sent: dict[str, int] = {}
    for child in runner.children:
        report = child.last
        if child.failed:
            summary.failed.append(f"{child.name} (exit {child.process.returncode})")
        if child.role != "engram":
            continue
        if child.losses:
            summary.engram_losses[child.name] = child.losses
        if report.get("role") == "source":
            sent[child.name] = int(report.get("sent", 0))
        if report.get("role") == "sink":
            summary.delivered += int(report.get("received", 0))
            summary.out_of_order += int(report.get("out_of_order", 0))
            summary.latencies_ms.extend(float(v) for v in report.get("latencies_ms", []))
            summary.streaming_seconds = max(
                summary.streaming_seconds, float(report.get("seconds", 0.0))
            )
        if report.get("event") != "summary" and child.process.returncode != 0:
            summary.failed.append(f"{child.name} (did not finish)")
    summary.sent = sum(sent.values())
    summary.expected = sum(_expected_per_sink(topology, sent).values())
    summary.story_accounting = story_has_primitives(story)
    reports = {child.name: child.last for child in runner.children if child.role == "engram"}
    summary.steps = {
        node.id: reports[node.id] for node in topology.streaming_steps() if node.id in reports
    }


def run_up(options: UpOptions) -> int:
    """Run the Story and print the summary; returns 0, or 1 on loss or failure, 2 on bad input."""
    try:
        story = load_story(options.story)
        topology = streaming_topology(story)
    except (StoryError, TopologyError) as error:
        print(f"bobravoz up: {error}", file=sys.stderr)
        return 2
    summary = Summary()
    try:
        trio.run(_run, options, story, topology, summary)
    except KeyboardInterrupt:
        print("bobravoz up: interrupted; every process was stopped", file=sys.stderr)
        return 130
    except Exception as failure:
        cause = lone_exception(failure)
        if not isinstance(cause, RuntimeError | OSError):
            raise
        print(f"bobravoz up: {cause}", file=sys.stderr)
        return 1
    print(summary.render())
    if summary.waterfall:
        print(summary.waterfall)
    return summary.exit_status
