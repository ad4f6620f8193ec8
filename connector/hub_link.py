"""The connector's upstream: one ``HubService.Process`` stream to the hub, kept alive.

:class:`HubLink` owns two bounded channels that outlive any one connection: the *outbox*
(engram packets waiting for the hub, as ``DataPacket`` bytes) and the *inbox* (hub packets
waiting for the engram, as ``DataResponse`` bytes). :meth:`HubLink.run` connects with the
binding headers, pumps both ways, and reconnects with exponential backoff and jitter when the
hub goes away; a refusal that retrying cannot fix (bad headers, unknown step) ends it.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, final

import trio

from bobravoz.connector.config import ConnectorConfig
from bobravoz.protocol.constants import FATAL_HUB_CODES, PROCESS_METHOD
from bobravoz.protocol.packets import is_heartbeat, split_process_message
from bobravoz.protocol.scan import (
    DATA_PACKET_LAYOUT,
    DATA_REQUEST_LAYOUT,
    HEARTBEAT,
    NO_PACKET,
    SLOW,
    retag,
    retag_table,
    scan_process,
)
from bobravoz.protocol.validation import validate_packet
from bobravoz.protocol.wire import PacketLayout, WireFormatError, convert_layout, encode_varint
from bobravoz.runtime.channel import BoundedChannel, ChannelLimits, DropPolicy
from bobravoz.runtime.grpc_bridge import ClientStream, ServerStream, open_grpc_channel
from bobravoz.runtime.metrics import BindingCounters, DepthProbe, TransportMetrics
from bobravoz.runtime.pump import (
    ResumePoint,
    StreamLedger,
    channel_to_stream,
    settle_stream,
    stream_to_channel,
)
from bobravoz.runtime.status import RemoteStatusError
from bobravoz.runtime.tls import ReloadingContext
from bobravoz.runtime.tracing import DISABLED, Tracing, traced_packet

log = logging.getLogger(__name__)

#: Tag translation of the hub's ``DataPacket`` to the engram's ``DataResponse`` layout.
_TO_RESPONSE: Final = retag_table(DATA_PACKET_LAYOUT, DATA_REQUEST_LAYOUT)
#: The hub bounds packet sizes; the link takes what the contract's field limits allow.
_ANY_SIZE: Final = 1 << 62

#: The one-byte varints, and the first bytes of longer ones.
_SMALL: Final = tuple(bytes((value,)) for value in range(128))
_HIGH: Final = tuple(bytes((value | 0x80,)) for value in range(128))


def wrap_packet(packet: bytes) -> bytes:
    """The ``ProcessRequest`` holding ``packet`` (``DataPacket`` bytes) as its ``packet``
    field: what ``wrap_process_message(packet)`` gives, with the length from tables."""
    size = len(packet)
    if size < 0x80:
        return b"\x0a" + _SMALL[size] + packet
    if size < 0x4000:
        return b"\x0a" + _HIGH[size & 0x7F] + _SMALL[size >> 7] + packet
    return b"\x0a" + encode_varint(size) + packet


#: Refusals that no retry can fix: the connector stops and reports them.
FATAL_CODES: Final = FATAL_HUB_CODES
#: Link events kept per Control stream that has not read them (the oldest are dropped).
FEED_DEPTH: Final = 8


@final
@dataclass(frozen=True, slots=True)
class LinkEvent:
    """A change of the hub link that Control streams report to the engram."""

    kind: str  # "ready" | "draining" | "cutover" | "error"
    reason: str
    message: str = ""


@final
class HubLink:
    """The supervised upstream link of one connector (see the module docstring)."""

    def __init__(
        self,
        config: ConnectorConfig,
        metrics: TransportMetrics,
        tls: ReloadingContext | None = None,
        tracing: Tracing = DISABLED,
    ) -> None:
        #: Client context of the link (mTLS) when the configuration asks for TLS.
        self.tls = tls
        #: The process's tracing: ``connector.send``/``connector.deliver`` spans.
        self.tracing = tracing
        self.config = config
        self.counters: BindingCounters = metrics.binding(config.identity.key)
        self._metrics = metrics
        self.outbox: BoundedChannel[bytes] = BoundedChannel(
            ChannelLimits(max_messages=config.outbox_messages, max_bytes=config.outbox_bytes),
            name=f"{config.identity.key}:outbox",
            on_drop=self._count_drop,
        )
        self.inbox: BoundedChannel[bytes] = BoundedChannel(
            ChannelLimits(max_messages=config.inbox_messages, max_bytes=config.inbox_bytes),
            name=f"{config.identity.key}:inbox",
            on_drop=self._count_drop,
        )
        self.up = False
        self.ever_up = False
        self._written_before = 0
        self._written_bytes_before = 0
        self.fatal: str | None = None
        self.changed = trio.Event()
        self._listeners: set[BoundedChannel[LinkEvent]] = set()
        #: The live upstream stream's ledger (None while disconnected), for in-flight counts.
        self._up_ledger: StreamLedger | None = None
        self.events_dropped = 0
        metrics.depth_probes[f"{config.identity.key}:outbox"] = self._depth(
            self.outbox, lambda: self._up_ledger
        )
        metrics.depth_probes[f"{config.identity.key}:inbox"] = self._depth(self.inbox, None)

    def _depth(
        self, channel: BoundedChannel[bytes], ledger: Callable[[], StreamLedger | None] | None
    ) -> DepthProbe:
        def probe() -> tuple[int, int, int]:
            if ledger is not None:
                self._refresh_written()
            stats = channel.statistics()
            live = ledger() if ledger is not None else None
            moving = stats.in_flight + (live.in_bridge() if live is not None else 0)
            return stats.depth, stats.depth_bytes, moving

        return probe

    def _count_drop(self, reason: str, item: bytes, size: int) -> None:
        self.counters.count_drop(reason)

    def subscribe(self) -> BoundedChannel[LinkEvent]:
        """A feed of link events for one Control stream: the newest :data:`FEED_DEPTH`
        undelivered events are kept (older ones dropped and counted)."""
        feed: BoundedChannel[LinkEvent] = BoundedChannel(
            ChannelLimits(max_messages=FEED_DEPTH, policy=DropPolicy.DROP_OLDEST),
            name=f"{self.config.identity.key}:events",
            on_drop=self._count_event_drop,
        )
        self._listeners.add(feed)
        return feed

    def _count_event_drop(self, reason: str, item: LinkEvent, size: int) -> None:
        self.events_dropped += 1

    def unsubscribe(self, feed: BoundedChannel[LinkEvent]) -> None:
        """Stop feeding ``feed``."""
        self._listeners.discard(feed)
        feed.close()

    def _publish(self, event: LinkEvent) -> None:
        for listener in list(self._listeners):
            try:
                listener.send_nowait(event, 1)
            except trio.ClosedResourceError:
                self._listeners.discard(listener)
        self.changed.set()
        self.changed = trio.Event()

    async def wait_up(self) -> None:
        """Return once the link is up; raise RuntimeError if it failed for good."""
        while not self.up:
            if self.fatal is not None:
                raise RuntimeError(self.fatal)
            await self.changed.wait()

    async def run(self) -> None:
        """Keep the link up until cancelled; return only after a fatal refusal (see ``fatal``)."""
        failures = 0
        backoff = self.config.reconnect_base
        limit = self.config.max_reconnects
        while True:
            try:
                try:
                    async with (
                        open_grpc_channel(
                            self.config.hub, tls=self.tls, server_name=self.config.hub_server_name
                        ) as channel,
                        channel.open_stream(
                            PROCESS_METHOD, self.config.identity.headers()
                        ) as stream,
                    ):
                        failures, backoff = 0, self.config.reconnect_base
                        await self._connected(stream)
                finally:
                    self._settle_up()  # the call is over: its ledger is final
                reason = "hub_disconnected"
            except RemoteStatusError as refusal:
                if refusal.code in FATAL_CODES:
                    self.fatal = f"hub refused the binding: {refusal.code.name}: {refusal.message}"
                    log.error("%s", self.fatal)
                    self._disconnected("hub_refused")
                    self._publish(LinkEvent("error", "hub_refused", self.fatal))
                    return
                reason = f"hub_status_{refusal.code.name.lower()}"
            except (trio.BrokenResourceError, OSError) as error:
                reason = "hub_unreachable"
                log.info("hub link to %s failed: %s", self.config.hub, error)
            self._disconnected(reason)
            failures += 1
            if 0 <= limit < failures:
                self.fatal = f"hub {self.config.hub} unreachable after {failures - 1} retries"
                self._publish(LinkEvent("error", "retries_exhausted", self.fatal))
                return
            await trio.sleep(backoff * random.uniform(1.0, 1.5))
            backoff = min(backoff * 2, self.config.reconnect_max)

    async def _connected(self, stream: ClientStream) -> None:
        first = not self.ever_up
        self.up = self.ever_up = True
        if not first:
            self._metrics.reconnects += 1
        log.info("hub link up to %s as %s", self.config.hub, self.config.identity.key)
        self._publish(
            LinkEvent("ready", "startup") if first else LinkEvent("cutover", "hub_reconnected")
        )
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._pump_up, stream)
            await self._pump_down(stream)
            nursery.cancel_scope.cancel()

    def _disconnected(self, reason: str) -> None:
        if self.up:
            self.up = False
            self._publish(LinkEvent("draining", reason))

    async def _pump_up(self, stream: ClientStream) -> None:
        """Outbox to hub through leases (settled by :meth:`_settle_up` when the call ends)."""
        ledger = self._up_ledger = StreamLedger(stream)
        await channel_to_stream(
            self.outbox,
            stream,
            ledger,
            encode=wrap_packet,
            after_batch=self._refresh_written,
        )

    def _refresh_written(self) -> None:
        """Copy the written counts (finished links plus the live one) into the counters."""
        ledger = self._up_ledger
        written, written_bytes = self._written_before, self._written_bytes_before
        if ledger is not None:
            written += ledger.stream.written
            written_bytes += ledger.stream.written_bytes
        self.counters.packets_out = written
        self.counters.bytes_out = written_bytes

    def _settle_up(self) -> None:
        """The upstream call is over: its unwritten backlog returns to the front of the
        outbox (the next link sends it first) and only what was taken for a write that never
        completed is counted lost (``link_broken``)."""
        ledger, self._up_ledger = self._up_ledger, None
        if ledger is None:
            return
        settle_stream(self.outbox, ledger, decode=lambda message: split_process_message(message)[0])
        unwritten = ledger.unwritten()
        if unwritten:
            self.counters.lost["link_broken"] += unwritten
            log.warning("%d packets taken for the hub were never written", unwritten)
        self._written_before += ledger.stream.written
        self._written_bytes_before += ledger.stream.written_bytes
        self._refresh_written()

    async def _pump_down(self, stream: ClientStream) -> None:
        """Hub to inbox (see :meth:`deliver_from`)."""
        await self.deliver_from(stream, self.counters)

    async def deliver_from(
        self, stream: ClientStream | ServerStream, counters: BindingCounters
    ) -> None:
        """Move ``Process`` messages from the hub (or, in P2P, from an upstream peer) into the
        inbox, converting ``DataPacket`` to the ``DataResponse`` layout as bytes; packets that
        break the contract are counted and skipped. Returns when the stream ends; what was
        received and not yet in the inbox when this is cancelled is counted lost.

        With tracing on, a packet carrying a ``traceparent`` takes the general path, gets a
        ``connector.deliver`` span and goes on with its ``traceparent`` rewritten to it."""
        tracing = self.tracing
        trace_keys = tracing.scan_keys
        span_attributes = {
            "step": self.config.identity.step,
            "storyrun": self.config.identity.storyrun,
        }

        def convert(raw: bytes) -> bytes | None:
            kind, start, end, _, _ = scan_process(raw, _ANY_SIZE, trace_keys)
            if kind == NO_PACKET:
                return None
            if kind != SLOW:  # valid, checked in one pass: only the tags change
                response = retag(raw, start, end, _TO_RESPONSE)
                if kind == HEARTBEAT:
                    counters.heartbeats_in += 1
                else:
                    counters.packets_in += 1
                    counters.bytes_in += len(response)
                return response
            try:
                packet, _flow = split_process_message(raw)
                if packet is None:
                    return None
                violation = validate_packet(packet, PacketLayout.DATA_PACKET)
                if violation is not None:
                    counters.rejected[violation.reason] += 1
                    return None
                response = convert_layout(
                    packet, PacketLayout.DATA_PACKET, PacketLayout.DATA_REQUEST
                )
            except WireFormatError:
                counters.rejected["malformed"] += 1
                return None
            if is_heartbeat(packet, PacketLayout.DATA_PACKET):
                counters.heartbeats_in += 1
            else:
                if trace_keys:
                    response = traced_packet(
                        tracing,
                        "connector.deliver",
                        response,
                        PacketLayout.DATA_REQUEST,
                        span_attributes,
                    )
                counters.packets_in += 1
                counters.bytes_in += len(response)
            return response

        try:
            await stream_to_channel(stream, self.inbox, convert, ResumePoint())
        finally:
            leftover = stream.withdraw_inbound()
            if leftover:
                counters.lost["link_closed"] += len(leftover)
