"""``TransportConnectorService`` for the one local engram: ``Data`` and ``Control`` streams.

``Data`` moves packets between the engram and the :class:`~bobravoz.connector.hub_link.HubLink`
as bytes (only the top-level tags are rewritten between layouts), validating each packet from
the engram at the boundary. ``Control`` tells the engram when the hub link is ready, answers
heartbeats, and reports failures as ``ERROR`` with a ``ControlError``.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Final, final

import trio

from bobravoz.connector.binding_status import Negotiated
from bobravoz.connector.hub_link import HubLink, LinkEvent
from bobravoz.protocol.constants import (
    CONTROL_METHOD,
    DATA_METHOD,
    HUB_PUSH_METHOD,
    PROCESS_METHOD,
)
from bobravoz.protocol.gen.transport.v1 import (
    ControlAction,
    ControlError,
    ControlRequest,
    ControlResponse,
)
from bobravoz.protocol.scan import (
    DATA_PACKET_LAYOUT,
    DATA_REQUEST_LAYOUT,
    SLOW,
    retag,
    retag_table,
    scan_packet,
)
from bobravoz.protocol.validation import validate_packet
from bobravoz.protocol.wire import PacketLayout, WireFormatError, convert_layout
from bobravoz.runtime.channel import BoundedChannel
from bobravoz.runtime.groups import lone_exception
from bobravoz.runtime.grpc_bridge import ServerStream
from bobravoz.runtime.handshake import (
    BindingIdentity,
    HandshakeError,
    check_handshake,
    check_identity,
    check_protocol,
)
from bobravoz.runtime.metrics import TransportMetrics
from bobravoz.runtime.pump import (
    ResumePoint,
    StreamLedger,
    channel_to_stream,
    settle_stream,
    stream_to_channel,
)
from bobravoz.runtime.status import RemoteStatusError, StatusCode
from bobravoz.runtime.supervisor import Restart, Supervisor
from bobravoz.runtime.tracing import traced_packet

log = logging.getLogger(__name__)

#: Tag translation of engram packets (``DataRequest``) to the hub's ``DataPacket`` layout.
_TO_PACKET: Final = retag_table(DATA_REQUEST_LAYOUT, DATA_PACKET_LAYOUT)

#: What the engram-facing listener serves when peers come over the mTLS listener.
LOCAL_METHODS: Final = (DATA_METHOD, CONTROL_METHOD, HUB_PUSH_METHOD)
#: Without TLS the one local listener also takes peers' Process streams.
METHODS: Final = (*LOCAL_METHODS, PROCESS_METHOD)

#: Canonical names of control actions (the Go SDK's strings).
ACTION_NAMES: Final = {
    ControlAction.NOOP: "noop",
    ControlAction.START: "start",
    ControlAction.STOP: "stop",
    ControlAction.START_UPSTREAM: "start-upstream",
    ControlAction.STOP_UPSTREAM: "stop-upstream",
    ControlAction.START_DOWNSTREAM: "start-downstream",
    ControlAction.STOP_DOWNSTREAM: "stop-downstream",
    ControlAction.HEARTBEAT: "heartbeat",
    ControlAction.CONNECTOR_READY: "connector.ready",
    ControlAction.CONNECTOR_CAPABILITIES: "connector.capabilities",
    ControlAction.HANDOFF_DRAINING: "handoff.draining",
    ControlAction.HANDOFF_CUTOVER: "handoff.cutover",
    ControlAction.HANDOFF_READY: "handoff.ready",
    ControlAction.ACK: "ack",
    ControlAction.ERROR: "error",
    ControlAction.CODEC_SELECT: "codec-select",
}


def directive_type(request: ControlRequest) -> str:
    """The directive's canonical type: ``custom_action`` if set, else the action's name."""
    custom = request.custom_action.strip()
    if custom:
        return custom.lower()
    return ACTION_NAMES.get(request.action, "")


def _now_ms() -> str:
    return str(time.time_ns() // 1_000_000)


def control_error(code: StatusCode, message: str, details: Mapping[str, str]) -> ControlResponse:
    """An ``ERROR`` response carrying a ``ControlError`` (message capped at 2048 chars)."""
    return ControlResponse(
        action=ControlAction.ERROR,
        metadata={"ts": _now_ms()},
        error=ControlError(code=int(code), message=message[:2048], details=dict(details)),
    )


def _event_response(event: LinkEvent) -> ControlResponse:
    if event.kind == "error":
        return control_error(StatusCode.UNAVAILABLE, event.message, {"reason": event.reason})
    action = {
        "ready": ControlAction.HANDOFF_READY,
        "draining": ControlAction.HANDOFF_DRAINING,
        "cutover": ControlAction.HANDOFF_CUTOVER,
    }[event.kind]
    return ControlResponse(
        action=action, metadata={"phase": event.kind, "reason": event.reason, "ts": _now_ms()}
    )


@final
class ConnectorService:
    """Serves the local engram's streams; each stream runs as a supervised actor that
    finishes its stream in ``finally`` (INTERNAL with a message when it dies of a bug)."""

    def __init__(self, link: HubLink, metrics: TransportMetrics, supervisor: Supervisor) -> None:
        self.link = link
        self.metrics = metrics
        self._supervisor = supervisor
        self._numbers = itertools.count(1)
        self._data: tuple[str, ServerStream] | None = None
        #: Set when the newest Data actor has given its backlog back (its successor waits).
        self._data_done = trio.Event()
        self._data_done.set()
        self._controls: set[ServerStream] = set()
        self._live: set[ServerStream] = set()
        #: Ledgers of Data streams that may still write (read live for in-flight counts).
        self._writing: set[StreamLedger] = set()
        #: Ledgers of settled Data streams, counted once their stream is over on the wire.
        self._settled: dict[ServerStream, StreamLedger] = {}
        #: Control events (errors, link changes) that could not be queued to an engram.
        self.control_events_dropped = 0
        #: Codecs seen from the engram, for the binding status (None: not reporting).
        self.negotiated: Negotiated | None = None
        metrics.open_streams = lambda: len(self._live)
        metrics.control_events_dropped = lambda: (
            self.control_events_dropped + self.link.events_dropped
        )
        inbox_key = f"{link.config.identity.key}:inbox"
        inbox = link.inbox

        def inbox_probe() -> tuple[int, int, int]:
            stats = inbox.statistics()
            moving = stats.in_flight + sum(ledger.in_bridge() for ledger in self._writing)
            return stats.depth, stats.depth_bytes, moving

        metrics.depth_probes[inbox_key] = inbox_probe

    def accept(self, stream: ServerStream) -> None:
        """Route a new local stream to its actor, or refuse it with a status."""
        if stream.method == HUB_PUSH_METHOD:
            stream.finish(StatusCode.UNIMPLEMENTED, "HubPush is not served by this connector")
            return
        try:
            check_protocol(stream.metadata)
        except HandshakeError as refusal:
            self.metrics.handshake_rejections[refusal.reason] += 1
            stream.finish(refusal.code, refusal.message)
            return
        number = next(self._numbers)
        if stream.method == PROCESS_METHOD:
            try:
                peer = check_handshake(stream.metadata)
                self._check_peer(stream, peer)
            except HandshakeError as refusal:
                self.metrics.handshake_rejections[refusal.reason] += 1
                stream.finish(refusal.code, refusal.message)
                return
            self._start(f"peer#{number}", stream, self._serve_peer, stream, peer.key)
        elif stream.method == DATA_METHOD:
            if self._data is not None:
                name, old = self._data
                # A newer Data stream replaces the old one: stop writing to it now; its
                # actor gives the backlog back to the inbox and finishes it with ABORTED.
                old.halt()
                old.finish(StatusCode.ABORTED, "replaced by a newer Data stream")
                self._supervisor.stop_child(name)
            name = f"data#{number}"
            self._data = (name, stream)
            previous, self._data_done = self._data_done, trio.Event()
            self._start(name, stream, self._serve_data, stream, previous, self._data_done)
        else:
            self._start(f"control#{number}", stream, self._serve_control, stream)

    async def drain(self, grace: float) -> bool:
        """Serve on, for at most ``grace`` seconds, until the engram's Data stream has ended
        (the engram finished or stopped, and half-closed) and everything it sent has left
        the outbox for the hub; True when both happened in time."""
        with trio.move_on_after(grace):
            while not self._data_done.is_set():
                await self._data_done.wait()  # a newer Data stream replaces the event
            await self.link.outbox.wait_empty()
            return True
        return False

    def _check_peer(self, stream: ServerStream, peer: BindingIdentity) -> None:
        """A peer's Process stream must come over mTLS when this connector speaks TLS, claim
        this connector's namespace, and carry a certificate of that namespace."""
        own = self.link.config.identity.namespace
        if self.link.config.tls and not stream.secure:
            raise HandshakeError(
                StatusCode.PERMISSION_DENIED,
                "plaintext_peer",
                "peer-to-peer streams need mTLS here (connect to BOBRAVOZ_P2P_LISTEN)",
            )
        if peer.namespace != own:
            raise HandshakeError(
                StatusCode.PERMISSION_DENIED,
                "namespace_mismatch",
                f"the stream claims namespace {peer.namespace!r}; this connector serves "
                f"namespace {own!r}",
            )
        check_identity(
            peer.namespace,
            secure=stream.secure,
            peer=stream.identity,
            mode=self.link.config.identity_mode,
        )

    def _start(
        self,
        name: str,
        stream: ServerStream,
        actor: Callable[..., Awaitable[None]],
        *args: object,
    ) -> None:
        self._live.add(stream)
        self._supervisor.start_child(
            name, self._finishing, stream, actor, *args, restart=Restart.TEMPORARY
        )

    async def _finishing(
        self, stream: ServerStream, actor: Callable[..., Awaitable[None]], *args: object
    ) -> None:
        """Run ``actor`` and finish ``stream`` whatever happens: OK when it returns, INTERNAL
        naming the error when it fails, UNAVAILABLE when the connector stops."""
        status, message = StatusCode.OK, ""
        try:
            await actor(*args)
        except Exception as error:
            cause = type(lone_exception(error)).__name__
            status, message = StatusCode.INTERNAL, f"connector actor failed: {cause}"
            raise
        except BaseException:
            status, message = StatusCode.UNAVAILABLE, "the connector is stopping"
            raise
        finally:
            self._live.discard(stream)
            stream.finish(status, message or None)
            ledger = self._settled.pop(stream, None)
            if ledger is not None:
                if stream.done.is_set():
                    self._count_unwritten(ledger)
                else:
                    # A write under way at the halt may still complete: count once it is over.
                    self._supervisor.start_child(
                        f"finalize#{next(self._numbers)}",
                        self._count_when_done,
                        ledger,
                        restart=Restart.TEMPORARY,
                    )

    async def _count_when_done(self, ledger: StreamLedger) -> None:
        stream = ledger.stream
        assert isinstance(stream, ServerStream)
        try:
            await stream.wait_done()
        finally:
            self._count_unwritten(ledger)

    def _count_unwritten(self, ledger: StreamLedger) -> None:
        self._writing.discard(ledger)
        unwritten = ledger.unwritten()
        if unwritten:
            self.link.counters.lost["engram_stream_broken"] += unwritten
            log.warning("%d packets for the engram were never written", unwritten)

    def broadcast_error(self, code: StatusCode, message: str, details: Mapping[str, str]) -> None:
        """Queue an ``ERROR`` on every open Control stream (best effort, never blocks); one
        that cannot be queued is counted in ``control_events_dropped`` (not a packet drop)."""
        payload = bytes(control_error(code, message, details))
        for control in list(self._controls):
            try:
                control.send_nowait(payload)
            except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
                self.control_events_dropped += 1

    async def _serve_data(
        self, stream: ServerStream, previous: trio.Event, done: trio.Event
    ) -> None:
        try:
            # The replaced Data actor first gives its backlog back, so order is kept.
            await previous.wait()
            stream.accept()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._deliver_to_engram, stream)
                await self._take_from_engram(stream)
                # The engram half-closed: its handler is done, so end the call cleanly.
                nursery.cancel_scope.cancel()
        finally:
            if self._data is not None and self._data[1] is stream:
                self._data = None
            done.set()

    async def _take_from_engram(self, stream: ServerStream) -> None:
        counters = self.link.counters
        broadcast = self.broadcast_error
        # With tracing on, packets carrying a traceparent take the general path below, which
        # records their `connector.send` span and rewrites the traceparent to it.
        tracing = self.link.tracing
        trace_keys = tracing.scan_keys
        identity = self.link.config.identity
        span_attributes = {"step": identity.step, "storyrun": identity.storyrun}

        def accept_packet(raw: bytes) -> bytes | None:
            negotiated = self.negotiated
            if negotiated is not None and negotiated.binary is None:
                negotiated.observe(raw, PacketLayout.DATA_REQUEST)
            kind, _, _ = scan_packet(raw, 0, len(raw), DATA_REQUEST_LAYOUT, trace_keys)
            if kind != SLOW:  # valid, checked in one pass: only the tags change
                return retag(raw, 0, len(raw), _TO_PACKET)
            violation = validate_packet(raw, PacketLayout.DATA_REQUEST)
            if violation is not None:
                counters.rejected[violation.reason] += 1
                broadcast(
                    StatusCode.INVALID_ARGUMENT,
                    f"packet rejected: {violation.field}: {violation.message}",
                    {"field": violation.field, "reason": violation.reason},
                )
                return None
            try:
                packet = convert_layout(raw, PacketLayout.DATA_REQUEST, PacketLayout.DATA_PACKET)
            except WireFormatError:
                counters.rejected["malformed"] += 1
                return None
            if trace_keys:
                packet = traced_packet(
                    tracing, "connector.send", packet, PacketLayout.DATA_PACKET, span_attributes
                )
            return packet

        try:
            await stream_to_channel(stream, self.link.outbox, accept_packet, ResumePoint())
        finally:
            leftover = stream.withdraw_inbound()
            if leftover:
                counters.lost["engram_stream_closed"] += len(leftover)

    async def _deliver_to_engram(self, stream: ServerStream) -> None:
        """Inbox to the engram through leases; when the Data stream ends, its unwritten
        backlog returns to the front of the inbox for the engram's next Data stream."""
        ledger = StreamLedger(stream)
        self._writing.add(ledger)
        try:
            await channel_to_stream(self.link.inbox, stream, ledger)
        finally:
            settle_stream(self.link.inbox, ledger)
            self._settled[stream] = ledger  # unwritten is counted when the stream is over

    async def _serve_peer(self, stream: ServerStream, peer: str) -> None:
        """Peer-to-peer: an upstream step's connector sends its packets straight here (the
        same ``Process`` stream a hub serves); they go to this engram like hub packets."""
        stream.accept()
        await self.link.deliver_from(stream, self.metrics.binding(f"{peer}->p2p"))

    async def _serve_control(self, stream: ServerStream) -> None:
        stream.accept()
        feed = self.link.subscribe()
        self._controls.add(stream)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._announce, stream, feed)
                await self._answer(stream)
                nursery.cancel_scope.cancel()
        finally:
            self._controls.discard(stream)
            self.link.unsubscribe(feed)

    async def _announce(self, stream: ServerStream, feed: BoundedChannel[LinkEvent]) -> None:
        """Send CONNECTOR_READY once the hub link is up, then every later link change."""
        try:
            with trio.fail_after(self.link.config.message_timeout):
                await self.link.wait_up()
        except (trio.TooSlowError, RuntimeError) as error:
            reason = "hub_refused" if self.link.fatal else "hub_unavailable"
            text = self.link.fatal or f"hub {self.link.config.hub} not reachable: {error}"
            await stream.send(
                bytes(control_error(StatusCode.UNAVAILABLE, text, {"reason": reason}))
            )
        else:
            ready = ControlResponse(
                action=ControlAction.CONNECTOR_READY,
                metadata={"startup.capabilities": "none", "ts": _now_ms()},
            )
            await stream.send(bytes(ready))
        while True:
            try:
                event = await feed.receive()
            except (trio.EndOfChannel, trio.ClosedResourceError):
                return
            if event.kind == "ready":
                continue
            await stream.send(bytes(_event_response(event)))

    async def _answer(self, stream: ServerStream) -> None:
        while True:
            try:
                batch = await stream.receive_batch()
            except (trio.EndOfChannel, trio.BrokenResourceError, RemoteStatusError):
                return
            for raw in batch:
                try:
                    request = ControlRequest().parse(raw)
                except Exception:  # noqa: BLE001 - any decode failure is a malformed message
                    await stream.send(
                        bytes(
                            control_error(
                                StatusCode.INVALID_ARGUMENT, "malformed ControlRequest", {}
                            )
                        )
                    )
                    continue
                reply = self._reply(request)
                if reply is not None:
                    await stream.send(bytes(reply))

    def _reply(self, request: ControlRequest) -> ControlResponse | None:
        kind = directive_type(request)
        if kind in {"ack", "downstream.delivered"}:
            return None
        metadata = {"received": kind or "unknown"}
        if kind == "heartbeat":
            metadata.update(handled="true", status="alive")
        elif not kind or kind == "noop":
            metadata.update(handled="false", reason="empty")
        elif kind == "codec-select":
            metadata.update(handled="false", reason="codec selection not implemented")
        else:
            metadata.update(handled="false", reason="unknown")
        return ControlResponse(action=ControlAction.ACK, metadata=metadata)
