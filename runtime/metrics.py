"""Prometheus metrics for hubs and connectors, counted as plain ints on the hot path.

Packet paths bump fields of :class:`BindingCounters` (no label lookups per packet); the
:class:`TransportMetrics` collector turns them into ``bobravoz_*`` families at scrape time, on
a registry the caller injects (never the global one).
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import final

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector


@final
@dataclass(slots=True)
class BindingCounters:
    """Running totals for one binding (``namespace/storyrun/step``)."""

    packets_in: int = 0
    bytes_in: int = 0
    packets_out: int = 0
    bytes_out: int = 0
    heartbeats_in: int = 0
    dropped: collections.Counter[str] = field(default_factory=collections.Counter)
    rejected: collections.Counter[str] = field(default_factory=collections.Counter)


#: Reads a buffer's (depth in messages, depth in bytes) when scraped.
DepthProbe = Callable[[], tuple[int, int]]


@final
class TransportMetrics(Collector):
    """All metrics of one process (``component`` is ``hub`` or ``connector``)."""

    def __init__(self, registry: CollectorRegistry, *, component: str) -> None:
        self.component = component
        self.bindings: dict[str, BindingCounters] = {}
        self.handshake_rejections: collections.Counter[str] = collections.Counter()
        self.restarts: collections.Counter[str] = collections.Counter()
        self.reconnects = 0
        self.open_streams = 0
        self.depth_probes: dict[str, DepthProbe] = {}
        registry.register(self)

    def binding(self, key: str) -> BindingCounters:
        """The counters of binding ``key``, created on first use."""
        counters = self.bindings.get(key)
        if counters is None:
            counters = self.bindings[key] = BindingCounters()
        return counters

    def total_dropped(self) -> int:
        """Packets dropped by policy across every binding."""
        return sum(sum(c.dropped.values()) for c in self.bindings.values())

    def describe(self) -> list[Metric]:
        """No static description: families are produced at collect time."""
        return []

    def collect(self) -> Iterator[Metric]:
        """Yield every ``bobravoz_*`` family from the current counters."""
        labels = ["component", "binding"]
        comp = self.component
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
            "Packets dropped by a declared policy or lost with a broken stream, by reason.",
            labels=[*labels, "reason"],
        )
        rejected = CounterMetricFamily(
            "bobravoz_packets_rejected",
            "Packets refused at the boundary for breaking the wire contract, by reason.",
            labels=[*labels, "reason"],
        )
        for key, counters in sorted(self.bindings.items()):
            for name, family in families.items():
                family.add_metric([comp, key], getattr(counters, name))
            for reason, count in sorted(counters.dropped.items()):
                dropped.add_metric([comp, key, reason], count)
            for reason, count in sorted(counters.rejected.items()):
                rejected.add_metric([comp, key, reason], count)
        yield from families.values()
        yield dropped
        yield rejected
        depth = GaugeMetricFamily(
            "bobravoz_buffer_depth", "Packets waiting in a binding's buffer.", labels=labels
        )
        depth_bytes = GaugeMetricFamily(
            "bobravoz_buffer_depth_bytes", "Bytes waiting in a binding's buffer.", labels=labels
        )
        for key, probe in sorted(self.depth_probes.items()):
            messages, size = probe()
            depth.add_metric([comp, key], messages)
            depth_bytes.add_metric([comp, key], size)
        yield depth
        yield depth_bytes
        streams = GaugeMetricFamily(
            "bobravoz_open_streams", "Streams open right now.", labels=["component"]
        )
        streams.add_metric([comp], self.open_streams)
        yield streams
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
        reconnects = CounterMetricFamily(
            "bobravoz_upstream_reconnects",
            "Times a link to the hub (or peer) was re-established.",
            labels=["component"],
        )
        reconnects.add_metric([comp], self.reconnects)
        yield reconnects
