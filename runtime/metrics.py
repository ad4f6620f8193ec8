"""Prometheus metrics for hubs and connectors, counted as plain ints on the hot path.

Packet paths bump fields of :class:`BindingCounters` (no label lookups per packet); the
:class:`TransportMetrics` collector turns them into ``bobravoz_*`` families at scrape time, on
a registry the caller injects (never the global one). Metrics report state, they never are
the state: gauges (buffer depth, packets in flight, open streams) are read from their owners
through probes at scrape time, and nothing here is consulted to make a decision.

Accounting per binding: ``dropped`` holds only drops a declared policy asked for
(``drop_oldest``, ``drop_newest``); ``lost`` holds every other packet the transport could not
deliver, by reason. A released binding's counts fold into the ``(released)`` series so that
sums over bindings never go backwards while the number of series stays bounded.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import final

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from bobravoz.runtime.channel import POLICY_REASONS
from bobravoz.runtime.tls import ReloadingContext


@final
@dataclass(slots=True)
class BindingCounters:
    """Running totals for one binding (``namespace/storyrun/step``)."""

    packets_in: int = 0
    bytes_in: int = 0
    packets_out: int = 0
    bytes_out: int = 0
    heartbeats_in: int = 0
    #: Drops a declared policy asked for, by reason.
    dropped: collections.Counter[str] = field(default_factory=collections.Counter)
    #: Packets lost for any other reason (not declared by a policy), by reason.
    lost: collections.Counter[str] = field(default_factory=collections.Counter)
    rejected: collections.Counter[str] = field(default_factory=collections.Counter)
    #: Packets a Story primitive decided not to deliver to a target (``if_false``,
    #: ``rule_denied``, ``not_allowed``, ``stop``, ``cancelled``, ``joined``, ...): the
    #: Story's declared behaviour, neither a drop nor a loss.
    filtered: collections.Counter[str] = field(default_factory=collections.Counter)
    #: Template evaluations that failed, by reason (each also counted lost ``template_error``).
    template_errors: collections.Counter[str] = field(default_factory=collections.Counter)
    #: Run requests (``executeStory``) reported for the controllers, by kind.
    run_requests: collections.Counter[str] = field(default_factory=collections.Counter)

    def count_drop(self, reason: str) -> None:
        """Count one packet that left a buffer undelivered: a policy drop or a loss."""
        if reason in POLICY_REASONS:
            self.dropped[reason] += 1
        else:
            self.lost[reason] += 1

    def fold_into(self, other: BindingCounters) -> None:
        """Add every count of this binding to ``other``."""
        other.packets_in += self.packets_in
        other.bytes_in += self.bytes_in
        other.packets_out += self.packets_out
        other.bytes_out += self.bytes_out
        other.heartbeats_in += self.heartbeats_in
        other.dropped.update(self.dropped)
        other.lost.update(self.lost)
        other.rejected.update(self.rejected)
        other.filtered.update(self.filtered)
        other.template_errors.update(self.template_errors)
        other.run_requests.update(self.run_requests)


#: Reads a buffer's (depth in messages, depth in bytes, packets in flight) when scraped.
DepthProbe = Callable[[], tuple[int, int, int]]

#: The series released bindings' counts fold into.
RELEASED: str = "(released)"


@final
class TransportMetrics(Collector):
    """All metrics of one process (``component`` is ``hub`` or ``connector``)."""

    def __init__(self, registry: CollectorRegistry, *, component: str) -> None:
        self.component = component
        self.bindings: dict[str, BindingCounters] = {}
        self.handshake_rejections: collections.Counter[str] = collections.Counter()
        self.restarts: collections.Counter[str] = collections.Counter()
        #: Supervised actors that failed (raised), by actor kind; every failure is also logged.
        self.failures: collections.Counter[str] = collections.Counter()
        self.reconnects = 0
        #: Streams that took a step over from a live stream of a lower connector generation.
        self.takeovers = 0
        #: Certificate reloads, by outcome (``ok``, ``failed``: the old pair stays in use).
        self.tls_reloads: collections.Counter[str] = collections.Counter()
        #: Connections and streams refused below the handshake (limits, timeouts, bad TLS),
        #: by reason.
        self.boundary_refusals: collections.Counter[str] = collections.Counter()
        #: Story lifecycle events: hooks delivered (``storyrun.ready``, ``steprun.ready``) and
        #: ``topology_terminated`` (every streaming step of a ready StoryRun disconnected).
        self.lifecycle: collections.Counter[str] = collections.Counter()
        #: Reads the number of streams open now (set by the owner of the streams).
        self.open_streams: Callable[[], int] = lambda: 0
        #: Reads how many control events (errors, link changes) could not be queued to an
        #: engram's Control stream (connector only; never counted as packet drops).
        self.control_events_dropped: Callable[[], int] = lambda: 0
        #: Reads the number of live bindings (hub only).
        self.live_bindings: Callable[[], int] | None = None
        #: Reads the packets waiting in fan-in join caches (hub only).
        self.join_parts_waiting: Callable[[], int] | None = None
        self.depth_probes: dict[str, DepthProbe] = {}
        registry.register(self)

    def binding(self, key: str) -> BindingCounters:
        """The counters of binding ``key``, created on first use."""
        counters = self.bindings.get(key)
        if counters is None:
            counters = self.bindings[key] = BindingCounters()
        return counters

    def counters_for(self, key: str, counters: BindingCounters) -> BindingCounters:
        """Where a late count for binding ``key`` goes: its ``counters`` while they are
        reported, the live series of that key, or else the ``(released)`` series."""
        current = self.bindings.get(key)
        if current is not None:
            return current
        del counters  # released: its counts were folded already
        return self.binding(RELEASED)

    def failure_hook(self, kind: str) -> Callable[[str, BaseException], None]:
        """A supervisor ``on_failure`` hook counting failures of actors of ``kind``."""

        def count(name: str, error: BaseException) -> None:
            self.failures[kind] += 1

        return count

    def release(self, key: str) -> None:
        """Forget binding ``key``'s series; its counts fold into the ``(released)`` series."""
        counters = self.bindings.pop(key, None)
        self.depth_probes.pop(key, None)
        if counters is not None:
            counters.fold_into(self.binding(RELEASED))

    def total_dropped(self) -> int:
        """Packets dropped by a declared policy across every binding."""
        return sum(sum(c.dropped.values()) for c in self.bindings.values())

    def total_lost(self) -> int:
        """Packets lost (not by a declared policy) across every binding."""
        return sum(sum(c.lost.values()) for c in self.bindings.values())

    def series(self) -> int:
        """How many binding-labelled series a scrape produces now (for soak reports)."""
        return len(self.bindings) + len(self.depth_probes)

    def describe(self) -> list[Metric]:
        """No static description: families are produced at collect time."""
        return []

    def collect(self) -> Iterator[Metric]:
        """Yield every ``bobravoz_*`` family from the current counters."""
        labels = ["component", "binding"]
        comp = self.component
        # Probes first: reading a binding's state also brings its written counts up to date.
        probed = {key: probe() for key, probe in sorted(self.depth_probes.items())}
        families = {
            name: CounterMetricFamily(f"bobravoz_{name}", doc, labels=labels)
            for name, doc in (
                ("packets_in", "Packets received from a binding's stream."),
                ("bytes_in", "Packet bytes received from a binding's stream."),
                ("packets_out", "Packets written to a binding's stream."),
                ("bytes_out", "Packet bytes written to a binding's stream."),
                ("heartbeats_in", "Heartbeat packets received (not counted as data)."),
            )
        }
        dropped = CounterMetricFamily(
            "bobravoz_packets_dropped",
            "Packets dropped because a declared drop policy asked for it, by reason.",
            labels=[*labels, "reason"],
        )
        lost = CounterMetricFamily(
            "bobravoz_packets_lost",
            "Packets the transport could not deliver and no policy declared, by reason.",
            labels=[*labels, "reason"],
        )
        rejected = CounterMetricFamily(
            "bobravoz_packets_rejected",
            "Packets refused at the boundary for breaking the wire contract, by reason.",
            labels=[*labels, "reason"],
        )
        filtered = CounterMetricFamily(
            "bobravoz_packets_filtered",
            "Packets a Story primitive decided not to deliver (if, rules, stop, joins, "
            "cancelPrevious), by reason: declared behaviour, not loss.",
            labels=[*labels, "reason"],
        )
        template_errors = CounterMetricFamily(
            "bobravoz_template_errors",
            "Template evaluations that failed (the packet was not delivered), by reason.",
            labels=[*labels, "reason"],
        )
        run_requests = CounterMetricFamily(
            "bobravoz_run_requests",
            "Run requests reported for the controllers (executeStory), by kind.",
            labels=[*labels, "kind"],
        )
        for key, counters in sorted(self.bindings.items()):
            for reason, count in sorted(counters.filtered.items()):
                filtered.add_metric([comp, key, reason], count)
            for reason, count in sorted(counters.template_errors.items()):
                template_errors.add_metric([comp, key, reason], count)
            for kind, count in sorted(counters.run_requests.items()):
                run_requests.add_metric([comp, key, kind], count)
            for name, family in families.items():
                family.add_metric([comp, key], getattr(counters, name))
            for reason, count in sorted(counters.dropped.items()):
                dropped.add_metric([comp, key, reason], count)
            for reason, count in sorted(counters.lost.items()):
                lost.add_metric([comp, key, reason], count)
            for reason, count in sorted(counters.rejected.items()):
                rejected.add_metric([comp, key, reason], count)
        yield from families.values()
        yield dropped
        yield lost
        yield rejected
        yield filtered
        yield template_errors
        yield run_requests
        lifecycle = CounterMetricFamily(
            "bobravoz_story_events",
            "Story lifecycle events: hooks delivered, topologies terminated.",
            labels=["component", "event"],
        )
        for event, count in sorted(self.lifecycle.items()):
            lifecycle.add_metric([comp, event], count)
        yield lifecycle
        depth = GaugeMetricFamily(
            "bobravoz_buffer_depth", "Packets waiting in a binding's buffer.", labels=labels
        )
        depth_bytes = GaugeMetricFamily(
            "bobravoz_buffer_depth_bytes", "Bytes waiting in a binding's buffer.", labels=labels
        )
        in_flight = GaugeMetricFamily(
            "bobravoz_packets_in_flight",
            "Packets taken from a binding's buffer and not yet written (or given back).",
            labels=labels,
        )
        for key, (messages, size, moving) in probed.items():
            depth.add_metric([comp, key], messages)
            depth_bytes.add_metric([comp, key], size)
            in_flight.add_metric([comp, key], moving)
        yield depth
        yield depth_bytes
        yield in_flight
        streams = GaugeMetricFamily(
            "bobravoz_open_streams", "Streams open right now.", labels=["component"]
        )
        streams.add_metric([comp], self.open_streams())
        yield streams
        if self.live_bindings is not None:
            live = GaugeMetricFamily(
                "bobravoz_live_bindings",
                "Bindings (buffers) alive right now.",
                labels=["component"],
            )
            live.add_metric([comp], self.live_bindings())
            yield live
        if self.join_parts_waiting is not None:
            waiting = GaugeMetricFamily(
                "bobravoz_join_parts_waiting",
                "Packets waiting in fan-in join caches for their other parts.",
                labels=["component"],
            )
            waiting.add_metric([comp], self.join_parts_waiting())
            yield waiting
        handshakes = CounterMetricFamily(
            "bobravoz_handshakes_rejected",
            "Streams refused at the handshake, by reason.",
            labels=["component", "reason"],
        )
        for reason, count in sorted(self.handshake_rejections.items()):
            handshakes.add_metric([comp, reason], count)
        yield handshakes
        restarts = CounterMetricFamily(
            "bobravoz_actor_restarts",
            "Supervised actors restarted after a failure, by actor kind.",
            labels=["component", "actor"],
        )
        for actor, count in sorted(self.restarts.items()):
            restarts.add_metric([comp, actor], count)
        yield restarts
        failures = CounterMetricFamily(
            "bobravoz_actor_failures",
            "Supervised actors that raised (restarted or not), by actor kind.",
            labels=["component", "actor"],
        )
        for actor, count in sorted(self.failures.items()):
            failures.add_metric([comp, actor], count)
        yield failures
        control = CounterMetricFamily(
            "bobravoz_control_events_dropped",
            "Control events (errors, link changes) an engram's Control stream could not take.",
            labels=["component"],
        )
        control.add_metric([comp], self.control_events_dropped())
        yield control
        reconnects = CounterMetricFamily(
            "bobravoz_upstream_reconnects",
            "Times a link to the hub (or peer) was re-established.",
            labels=["component"],
        )
        reconnects.add_metric([comp], self.reconnects)
        yield reconnects
        takeovers = CounterMetricFamily(
            "bobravoz_stream_takeovers",
            "Streams that replaced a live stream of the same step (a higher connector generation).",
            labels=["component"],
        )
        takeovers.add_metric([comp], self.takeovers)
        yield takeovers
        reloads = CounterMetricFamily(
            "bobravoz_tls_reloads",
            "Certificate files reloaded after a change, by outcome (ok, failed).",
            labels=["component", "outcome"],
        )
        for outcome, count in sorted(self.tls_reloads.items()):
            reloads.add_metric([comp, outcome], count)
        yield reloads
        refusals = CounterMetricFamily(
            "bobravoz_boundary_refusals",
            "Connections or streams refused at the boundary (limits, timeouts), by reason.",
            labels=["component", "reason"],
        )
        for reason, count in sorted(self.boundary_refusals.items()):
            refusals.add_metric([comp, reason], count)
        yield refusals


async def watch_tls(context: ReloadingContext, interval: float, metrics: TransportMetrics) -> None:
    """Reload ``context``'s files when they change, counting each outcome in ``metrics``."""

    def reloaded(_: ReloadingContext) -> None:
        metrics.tls_reloads["ok"] += 1

    def failed(_: Exception) -> None:
        metrics.tls_reloads["failed"] += 1

    await context.watch(interval, on_reload=reloaded, on_error=failed)
