"""The connector assembled in process: its local streams and its hub link over real gRPC.

Scope: :class:`~bobravoz.connector.service.ConnectorService` and
:class:`~bobravoz.connector.hub_link.HubLink` put together as
:func:`bobravoz.connector.main.run_connector` does (``open_supervisor``, ``HubLink``,
``ConnectorService``, ``serve_grpc`` as a supervised child) inside :func:`open_grpc_loop`,
served over loopback TCP (port 0). The engram is played by raw-bytes Data/Control clients
(``DataRequest``/``ControlRequest`` with the protocol header); the hub is played by a fake
``HubService.Process`` server (``serve_grpc``) that the test drives message by message.

Covered: a newer Data stream replacing a stalled one (ABORTED, nothing written after the
replacement, its unwritten backlog delivered first and in order on the new stream, the loss
accounting); an actor that dies of a bug (INTERNAL naming the error, the connector keeps
serving); control events that cannot be queued (``control_events_dropped``, never a packet
drop); and ``HubLink._pump_up`` when the hub ends the link mid-flight (the unwritten backlog
goes back to the outbox front and is sent on the next link; only never-written packets are
lost; ``packets_out`` counts each written packet once).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import trio
import trio.testing
from prometheus_client import CollectorRegistry

from bobravoz.connector.config import load_config
from bobravoz.connector.hub_link import HubLink
from bobravoz.connector.service import METHODS, ConnectorService
from bobravoz.protocol.constants import CONTROL_METHOD, DATA_METHOD, PROCESS_METHOD
from bobravoz.protocol.gen.transport.v1 import (
    BinaryFrame,
    ControlAction,
    ControlRequest,
    ControlResponse,
    DataPacket,
    DataRequest,
    DataResponse,
)
from bobravoz.protocol.packets import split_process_message
from bobravoz.runtime.endpoints import Endpoint
from bobravoz.runtime.grpc_bridge import (
    DEFAULT_PIPE_CAPACITY,
    ClientStream,
    GrpcChannel,
    GrpcServer,
    ServerStream,
    open_grpc_channel,
    open_grpc_loop,
    serve_grpc,
)
from bobravoz.runtime.handshake import PROTOCOL_HEADER, PROTOCOL_VERSION
from bobravoz.runtime.metrics import TransportMetrics
from bobravoz.runtime.status import RemoteStatusError, StatusCode
from bobravoz.runtime.supervisor import Restart, open_supervisor

PROTOCOL = {PROTOCOL_HEADER: PROTOCOL_VERSION}
#: Packet payload size: big enough that HTTP/2 flow control (4 MiB windows) stalls a writer
#: whose peer does not read after about a thousand packets.
PAYLOAD = 8 * 1024
#: Packets queued for a peer that does not read: more than the peer's bridge pipe, the HTTP/2
#: window and our bridge pipe hold together, so some stay in our buffer too.
STALL = 2000
KEY = "default/run-1/producer"

BASE_ENV = {
    "BUBU_HUB_ENDPOINT": "127.0.0.1:1",  # only dialled by tests that run the link
    "BUBU_STORYRUN_ID": "run-1",
    "BUBU_POD_NAMESPACE": "default",
    "BUBU_STEP_NAME": "producer",
    "BUBU_CONNECTOR_GENERATION": "1",
    "BUBU_GRPC_LOCAL_ENDPOINT": "127.0.0.1:0",
    # A Control stream would report the unreachable hub after this; never within a test.
    "BUBU_GRPC_MESSAGE_TIMEOUT": "600s",
    "BOBRAVOZ_CONNECTOR_BUFFER_MESSAGES": "10000",
    "BOBRAVOZ_CONNECTOR_BUFFER_BYTES": str(256 << 20),
}


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Connector:
    """A running connector (no hub link task) and a client connection to its local server."""

    service: ConnectorService
    link: HubLink
    metrics: TransportMetrics
    registry: CollectorRegistry
    channel: GrpcChannel
    #: Every local stream the server admitted, in arrival order.
    streams: list[ServerStream]
    #: Called with each new local stream just before ``ConnectorService.accept``.
    before_accept: list[Callable[[ServerStream], None]]


@contextlib.asynccontextmanager
async def running_connector(**overrides: str) -> AsyncIterator[Connector]:
    """ConnectorService + HubLink under a supervisor with serve_grpc, as connector/main.py
    assembles them (the hub link itself is not run: these tests drive its channels)."""
    config = load_config({**BASE_ENV, **overrides})
    registry = CollectorRegistry()
    metrics = TransportMetrics(registry, component="connector")
    async with (
        open_grpc_loop(),
        open_supervisor("connector", on_failure=metrics.failure_hook("connector")) as supervisor,
    ):
        link = HubLink(config, metrics)
        service = ConnectorService(link, metrics, supervisor)
        streams: list[ServerStream] = []
        hooks: list[Callable[[ServerStream], None]] = []

        def accept(stream: ServerStream) -> None:
            for hook in hooks:
                hook(stream)
            streams.append(stream)
            service.accept(stream)

        server: GrpcServer = await supervisor.start_child_ready(
            "local-server", serve_grpc, config.listen, METHODS, accept, restart=Restart.TEMPORARY
        )
        try:
            async with open_grpc_channel(server.endpoint) as channel:
                yield Connector(service, link, metrics, registry, channel, streams, hooks)
        finally:
            supervisor.cancel()


def response(index: int, size: int = PAYLOAD) -> bytes:
    """A hub packet for the engram (``DataResponse`` layout, as the inbox holds them)."""
    return bytes(
        DataResponse(
            binary=BinaryFrame(payload=index.to_bytes(4, "big") + bytes(size)),
            metadata={"seq": str(index)},
        )
    )


def hub_packet(index: int, size: int = PAYLOAD) -> bytes:
    """An engram packet for the hub (``DataPacket`` layout, as the outbox holds them)."""
    return bytes(
        DataPacket(
            binary=BinaryFrame(payload=index.to_bytes(4, "big") + bytes(size)),
            metadata={"seq": str(index)},
        )
    )


def fill(link: HubLink, which: str, packets: list[bytes]) -> None:
    channel = link.inbox if which == "inbox" else link.outbox
    for packet in packets:
        assert channel.send_nowait(packet, len(packet))


async def receive_until_status(
    stream: ClientStream | ServerStream,
) -> tuple[list[bytes], RemoteStatusError | None]:
    """Everything the peer sends until the call ends: (messages, non-OK status or None)."""
    got: list[bytes] = []
    while True:
        try:
            got.extend(await stream.receive_batch())
        except RemoteStatusError as status:
            return got, status
        except trio.EndOfChannel:
            return got, None


async def receive_exactly(stream: ClientStream | ServerStream, count: int) -> list[bytes]:
    got: list[bytes] = []
    while len(got) < count:
        got.extend(await stream.receive_batch(count - len(got)))
    assert len(got) == count
    return got


async def wait_until(predicate: Callable[[], bool]) -> None:
    """Wait for an observable condition, re-checking each time everything is idle."""
    while not predicate():
        await trio.testing.wait_all_tasks_blocked()


def samples(registry: CollectorRegistry, name: str) -> list[tuple[dict[str, str], float]]:
    """Every sample called ``name`` in the registry's collector output."""
    return [
        (dict(sample.labels), sample.value)
        for family in registry.collect()
        for sample in family.samples
        if sample.name == name
    ]


def assert_no_packet_drop_or_loss(connector: Connector) -> None:
    for key, counters in connector.metrics.bindings.items():
        assert not +counters.dropped, f"{key}: {counters.dropped}"
        assert not +counters.lost, f"{key}: {counters.lost}"
    for name in ("bobravoz_packets_dropped_total", "bobravoz_packets_lost_total"):
        assert all(value == 0 for _labels, value in samples(connector.registry, name)), samples(
            connector.registry, name
        )


# --------------------------------------------------------------------------------------------
# (a) a newer Data stream replaces the old one
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Replacement:
    sent: list[bytes]
    first: list[bytes]  # what the replaced stream's client received
    second: list[bytes]  # what the new stream's client received
    status: RemoteStatusError | None  # how the replaced call ended
    old: ServerStream
    new: ServerStream
    #: The old stream at the moment the new one was admitted: written, being written (taken by
    #: the bridge's writer, not yet counted written), and queued in its bridge pipe.
    written_then: int
    writing_then: int
    backlog_then: int
    requeued: int  # packets the inbox got back at its front
    lost: dict[str, int]


async def replace_a_stalled_data_stream() -> Replacement:
    """Queue STALL packets for an engram whose first Data stream does not read, until flow
    control stalls the connector's delivery with a backlog in the bridge and more in the
    inbox; then open a second Data stream, read the first to its end, then the second."""
    sent = [response(index) for index in range(STALL)]
    async with running_connector() as connector:
        link = connector.link
        async with connector.channel.open_stream(DATA_METHOD, PROTOCOL) as first:
            fill(link, "inbox", sent)
            await trio.testing.wait_all_tasks_blocked()
            (old,) = connector.streams
            # Stalled: a backlog in the old stream's bridge and more waiting in the inbox.
            assert old.outbound_depth() > 0
            assert link.inbox.depth + link.inbox.in_flight > 0
            then: dict[str, int] = {}

            def at_replacement(stream: ServerStream) -> None:
                (ledger,) = connector.service._writing  # noqa: SLF001 - the live ledger
                then.update(
                    written=old.written,
                    backlog=old.outbound_depth(),
                    writing=ledger.handed - old.written - old.outbound_depth(),
                )

            connector.before_accept.append(at_replacement)
            async with connector.channel.open_stream(DATA_METHOD, PROTOCOL) as second:
                new = connector.streams[1]
                first_got, status = await receive_until_status(first)
                second_got = await receive_exactly(second, len(sent) - len(first_got))
                await trio.testing.wait_all_tasks_blocked()
                assert (link.inbox.depth, link.inbox.in_flight) == (0, 0)
                assert new.outbound_depth() == 0
                result = Replacement(
                    sent=sent,
                    first=first_got,
                    second=second_got,
                    status=status,
                    old=old,
                    new=new,
                    written_then=then["written"],
                    writing_then=then["writing"],
                    backlog_then=then["backlog"],
                    requeued=link.inbox.statistics().requeued,
                    lost=dict(link.counters.lost),
                )
    return result


async def test_a_newer_data_stream_replaces_the_old_one_and_gets_its_backlog_first() -> None:
    with trio.fail_after(30):
        replaced = await replace_a_stalled_data_stream()
    # The replaced engram is told why its call ended.
    assert replaced.status is not None
    assert replaced.status.code == StatusCode.ABORTED
    assert "replaced" in replaced.status.message
    assert replaced.old.status == StatusCode.ABORTED
    # The first stream got a prefix: what was written or already being written when the new
    # stream arrived, and nothing queued after that.
    assert replaced.first == replaced.sent[: len(replaced.first)]
    assert len(replaced.first) == replaced.written_then + replaced.writing_then
    assert len(replaced.first) == replaced.old.written
    # Its bridge backlog went back to the front of the inbox ...
    assert replaced.backlog_then > 0
    assert replaced.requeued == replaced.backlog_then
    # ... so the second stream starts exactly where the first stopped: no gap, no duplicate.
    assert replaced.first + replaced.second == replaced.sent
    assert replaced.new.written == len(replaced.second)


async def test_a_replaced_data_stream_counts_nothing_lost_when_every_packet_arrived() -> None:
    """Every packet reached the old or the new stream, so no packet may be counted lost. The
    write the old stream's bridge was in the middle of when it was replaced completes (the
    first client reads it), so it must not be counted as ``engram_stream_broken`` loss."""
    with trio.fail_after(30):
        replaced = await replace_a_stalled_data_stream()
    assert replaced.first + replaced.second == replaced.sent
    assert replaced.writing_then > 0  # a write was in flight when the stream was replaced
    assert sum(replaced.lost.values()) == 0, (
        f"counted lost although every packet was delivered: {replaced.lost} "
        f"(a write of {replaced.writing_then} packets was in flight at the replacement)"
    )


# --------------------------------------------------------------------------------------------
# (b) an actor that dies of a bug
# --------------------------------------------------------------------------------------------


def failing_once(
    original: Callable[..., Awaitable[None]],
    before_failing: Callable[[ServerStream], Awaitable[object]],
) -> tuple[Callable[..., Awaitable[None]], list[int]]:
    calls: list[int] = []

    async def method(self: ConnectorService, stream: ServerStream) -> None:
        calls.append(1)
        if len(calls) == 1:
            await before_failing(stream)
            raise RuntimeError("a bug in the actor")
        await original(self, stream)

    return method, calls


def assert_internal_naming_the_error(status: RemoteStatusError | None) -> None:
    assert status is not None
    assert status.code == StatusCode.INTERNAL
    assert status.message, "INTERNAL without a message"
    assert "RuntimeError" in status.message, (
        f"the status message does not name the actor's error: {status.message!r}"
    )


async def test_a_data_actor_that_fails_ends_its_stream_internal_and_the_next_stream_works(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def take_one(stream: ServerStream) -> object:
        return await stream.receive_batch()

    broken, calls = failing_once(ConnectorService._take_from_engram, take_one)  # noqa: SLF001
    monkeypatch.setattr(ConnectorService, "_take_from_engram", broken)
    packet = bytes(DataRequest(binary=BinaryFrame(payload=b"first")))
    with trio.fail_after(20):
        async with running_connector() as connector:
            async with connector.channel.open_stream(DATA_METHOD, PROTOCOL) as data:
                await data.send(packet)
                got, status = await receive_until_status(data)
            assert got == []
            assert_internal_naming_the_error(status)
            assert connector.streams[0].status == StatusCode.INTERNAL
            assert connector.metrics.failures["connector"] == 1
            failures = samples(connector.registry, "bobravoz_actor_failures_total")
            assert failures == [({"component": "connector", "actor": "connector"}, 1.0)]
            # The connector keeps serving: a new Data stream moves packets both ways.
            async with connector.channel.open_stream(DATA_METHOD, PROTOCOL) as data:
                await data.send(bytes(DataRequest(binary=BinaryFrame(payload=b"second"))))
                await wait_until(lambda: connector.link.outbox.depth == 1)
                fill(connector.link, "inbox", [response(7, 16)])
                assert await receive_exactly(data, 1) == [response(7, 16)]
            assert len(calls) == 2
            assert connector.metrics.failures["connector"] == 1


async def test_a_control_actor_that_fails_ends_its_stream_internal_and_the_next_stream_works(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    original = ConnectorService._reply  # noqa: SLF001
    calls: list[ControlRequest] = []

    def reply(self: ConnectorService, request: ControlRequest) -> ControlResponse | None:
        calls.append(request)
        if len(calls) == 1:
            raise RuntimeError("a bug in the control actor")
        return original(self, request)

    monkeypatch.setattr(ConnectorService, "_reply", reply)
    heartbeat = bytes(ControlRequest(action=ControlAction.HEARTBEAT))
    with trio.fail_after(20):
        async with running_connector() as connector:
            async with connector.channel.open_stream(CONTROL_METHOD, PROTOCOL) as control:
                await control.send(heartbeat)
                got, status = await receive_until_status(control)
            assert got == []
            assert_internal_naming_the_error(status)
            assert connector.metrics.failures["connector"] == 1
            async with connector.channel.open_stream(CONTROL_METHOD, PROTOCOL) as control:
                await control.send(heartbeat)
                (raw,) = await receive_exactly(control, 1)
            ack = ControlResponse.parse(raw)
            assert ack.action == ControlAction.ACK
            assert ack.metadata == {"received": "heartbeat", "handled": "true", "status": "alive"}
            assert len(calls) == 2


# --------------------------------------------------------------------------------------------
# (c) control events that cannot be queued
# --------------------------------------------------------------------------------------------


async def test_control_errors_that_cannot_be_queued_are_counted_apart_from_packets() -> None:
    """Errors broadcast faster than the bridge can take them: the Control stream's bridge
    holds DEFAULT_PIPE_CAPACITY of them (nothing writes while we broadcast without awaiting),
    the rest are counted in ``control_events_dropped`` and nowhere else."""
    extra = 40
    with trio.fail_after(20):
        async with running_connector() as connector:
            service = connector.service
            async with connector.channel.open_stream(CONTROL_METHOD, PROTOCOL) as control:
                # Admitted: the actor registered the stream before the headers went out, and
                # (the hub link being down) queued nothing yet.
                (stream,) = connector.streams
                assert stream.outbound_depth() == 0
                for index in range(DEFAULT_PIPE_CAPACITY + extra):
                    service.broadcast_error(
                        StatusCode.UNAVAILABLE, f"error {index}", {"reason": "test"}
                    )
                assert service.control_events_dropped == extra
                assert connector.metrics.control_events_dropped() == extra
                assert samples(connector.registry, "bobravoz_control_events_dropped_total") == [
                    ({"component": "connector"}, float(extra))
                ]
                assert_no_packet_drop_or_loss(connector)
                # What was queued arrives, in order, and the stream keeps working.
                errors = [
                    ControlResponse.parse(raw)
                    for raw in await receive_exactly(control, DEFAULT_PIPE_CAPACITY)
                ]
                assert all(error.action == ControlAction.ERROR for error in errors)
                assert [error.error.message for error in errors if error.error] == [
                    f"error {index}" for index in range(DEFAULT_PIPE_CAPACITY)
                ]
                await control.send(bytes(ControlRequest(action=ControlAction.HEARTBEAT)))
                (raw,) = await receive_exactly(control, 1)
                assert ControlResponse.parse(raw).action == ControlAction.ACK
            assert service.control_events_dropped == extra


async def test_a_rejected_packet_whose_error_cannot_be_queued_is_not_a_packet_drop() -> None:
    """An engram that does not read its Control stream: once HTTP/2 flow control holds the
    Control stream's bridge full, the ERROR for a packet rejected on the Data stream cannot
    be queued. It is counted in ``control_events_dropped`` (once), the packet in
    ``rejected``; no binding counts a dropped or lost packet, and valid packets still flow."""
    message = "x" * 2000  # near the ControlError cap: the HTTP/2 window fills sooner
    with trio.fail_after(30):
        async with running_connector() as connector:
            service = connector.service
            counters = connector.link.counters
            async with connector.channel.open_stream(CONTROL_METHOD, PROTOCOL) as _control:
                (control,) = connector.streams
                while service.control_events_dropped == 0:
                    for _ in range(DEFAULT_PIPE_CAPACITY):
                        service.broadcast_error(StatusCode.UNAVAILABLE, message, {})
                    await trio.testing.wait_all_tasks_blocked()
                await trio.testing.wait_all_tasks_blocked()
                assert control.outbound_depth() == DEFAULT_PIPE_CAPACITY  # stays full
                before = service.control_events_dropped
                async with connector.channel.open_stream(DATA_METHOD, PROTOCOL) as data:
                    bad = DataRequest(binary=BinaryFrame(payload=b"x", mime_type="m" * 300))
                    await data.send(bytes(bad))
                    await wait_until(lambda: sum(counters.rejected.values()) == 1)
                    assert counters.rejected == {"too_long": 1}
                    assert service.control_events_dropped == before + 1
                    await data.send(bytes(DataRequest(binary=BinaryFrame(payload=b"ok"))))
                    await wait_until(lambda: connector.link.outbox.depth == 1)
                assert_no_packet_drop_or_loss(connector)
                assert samples(connector.registry, "bobravoz_control_events_dropped_total") == [
                    ({"component": "connector"}, float(before + 1))
                ]


# --------------------------------------------------------------------------------------------
# (d) HubLink._pump_up when the hub ends the link mid-flight
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Arrival:
    """A Process stream at the fake hub, and the link's state when it arrived (before the
    stream was admitted, so before the link could send anything on it)."""

    stream: ServerStream
    outbox_depth: int
    requeued: int
    lost: dict[str, int]
    packets_out: int


@dataclasses.dataclass
class Relinked:
    sent: list[bytes]
    read_by_first_hub: list[bytes]
    upstream_written: int  # what the first link's stream wrote (the bridge's count)
    backlog_then: int  # queued in that stream's bridge when the hub ended the call
    second: Arrival
    received_by_second_hub: list[bytes]
    link: HubLink
    #: ``bobravoz_packets_out_total`` scraped once the second link wrote everything.
    scraped_live: list[tuple[dict[str, str], float]]


async def break_the_link_mid_flight(read_first: int = 5) -> Relinked:
    """A fake hub reads ``read_first`` packets of the first link, then stops reading until
    the link's writes stall with a backlog in the bridge, then ends the call; the link
    reconnects and the hub reads everything the second link sends."""
    sent = [hub_packet(index) for index in range(STALL)]
    registry = CollectorRegistry()
    metrics = TransportMetrics(registry, component="connector")
    arrivals_in, arrivals = trio.open_memory_channel[Arrival](math.inf)
    links: list[HubLink] = []

    def acceptor(stream: ServerStream) -> None:
        link = links[0]
        arrivals_in.send_nowait(
            Arrival(
                stream=stream,
                outbox_depth=link.outbox.depth,
                requeued=link.outbox.statistics().requeued,
                lost=dict(link.counters.lost),
                packets_out=link.counters.packets_out,
            )
        )
        stream.accept()

    async with open_grpc_loop(), trio.open_nursery() as nursery:
        hub: GrpcServer = await nursery.start(
            serve_grpc, Endpoint(host="127.0.0.1", port=0), [PROCESS_METHOD], acceptor
        )
        config = load_config(
            {
                **BASE_ENV,
                "BUBU_HUB_ENDPOINT": str(hub.endpoint),
                "BUBU_GRPC_RECONNECT_BASE_BACKOFF": "10ms",
            }
        )
        link = HubLink(config, metrics)
        links.append(link)
        fill(link, "outbox", sent)
        nursery.start_soon(link.run)

        first = await arrivals.receive()
        assert first.outbox_depth == len(sent)
        read = await receive_exactly(first.stream, read_first)
        await trio.testing.wait_all_tasks_blocked()  # the link's writes stall
        upstream_ledger = link._up_ledger  # noqa: SLF001 - the live stream's ledger
        assert upstream_ledger is not None
        upstream = upstream_ledger.stream
        assert isinstance(upstream, ClientStream)
        backlog = upstream.outbound_depth()
        assert backlog > 0  # a backlog in the bridge ...
        assert link.outbox.depth + link.outbox.in_flight > 0  # ... and more in the outbox
        first.stream.finish(StatusCode.UNAVAILABLE, "the hub is going away")

        second = await arrivals.receive()
        got = await receive_exactly(second.stream, second.outbox_depth)
        await trio.testing.wait_all_tasks_blocked()
        assert (link.outbox.depth, link.outbox.in_flight) == (0, 0)
        scraped_live = samples(registry, "bobravoz_packets_out_total")  # link 2 still up
        nursery.cancel_scope.cancel()
    return Relinked(
        sent=sent,
        read_by_first_hub=read,
        upstream_written=upstream.written,
        backlog_then=backlog,
        second=second,
        received_by_second_hub=got,
        link=link,
        scraped_live=scraped_live,
    )


def packets(messages: list[bytes]) -> list[bytes | None]:
    return [split_process_message(message)[0] for message in messages]


async def test_the_link_requeues_its_unwritten_backlog_and_the_next_link_sends_it() -> None:
    with trio.fail_after(30):
        relinked = await break_the_link_mid_flight()
    sent, second = relinked.sent, relinked.second
    assert packets(relinked.read_by_first_hub) == sent[:5]
    # When the second link arrived, the first one's bridge backlog was back in the outbox.
    assert second.requeued == relinked.backlog_then
    assert second.lost.keys() <= {"link_broken"}
    lost = second.lost.get("link_broken", 0)
    # Lost counts only packets never written: written + lost + given back = everything.
    assert relinked.upstream_written + lost + second.outbox_depth == len(sent), (
        f"written={relinked.upstream_written} lost={lost} requeued+queued="
        f"{second.outbox_depth} of {len(sent)}"
    )
    # The next link sends the rest first, in order, each packet once.
    assert packets(relinked.received_by_second_hub) == sent[len(sent) - second.outbox_depth :]
    assert relinked.link.counters.lost == second.lost  # nothing more lost on the second link
    assert not +relinked.link.counters.dropped
    assert relinked.link._metrics.reconnects == 1  # noqa: SLF001


async def test_packets_out_counts_each_written_packet_once_across_links() -> None:
    with trio.fail_after(30):
        relinked = await break_the_link_mid_flight()
    first_link = relinked.upstream_written
    # When the first link is over, packets_out is what that link's stream wrote.
    assert relinked.second.packets_out == first_link, (
        f"packets_out={relinked.second.packets_out} after a link that wrote {first_link}"
    )
    # Once the second link wrote the rest, a scrape reports every written packet once.
    total = first_link + len(relinked.received_by_second_hub)
    assert relinked.scraped_live == [({"component": "connector", "binding": KEY}, float(total))]
