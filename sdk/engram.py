"""Running an engram's stream handler against its connector.

An engram author writes one handler::

    async def handle(stream: StreamContext) -> None:
        async for packet in stream.packets():
            await stream.emit(Packet(binary=packet.binary.upper()))

and calls :func:`run_engram` (or ``bobravoz engram module:handle``). The SDK finds the
connector from ``BUBU_TRANSPORT_BINDING``, waits for ``CONNECTOR_READY`` on the Control stream,
opens the Data stream, supervises the handler (restarting it on failure, by policy), sends
heartbeats, and reconnects with backoff when the connector goes away. The handler's inbox and
outbox outlive any one connection.

Stopping (SIGTERM or SIGINT, as Kubernetes and a terminal send them) is graceful: the first
signal sets :attr:`StreamContext.stop_requested` (a source stops producing and returns; a
handler reading :meth:`StreamContext.packets` goes on until its upstream ends); a handler still
running ``BOBRAVOZ_STOP_GRACE`` (10 s) later is cancelled; then everything it emitted is written
and the stream ended as when it returns by itself. A second signal stops at once (exit 130);
what was then not written is counted as ``unsent``.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import math
import os
import random
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Protocol, final

import trio

from bobravoz.protocol.constants import (
    CONTROL_METHOD,
    DATA_METHOD,
    FATAL_CONNECTOR_CODES,
    HEARTBEAT_KEY,
)
from bobravoz.protocol.gen.transport.v1 import ControlAction, ControlRequest, ControlResponse
from bobravoz.runtime.binding_envelope import BindingError, parse_binding
from bobravoz.runtime.chunks import MAX_CHUNK_BYTES, ChunkError, is_chunked
from bobravoz.runtime.endpoints import Endpoint, parse_endpoint
from bobravoz.runtime.envconfig import ConfigError, EnvReader
from bobravoz.runtime.errors import SupervisorEscalation
from bobravoz.runtime.groups import lone_exception
from bobravoz.runtime.grpc_bridge import ClientStream, open_grpc_channel, open_grpc_loop
from bobravoz.runtime.handshake import PROTOCOL_HEADER, PROTOCOL_VERSION
from bobravoz.runtime.heap import settle_heap
from bobravoz.runtime.logs import configure_logging
from bobravoz.runtime.shutdown import TwoStageStop
from bobravoz.runtime.status import RemoteStatusError
from bobravoz.runtime.supervisor import Restart, RestartPolicy, open_supervisor
from bobravoz.runtime.tls import security_mode, server_auth_context
from bobravoz.runtime.tracing import (
    DISABLED,
    TRACEPARENT_KEY,
    Tracing,
    configure_tracing,
    inject_span,
    start_hop,
)
from bobravoz.sdk.chunking import ChunkJoiner, split_binary
from bobravoz.sdk.losses import (
    CHUNK_SET_EXPIRED,
    CHUNK_SET_INCOMPLETE,
    UNDECODABLE,
    UNHANDLED,
    UNSENT,
    SdkLosses,
)
from bobravoz.sdk.packet import Packet, decode_packet, encode_packet
from bobravoz.sdk.report import report

if TYPE_CHECKING:
    from opentelemetry.trace import Span

log = logging.getLogger(__name__)

BINDING_HEADER: Final = "bubu.transport.binding"
#: Binary payloads above this many bytes are sent as chunks (``BOBRAVOZ_CHUNK_BYTES``).
DEFAULT_CHUNK_BYTES: Final = 1024 * 1024
#: Refusals from the connector that no retry fixes.
FATAL_CODES: Final = FATAL_CONNECTOR_CODES


@final
class EngramError(Exception):
    """The engram cannot run: bad configuration, a fatal refusal, or retries exhausted."""


@final
@dataclass(frozen=True, slots=True)
class EngramSettings:
    """How an engram reaches its connector; :func:`load_settings` reads it from the environment."""

    connector: Endpoint
    binding_reference: str = ""
    step: str = ""
    storyrun: str = ""
    namespace: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    channel_buffer: int = 16
    message_timeout: float = 30.0
    data_heartbeat: float = 10.0
    control_heartbeat: float = 30.0
    reconnect_base: float = 0.5
    reconnect_max: float = 30.0
    #: Reconnect attempts after a lost connection; negative retries forever.
    max_retries: int = 10
    restart: RestartPolicy = field(default_factory=RestartPolicy)
    #: TLS toward the connector: only when it is not on loopback or a unix socket (then TLS
    #: 1.3, the server verified against ``ca_file`` or the system's trust store).
    tls: bool = False
    ca_file: str | None = None
    #: A binary payload larger than this is sent as chunks of at most this size (and chunks
    #: received are joined before the handler sees them).
    chunk_bytes: int = DEFAULT_CHUNK_BYTES
    #: Seconds a handler has to return once a stop was requested (then it is cancelled).
    stop_grace: float = 10.0


def load_settings(environ: Mapping[str, str]) -> EngramSettings:
    """Settings from ``environ`` (names in the README); raise ConfigError naming the variable."""
    env = EnvReader(environ)
    security_mode(env)  # only "" or "tls"; the rule below is the same for both
    try:
        binding = parse_binding(env.text("BUBU_TRANSPORT_BINDING"))
    except BindingError as error:
        raise ConfigError(f"BUBU_TRANSPORT_BINDING: {error}") from None
    try:
        connector = parse_endpoint(binding.info.endpoint)
    except ValueError as error:
        raise ConfigError(f"BUBU_TRANSPORT_BINDING endpoint: {error}") from None
    raw_config = env.optional("BUBU_STEP_CONFIG") or "{}"
    try:
        config = json.loads(raw_config)
    except (ValueError, RecursionError) as error:
        raise ConfigError(f"BUBU_STEP_CONFIG is not JSON: {error}") from None
    if not isinstance(config, dict):
        raise ConfigError("BUBU_STEP_CONFIG must be a JSON object")
    timeout = env.duration("BUBU_GRPC_MESSAGE_TIMEOUT", 30.0)
    return EngramSettings(
        connector=connector,
        binding_reference=binding.reference,
        step=env.text("BUBU_STEP_NAME", ""),
        storyrun=env.text("BUBU_STORYRUN_ID", ""),
        namespace=env.text("BUBU_POD_NAMESPACE", binding.namespace),
        config=config,
        channel_buffer=env.integer("BUBU_GRPC_CHANNEL_BUFFER_SIZE", 16, minimum=1),
        message_timeout=timeout,
        data_heartbeat=min(env.duration("BUBU_GRPC_HEARTBEAT_INTERVAL", 10.0), timeout * 0.9),
        control_heartbeat=env.duration("BUBU_TRANSPORT_HEARTBEAT_INTERVAL", 30.0),
        reconnect_base=env.duration("BUBU_GRPC_RECONNECT_BASE_BACKOFF", 0.5) or 1.0,
        reconnect_max=env.duration("BUBU_GRPC_RECONNECT_MAX_BACKOFF", 30.0),
        max_retries=env.integer("BUBU_GRPC_RECONNECT_MAX_RETRIES", 10, minimum=-(2**31)),
        tls=not connector.is_local,
        ca_file=env.optional("BUBU_GRPC_CA_FILE"),
        chunk_bytes=env.integer(
            "BOBRAVOZ_CHUNK_BYTES", DEFAULT_CHUNK_BYTES, minimum=1024, maximum=MAX_CHUNK_BYTES
        ),
        stop_grace=env.duration("BOBRAVOZ_STOP_GRACE", 10.0),
    )


class PacketSender(Protocol):
    """Where a handler's packets go (a trio memory channel's send end fits)."""

    async def send(self, packet: Packet, /) -> None:
        """Take ``packet``; waits while the outgoing buffer is full."""


@final
class StreamContext:
    """What a handler is given: its inbound packets, :meth:`emit`, its config and identity.

    With tracing on (``tracing``), :meth:`emit` records an ``sdk.emit`` span and
    :meth:`packets` an ``sdk.handle`` span per packet (see each)."""

    def __init__(
        self,
        *,
        inbox: trio.MemoryReceiveChannel[Packet],
        outbox: PacketSender,
        config: Mapping[str, Any],
        step: str = "",
        storyrun: str = "",
        namespace: str = "",
        tracing: Tracing = DISABLED,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        losses: SdkLosses | None = None,
    ) -> None:
        self._inbox = inbox
        self._chunk_bytes = chunk_bytes
        #: Joins chunked payloads back into one packet before the handler sees them.
        self._joiner = ChunkJoiner()
        #: What the SDK lost, by reason (shared with the engram's session): here, chunk sets
        #: that cannot be joined or were still missing chunks when no more could come.
        self.losses = SdkLosses() if losses is None else losses
        #: The stream id of this engram's chunk sets (a chunk set needs one).
        self._chunk_stream = f"{step or 'engram'}-{uuid.uuid4().hex[:12]}"
        self._outbox = outbox
        self.config: Mapping[str, Any] = config
        self.step = step
        self.storyrun = storyrun
        self.namespace = namespace
        self._tracing = tracing
        self._span_attributes = {"step": step, "storyrun": storyrun}
        #: The ``sdk.handle`` span of the packet the handler holds now (tracing on).
        self._handling: Span | None = None
        self._stop_requested = trio.Event()

    @property
    def stop_requested(self) -> bool:
        """True once the engram was asked to stop (its first SIGTERM or SIGINT): a handler
        that produces on its own (a source) should stop producing, emit what ends its
        stream, and return. A handler reading :meth:`packets` may go on until its upstream
        ends. A handler still running ``BOBRAVOZ_STOP_GRACE`` later is cancelled."""
        return self._stop_requested.is_set()

    async def wait_stop_requested(self) -> None:
        """Return once :attr:`stop_requested` is true (at once when it already is)."""
        await self._stop_requested.wait()

    def request_stop(self) -> None:
        """Set :attr:`stop_requested` (the SDK does at the first signal; a test may too)."""
        self._stop_requested.set()

    async def packets(self) -> AsyncIterator[Packet]:
        """Inbound data packets in arrival order, until the upstream ends (heartbeats skipped).

        With tracing on, a packet carrying a sampled trace context gets an ``sdk.handle`` span
        from when the handler takes it until it asks for the next one (or returns); its
        metadata's ``traceparent`` is that span, and packets emitted meanwhile are its
        children.

        Each step is a cancellation point; it yields to other tasks when it waits for the
        next packet, so packets already waiting are taken one after the other (at most the
        inbox's capacity) and what the handler emits for them goes out together."""
        inbox = self._inbox
        try:
            while True:
                self._end_handling()
                await trio.lowlevel.checkpoint_if_cancelled()
                try:
                    packet = inbox.receive_nowait()
                except trio.WouldBlock:
                    try:
                        packet = await inbox.receive()
                    except (trio.EndOfChannel, trio.ClosedResourceError):
                        self.drop_incomplete_chunk_sets()
                        return
                except (trio.EndOfChannel, trio.ClosedResourceError):
                    self.drop_incomplete_chunk_sets()
                    return
                if is_chunked(packet.envelope):
                    joined = self._join(packet)
                    if joined is None:
                        continue  # more chunks of this payload to come, or counted lost
                    packet = joined
                if self._tracing.enabled:
                    self._handling = start_hop(
                        self._tracing, "sdk.handle", packet.metadata, self._span_attributes
                    )
                yield packet
        finally:
            self._end_handling()

    def _join(self, packet: Packet) -> Packet | None:
        """The whole packet ``packet`` completes, else None; a chunk the joiner refuses and
        the sets it let expire are counted in :attr:`losses`."""
        joiner = self._joiner
        expired = joiner.counts["expired"]
        try:
            joined = joiner.add(packet)
        except ValueError as error:  # ChunkError, with its reason
            reason = error.reason if isinstance(error, ChunkError) else "invalid"
            self.losses.count(f"chunk_{reason}", f"a chunk from upstream: {error}")
            joined = None
        self.losses.count(
            CHUNK_SET_EXPIRED,
            "chunked payloads stopped receiving chunks",
            joiner.counts["expired"] - expired,
        )
        return joined

    def drop_incomplete_chunk_sets(self) -> None:
        """No more chunks can come (the upstream ended, or the engram is finishing): every
        payload still missing chunks is dropped and counted in :attr:`losses`."""
        self.losses.count(
            CHUNK_SET_INCOMPLETE,
            "chunked payloads were still missing chunks when no more could come",
            self._joiner.drop_incomplete(),
        )

    def _end_handling(self) -> None:
        span, self._handling = self._handling, None
        if span is not None:
            span.end()

    async def emit(self, packet: Packet) -> None:
        """Send ``packet`` downstream; waits while the outgoing buffer is full (backpressure).

        A binary payload above ``BOBRAVOZ_CHUNK_BYTES`` (default 1 MiB, at most 64 MiB in
        all) goes as a chunk set the receiving engram's SDK joins again; each chunk carries
        the packet's metadata, payload and inputs.

        With tracing on, an ``sdk.emit`` span covers the hand-over: the child of the trace
        context in the packet's metadata, else of the packet being handled (``sdk.handle``),
        else the root of a new trace (sampled by ``observability.tracing``). What is sent is
        a copy of ``packet`` whose metadata carries the span's ``traceparent``; ``packet``
        itself is not changed."""
        if (
            packet.binary is not None
            and len(packet.binary) > self._chunk_bytes
            and not is_chunked(packet.envelope)
        ):
            for chunk in split_binary(
                packet.binary,
                chunk_size=self._chunk_bytes,
                stream_id=self._chunk_stream,
                mime_type=packet.mime_type,
                metadata=packet.metadata,
            ):
                chunk.payload, chunk.inputs = packet.payload, packet.inputs
                chunk.timestamp_ms = packet.timestamp_ms
                await self._emit_one(chunk)
            return
        await self._emit_one(packet)

    async def _emit_one(self, packet: Packet) -> None:
        tracing = self._tracing
        if not tracing.enabled:
            await self._outbox.send(packet)
            return
        metadata = dict(packet.metadata)
        handling = self._handling
        if handling is not None and TRACEPARENT_KEY not in metadata:
            inject_span(tracing, handling, metadata)
        span = start_hop(tracing, "sdk.emit", metadata, self._span_attributes, root=True)
        if span is None:
            await self._outbox.send(packet)
            return
        try:
            await self._outbox.send(dataclasses.replace(packet, metadata=metadata))
        finally:
            span.end()


#: The one function an engram author writes.
Handler = Callable[[StreamContext], Awaitable[None]]


@final
class _Outbox:
    """The handler's packets on their way to the Data stream, encoded as they are taken.

    :meth:`send` appends a packet to ``unsent`` (at most ``capacity`` of them; it waits for
    room) and wakes the connection's :func:`_pump_out`, which runs once the handler yields
    and queues everything that waits on the Data stream in one go (written at once, in one
    socket write, when the stream's writer is idle). A packet :meth:`send` returned for is
    in ``unsent`` or queued on a Data stream, whose unwritten backlog goes back to
    ``unsent`` when the stream ends (:func:`_settle_data`).
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        #: Encoded packets taken from the handler and not yet queued on a Data stream, oldest
        #: first (a broken connection's unwritten backlog returns here too).
        self.unsent: collections.deque[bytes] = collections.deque()
        #: Packets queued on Data streams so far.
        self.queued = 0
        #: When packets were last queued (trio time; the heartbeat counts idleness from it).
        self.last_queued = 0.0
        #: Set once the handler is done: nothing more will be sent.
        self.closed = False
        self._pump_lot = trio.lowlevel.ParkingLot()
        self._room_lot = trio.lowlevel.ParkingLot()

    async def send(self, packet: Packet) -> None:
        """Take ``packet`` (see the class); waits while ``capacity`` packets are unsent.
        Cancel-atomic: cancelled, it took nothing. Raises ``trio.ClosedResourceError``
        after :meth:`close`.

        A cancellation point; it yields to other tasks only when it waits for room, so what
        a handler emits before it next yields goes out together."""
        await trio.lowlevel.checkpoint_if_cancelled()
        if self.closed:
            raise trio.ClosedResourceError("the handler's output was closed")
        raw = encode_packet(packet)
        unsent = self.unsent
        while len(unsent) >= self.capacity:
            await self._room_lot.park()
        unsent.append(raw)
        if len(unsent) == 1:
            self._pump_lot.unpark_all()

    def close(self) -> None:
        """The handler is done: the pump returns once ``unsent`` is drained."""
        self.closed = True
        self._pump_lot.unpark_all()

    async def wait_unsent(self) -> None:
        """Wait until a packet joins ``unsent`` or the outbox closes."""
        if not self.unsent and not self.closed:
            await self._pump_lot.park()

    def taken(self, count: int) -> None:
        """The oldest ``count`` packets of ``unsent`` were queued on the Data stream."""
        if count:
            unsent = self.unsent
            for _ in range(count):
                unsent.popleft()
            self.queued += count
            self.last_queued = trio.current_time()
            self._room_lot.unpark_all()


@final
class _Session:
    """State shared by the connection attempts of one engram run."""

    def __init__(self, settings: EngramSettings, tracing: Tracing = DISABLED) -> None:
        self.settings = settings
        self.tracing = tracing
        self.inbox_send, self.inbox_receive = trio.open_memory_channel[Packet](
            settings.channel_buffer
        )
        self.outbox = _Outbox(settings.channel_buffer)
        #: Encoded packets taken from the handler and not yet queued on a Data stream, oldest
        #: first (a broken connection's unwritten backlog returns here too).
        self.unsent = self.outbox.unsent
        #: Packets received from the connector and not yet handed to the handler.
        self.received: collections.deque[Packet] = collections.deque()
        #: Set once the first connection is ready: the handler starts then.
        self.ready = trio.Event()
        #: What the SDK lost, coming in or going out, by reason (reported at the end).
        self.losses = SdkLosses()

    def context(self) -> StreamContext:
        settings = self.settings
        return StreamContext(
            inbox=self.inbox_receive,
            outbox=self.outbox,
            config=settings.config,
            step=settings.step,
            storyrun=settings.storyrun,
            namespace=settings.namespace,
            tracing=self.tracing,
            chunk_bytes=settings.chunk_bytes,
            losses=self.losses,
        )


async def _wait_ready(control: ClientStream, limit: float) -> None:
    """Read Control responses until ``CONNECTOR_READY``; an ``ERROR`` first is fatal."""
    with trio.fail_after(limit):
        while True:
            for raw in await control.receive_batch():
                response = ControlResponse.parse(raw)
                if response.action == ControlAction.CONNECTOR_READY:
                    return
                if response.action == ControlAction.ERROR:
                    message = response.error.message if response.error else "connector error"
                    raise EngramError(f"connector reported an error before ready: {message}")


async def _control_loop(control: ClientStream, interval: float) -> None:
    """Send heartbeats and log what the connector reports."""

    async def heartbeats() -> None:
        while True:
            await trio.sleep(interval)
            beat = ControlRequest(
                action=ControlAction.HEARTBEAT, metadata={"ts": str(time.time_ns() // 1_000_000)}
            )
            await control.send(bytes(beat))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(heartbeats)
        while True:
            try:
                batch = await control.receive_batch()
            except (trio.EndOfChannel, trio.BrokenResourceError, RemoteStatusError):
                nursery.cancel_scope.cancel()
                return
            for raw in batch:
                response = ControlResponse.parse(raw)
                if response.action == ControlAction.ERROR and response.error is not None:
                    log.warning(
                        "connector error %d: %s", response.error.code, response.error.message
                    )
                elif response.action != ControlAction.ACK:
                    log.info("connector says %s %s", response.action.name, dict(response.metadata))


def _inbound_packet(raw: bytes, losses: SdkLosses) -> Packet | None:
    """The data packet in ``raw`` from the connector; None for a heartbeat or an undecodable
    one (counted in ``losses``)."""
    try:
        packet = decode_packet(raw)
    except ValueError as error:
        losses.count(UNDECODABLE, f"a packet from the connector does not decode: {error}")
        return None
    return None if packet.is_heartbeat else packet


async def _pump_in(data: ClientStream, session: _Session) -> None:
    """Connector to handler: decode, drop heartbeats, keep order. Returns at end of stream.

    While the pump waits with nothing held and nothing queued in the bridge, the Data
    stream's read callback decodes what arrives and hands it to the handler's inbox itself
    (no task switch), up to the first packet the full inbox cannot take; the rest waits in
    the bridge for the pump, which hands it on in order. Received packets wait in
    ``session.received`` until the handler's inbox took them, so a cancelled pump (or a
    broken connection) loses none: the next connection delivers them first.
    """
    received = session.received
    inbox = session.inbox_send
    #: Whether the read callback may hand packets on: nothing older waits anywhere.
    handing = False

    def hand_on(messages: list[Any]) -> int:
        nonlocal handing
        if not handing:
            return 0
        for index, raw in enumerate(messages):
            packet = _inbound_packet(raw, session.losses)
            if packet is None:
                continue
            try:
                inbox.send_nowait(packet)
            except (trio.WouldBlock, trio.ClosedResourceError):
                handing = False  # this one and the rest wait in the bridge for the pump
                return index
        return len(messages)

    data.sink = hand_on
    try:
        while True:
            while received:
                await inbox.send(received[0])
                received.popleft()
            handing = not data.inbound_depth()
            try:
                batch = await data.receive_batch()
            except trio.EndOfChannel:
                return
            finally:
                handing = False
            for raw in batch:
                packet = _inbound_packet(raw, session.losses)
                if packet is not None:
                    received.append(packet)
    finally:
        if data.sink is hand_on:
            data.sink = None


async def _pump_out(data: ClientStream, session: _Session) -> None:
    """Handler to connector, with a heartbeat after each idle interval. Returns when drained.

    Packets leave ``session.unsent`` only once the Data stream queued them (all that fit
    at once, the rest all or nothing), so none is sent twice or lost on cancellation.
    """
    heartbeat = encode_packet(Packet(metadata={HEARTBEAT_KEY: "true"}))
    data.uncounted = heartbeat
    outbox = session.outbox
    unsent = outbox.unsent
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_heartbeats, data, outbox, session.settings.data_heartbeat, heartbeat)
        while True:
            if not unsent:
                if outbox.closed:
                    break
                await outbox.wait_unsent()
                continue
            batch = list(unsent)
            queued = data.offer_run_nowait(batch)
            outbox.taken(queued)
            if queued < len(batch):
                rest = batch[queued:]
                await data.send_batch(rest)  # waits for room (or meets the stream's end)
                outbox.taken(len(rest))
        nursery.cancel_scope.cancel()


async def _heartbeats(data: ClientStream, outbox: _Outbox, interval: float, beat: bytes) -> None:
    """Send ``beat`` on ``data`` once ``interval`` passed since packets or the last beat
    were queued (none while packets wait for the stream: the pump is busy with them)."""
    last_beat = trio.current_time()
    while True:
        due = max(last_beat, outbox.last_queued) + interval
        if trio.current_time() < due:
            await trio.sleep_until(due)
            continue
        if not outbox.unsent:
            await data.send(beat)
        last_beat = trio.current_time()


def _settle_data(data: ClientStream, session: _Session) -> None:
    """The Data stream is over: its unwritten backlog goes back in front of ``unsent``, and
    what it received that the handler has not taken yet joins ``received`` (in order)."""
    marker = data.uncounted
    backlog = [message for message in data.withdraw() if message is not marker]
    session.unsent.extendleft(reversed(backlog))
    for raw in data.withdraw_inbound():
        packet = _inbound_packet(raw, session.losses)
        if packet is not None:
            session.received.append(packet)


async def _run_pumps(data: ClientStream, control: ClientStream, session: _Session) -> None:
    """Both pumps and the control loop of one connection, until the handler's output is
    sent and the connector ended the data stream."""
    settings = session.settings
    async with trio.open_nursery() as nursery:
        log.info("engram %s connected to %s", settings.step, settings.connector)
        nursery.start_soon(_control_loop, control, settings.control_heartbeat)
        upstream_ended = trio.Event()
        closing = False

        async def inbound() -> None:
            await _pump_in(data, session)
            upstream_ended.set()
            if not closing:
                raise trio.BrokenResourceError("the connector ended the data stream")

        nursery.start_soon(inbound)
        await _pump_out(data, session)
        closing = True
        # Half-close, then let the connector end the call so nothing queued is cut.
        data.close_send()
        with trio.move_on_after(settings.message_timeout):
            await upstream_ended.wait()
        nursery.cancel_scope.cancel()


async def _run_connection(session: _Session) -> None:
    """One connection to the connector: handshake, then pumps until the data stream ends."""
    settings = session.settings
    control_headers = {PROTOCOL_HEADER: PROTOCOL_VERSION}
    if settings.binding_reference:
        control_headers[BINDING_HEADER] = settings.binding_reference
    tls = server_auth_context(settings.ca_file) if settings.tls else None
    async with (
        open_grpc_channel(settings.connector, tls=tls) as channel,
        channel.open_stream(CONTROL_METHOD, control_headers) as control,
    ):
        await _wait_ready(control, settings.message_timeout)
        async with channel.open_stream(DATA_METHOD, {PROTOCOL_HEADER: PROTOCOL_VERSION}) as data:
            if not session.ready.is_set():
                # One machine-readable line: `bobravoz up` starts sources once every
                # downstream engram can take packets.
                settle_heap()
                report("ready", step=settings.step, component="engram")
                session.ready.set()
            try:
                await _run_pumps(data, control, session)
            finally:
                _settle_data(data, session)
        if session.unsent:
            raise trio.BrokenResourceError(
                f"the data stream ended with {len(session.unsent)} packets unsent"
            )
    session.inbox_send.close()


#: How a connection to the connector fails (retried by :func:`_connect_forever`).
_CONNECTION_ERRORS: Final = (
    RemoteStatusError,
    trio.BrokenResourceError,
    trio.TooSlowError,
    OSError,
)


async def _connect_forever(session: _Session) -> None:
    """Run connections with jittered exponential backoff until the handler's output is drained."""
    settings = session.settings
    backoff = settings.reconnect_base
    failures = 0
    while True:
        try:
            await _run_connection(session)
            return
        except Exception as failure:
            reason = lone_exception(failure)
            if isinstance(reason, RemoteStatusError) and reason.code in FATAL_CODES:
                raise EngramError(f"connector refused the engram: {reason}") from reason
            if not isinstance(reason, _CONNECTION_ERRORS):
                raise
        failures += 1
        if 0 <= settings.max_retries < failures:
            raise EngramError(f"transport connector retries exhausted: {reason}") from reason
        delay = min(backoff, settings.reconnect_max) * random.uniform(0.8, 1.2)
        log.warning(
            "connection to %s lost (%s); retrying in %.2fs", settings.connector, reason, delay
        )
        await trio.sleep(delay)
        backoff = min(backoff * 2, settings.reconnect_max)


@final
class _HandlerStop:
    """Cancels the handler once a stop request's grace is over: the run going on, and any
    run its supervisor starts after that (each run has its own cancel scope)."""

    def __init__(self) -> None:
        self.cancelled = False
        #: Set once the handler's run is over: it returned, or the stop grace cancelled it.
        self.returned = trio.Event()
        #: The handler returned by itself (not cancelled by anything).
        self.finished = False
        self._scope: trio.CancelScope | None = None

    def scope_for_run(self) -> trio.CancelScope:
        """The cancel scope of the run about to start (cancelled already after the grace)."""
        self._scope = trio.CancelScope()
        if self.cancelled:
            self._scope.cancel()
        return self._scope

    def cancel(self) -> None:
        """Cancel the handler: the run going on, and any later one."""
        self.cancelled = True
        if self._scope is not None:
            self._scope.cancel()


async def _stop_when_asked(
    stop: trio.Event,
    context: StreamContext,
    handler_stop: _HandlerStop,
    settings: EngramSettings,
    everything: trio.CancelScope,
) -> None:
    """Once ``stop`` is set: tell the handler, give it the grace to return (then cancel it),
    and give what it emitted the message timeout to be written; past that, cancel
    ``everything``."""
    await stop.wait()
    context.request_stop()
    log.info("stop requested: the handler has %.1fs to return", settings.stop_grace)
    with trio.move_on_after(settings.stop_grace):
        await handler_stop.returned.wait()
    if not handler_stop.returned.is_set():
        log.warning(
            "the handler did not return within %.1fs of the stop request: cancelled",
            settings.stop_grace,
        )
        handler_stop.cancel()
    # What it emitted is written and the stream ended, as when it returns by itself.
    await trio.sleep(settings.message_timeout)
    log.warning(
        "the engram did not finish writing within %.1fs of its handler's end: stopping",
        settings.message_timeout,
    )
    everything.cancel()


async def serve_engram(
    handler: Handler,
    settings: EngramSettings,
    *,
    tracing: Tracing = DISABLED,
    stop: trio.Event | None = None,
) -> None:
    """Run ``handler`` against the connector until it returns and its output is sent.

    Raises EngramError when the engram cannot run (fatal refusal, retries exhausted) and
    SupervisorEscalation when the handler keeps failing past its restart budget. ``tracing``
    gives the handler's packets their ``sdk.emit``/``sdk.handle`` spans. However it ends,
    what was received and never reached the handler, and what the handler emitted and was
    never written to the connector, is reported by reason (a ``losses`` line,
    :mod:`bobravoz.sdk.losses`) when there is any.

    When ``stop`` is set the engram stops gracefully: :attr:`StreamContext.stop_requested`
    turns true, the handler has ``settings.stop_grace`` seconds to return before it is
    cancelled, and what it emitted then has ``settings.message_timeout`` seconds to be
    written before everything is cancelled.
    """
    session = _Session(settings, tracing)
    context = session.context()
    handler_stop = _HandlerStop()

    async def run_handler() -> None:
        with handler_stop.scope_for_run():
            # The handler starts once the transport can carry what it emits: a source's
            # first packets do not wait (and age) in the SDK while the process connects.
            await session.ready.wait()
            try:
                await handler(context)
                handler_stop.finished = True
            finally:
                context._end_handling()  # noqa: SLF001 - the span of the last packet it took
        session.outbox.close()
        handler_stop.returned.set()

    try:
        async with trio.open_nursery() as watchers:
            if stop is not None:
                watchers.start_soon(
                    _stop_when_asked, stop, context, handler_stop, settings, watchers.cancel_scope
                )
            async with open_supervisor("engram", settings.restart) as supervisor:
                supervisor.start_child("handler", run_handler, restart=Restart.TRANSIENT)
                try:
                    await _connect_forever(session)
                except* _CONNECTION_ERRORS as broken:
                    if trio.current_effective_deadline() != -math.inf:
                        raise  # not stopping: a real failure
                    # Stopped while the connection broke (everything stops at once): part of
                    # stopping, not a failure. What was not written is counted below.
                    log.info(
                        "the connection ended while the engram was stopping: %s",
                        "; ".join(str(error) for error in broken.exceptions),
                    )
                supervisor.cancel()
            watchers.cancel_scope.cancel()
    finally:
        context.drop_incomplete_chunk_sets()
        if not handler_stop.finished:
            # The handler was stopped (its stop grace ran out, a second signal, a failure),
            # not done: what it was still to be given is lost. A handler that returns by
            # itself leaves the rest by its own choice.
            session.losses.count(
                UNHANDLED,
                "packets received were never handled: the handler was stopped first",
                len(session.received) + session.inbox_receive.statistics().current_buffer_used,
            )
        session.losses.count(
            UNSENT,
            "packets the handler emitted were never written to the connector",
            len(session.unsent),
        )
        session.losses.report(settings.step)


def run_engram(handler: Handler, environ: Mapping[str, str] | None = None) -> int:
    """Process entry point for an engram: configure from the environment and serve ``handler``.

    Returns the exit status: 0 when the handler finished, 2 for configuration errors, 1 for
    runtime failures (each explained on stderr).
    """
    configure_logging("engram")
    env = os.environ if environ is None else environ
    try:
        settings = load_settings(env)
        # service.name: OTEL_SERVICE_NAME, else one per step (each engram is its own service).
        tracing = configure_tracing(
            f"bobravoz-engram-{settings.step}" if settings.step else "bobravoz-engram",
            env,
            resource_attributes={"bobravoz.step": settings.step},
        )
    except ConfigError as error:
        print(f"engram: {error}", file=sys.stderr)
        return 2

    signals = TwoStageStop()

    async def main() -> None:
        async with open_grpc_loop(), trio.open_nursery() as nursery:
            await nursery.start(signals.watch, nursery.cancel_scope)
            await serve_engram(handler, settings, tracing=tracing, stop=signals.requested)
            nursery.cancel_scope.cancel()

    try:
        trio.run(main)
    except KeyboardInterrupt:
        return 130
    except (EngramError, SupervisorEscalation) as error:
        print(f"engram {settings.step}: {error}", file=sys.stderr)
        return 1
    finally:
        tracing.shutdown()  # spans still queued are exported before the process exits
    return signals.exit_status
