"""Stream floods against an in-process hub: afterwards its state is back where it started.

Scope: :class:`bobravoz.runtime.hub.Hub` (:func:`open_hub`) served by :func:`serve_grpc` on
loopback TCP inside :func:`open_grpc_loop`, flooded by a bare HTTP/2 client (``h2``, no
grpclib, so HEADERS and RST_STREAM go out exactly when the test says) and by grpclib clients.
The measured cases:

- 2,000 Process streams with valid binding headers, on 4 bindings with rising generations
  (each stream supersedes the previous one: a cutover), reset as soon as the hub answered,
  or right after their HEADERS: no stream stays open, the hub's supervisor keeps a bounded
  history, bindings and metric series stay bounded, and the process RSS after a second
  identical round is within 10 % of the warmed-up start. The hub before the actor rework
  (commit 3d8e76b) failed each of these: ``open_streams`` was a counter not decremented on
  cutover, ``Supervisor._history`` kept one entry per stream, and bindings and their metric
  series were never freed.
- Streams reset with a packet in flight give back the connection's flow-control window.
- 2,000 StoryRuns (local mode admits any name) each buffer one packet for a step that never
  connects; expiry releases every binding, counts each packet lost ``binding_expired`` and
  brings the metric series back to the start.
- The hub-wide byte budget: never exceeded (checked after every task step by a trio
  instrument), producers wait (``block``) instead of the hub growing, and everything flows
  once consumers connect; expiring the buffers producers wait for fails no actor; past
  ``max_bindings`` a new binding is refused RESOURCE_EXHAUSTED.

Waits are for the state that proves a thing happened (every task blocked and the hub's
state unchanged across two idle points), never for time to pass.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import gc
import struct
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import msgspec
import trio
import trio.testing
from prometheus_client import CollectorRegistry

from bobravoz.protocol.constants import PROCESS_METHOD
from bobravoz.protocol.gen.transport.v1 import BinaryFrame, DataPacket, ProcessRequest
from bobravoz.protocol.packets import split_process_message
from bobravoz.runtime.endpoints import Endpoint
from bobravoz.runtime.groups import lone_exception
from bobravoz.runtime.grpc_bridge import GrpcChannel, open_grpc_channel, open_grpc_loop, serve_grpc
from bobravoz.runtime.guard import BoundaryLimits
from bobravoz.runtime.handshake import BindingIdentity
from bobravoz.runtime.hub import Hub, HubSettings, TopologyRegistry, boundary_limits, open_hub
from bobravoz.runtime.metrics import RELEASED, TransportMetrics
from bobravoz.runtime.status import RemoteStatusError, StatusCode
from bobravoz.runtime.story import parse_story
from bobravoz.runtime.supervisor import Supervisor
from bobravoz.runtime.topology import streaming_topology

STORY = """
apiVersion: bubustack.io/v1alpha1
kind: Story
metadata: {name: floods, namespace: default}
spec:
  pattern: realtime
  steps:
    - {name: producer, ref: {name: source}}
    - {name: consumer, ref: {name: sink}, needs: [producer]}
"""
TOPOLOGY = streaming_topology(parse_story(STORY))
NAMESPACE = "default"
FLOOD = 2000
#: The supervisor's default history bound (finished children remembered for statistics).
HISTORY = 64


def identity(storyrun: str, step: str, generation: int = 1) -> BindingIdentity:
    return BindingIdentity(storyrun=storyrun, namespace=NAMESPACE, step=step, generation=generation)


def process_request(payload: bytes) -> bytes:
    return bytes(ProcessRequest(packet=DataPacket(binary=BinaryFrame(payload=payload))))


def rss_kib() -> int:
    """This process's resident set size (VmRSS), in KiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS in /proc/self/status")


def server_streams_alive() -> int:
    """grpclib's per-stream protocol objects alive in this process (the server's: the flood
    clients here are bare h2)."""
    gc.collect()
    return sum(
        1
        for obj in gc.get_objects()
        if type(obj).__name__ == "Stream" and type(obj).__module__ == "grpclib.protocol"
    )


# -- the hub under test ------------------------------------------------------------------------


@dataclass
class Running:
    hub: Hub
    metrics: TransportMetrics
    endpoint: Endpoint
    channel: GrpcChannel

    @property
    def supervisor(self) -> Supervisor:
        return self.hub._supervisor  # noqa: SLF001 - the hub's own supervisor is the subject

    def snapshot(self) -> tuple[Any, ...]:
        hub = self.hub
        return (
            hub.open_streams(),
            hub.live_bindings(),
            hub.undelivered(),
            hub.budget.used,
            self.supervisor.children,
            sum(c.packets_in for c in self.metrics.bindings.values()),
            sum(c.packets_out for c in self.metrics.bindings.values()),
            sum(self.metrics.handshake_rejections.values()),
            sum(self.metrics.failures.values()),
        )

    async def quiesce(self, *extra: Callable[[], object]) -> None:
        """Return once every task is blocked and neither the hub's state nor ``extra``
        changed since the previous idle point."""
        previous = None
        while True:
            await trio.testing.wait_all_tasks_blocked(0.005)
            now = (self.snapshot(), *(probe() for probe in extra))
            if now == previous:
                return
            previous = now

    def assert_idle(self, live_bindings: int | None = None) -> None:
        """No stream open, only the reaper and the sleep line supervised, a bounded history,
        and metric series
        and probes exactly for the live bindings."""
        hub = self.hub
        assert hub.open_streams() == 0
        assert self.supervisor.children == ("reaper", "sleep-line")
        assert len(self.supervisor.statistics().children) <= HISTORY + 2
        keys = {b.key for b in hub.bindings()}
        if live_bindings is not None:
            assert len(keys) == live_bindings
        assert set(self.metrics.depth_probes) == keys
        assert set(self.metrics.bindings) - {RELEASED} == keys


@contextlib.asynccontextmanager
async def running_hub(settings: HubSettings | None = None) -> AsyncIterator[Running]:
    """A hub serving on loopback, and a grpclib client connection to it. A failure inside
    comes out as itself, not wrapped in the nurseries' exception groups."""
    settings = settings or HubSettings()
    metrics = TransportMetrics(CollectorRegistry(), component="hub")
    # As serve_hub does (one connection may carry max_streams streams), but these floods
    # measure what the hub keeps of streams reset or abandoned, so the connection's reset
    # budget (tests/runtime/test_hostile_peers.py) is lifted.
    limits = msgspec.structs.replace(boundary_limits(settings), reset_burst=0)
    serve = functools.partial(serve_grpc, limits=limits, refusals=metrics.boundary_refusals)
    try:
        async with (
            open_grpc_loop(),
            open_hub(TopologyRegistry(TOPOLOGY), metrics, settings) as hub,
            trio.open_nursery() as nursery,
        ):
            server = await nursery.start(
                serve, Endpoint(host="127.0.0.1", port=0), [PROCESS_METHOD], hub.accept
            )
            async with open_grpc_channel(server.endpoint) as channel:
                yield Running(hub, metrics, server.endpoint, channel)
            nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        raise lone_exception(group) from None


# -- a bare HTTP/2 client ------------------------------------------------------------------------


@dataclass
class RawH2Client:
    """One HTTP/2 connection driven frame by frame: HEADERS, DATA and RST_STREAM go out
    exactly when asked; received DATA is acknowledged at once."""

    socket: trio.SocketStream
    authority: str
    connection: h2.connection.H2Connection = field(
        default_factory=lambda: h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        )
    )
    #: Streams waiting for the hub's answer before the client resets them.
    pending: set[int] = field(default_factory=set)
    answered: int = 0
    #: grpc-status of every stream the hub ended (trailers, or a trailers-only refusal).
    statuses: collections.Counter[StatusCode] = field(default_factory=collections.Counter)
    changed: trio.Event = field(default_factory=trio.Event)
    _send_lock: trio.Lock = field(default_factory=trio.Lock)

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(cls, endpoint: Endpoint) -> AsyncIterator[RawH2Client]:
        socket = await trio.open_tcp_stream(endpoint.host, endpoint.port)
        async with socket, trio.open_nursery() as nursery:
            client = cls(socket, f"{endpoint.host}:{endpoint.port}")
            client.connection.initiate_connection()
            await client.flush()
            nursery.start_soon(client._pump)
            yield client
            nursery.cancel_scope.cancel()

    def request_headers(self, who: BindingIdentity) -> list[tuple[str, str]]:
        return [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", PROCESS_METHOD),
            (":authority", self.authority),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
            *who.headers().items(),
        ]

    async def flush(self) -> None:
        async with self._send_lock:
            data = self.connection.data_to_send()
            if data:
                await self.socket.send_all(data)

    def reset(self, stream_id: int) -> None:
        with contextlib.suppress(h2.exceptions.StreamClosedError):
            self.connection.reset_stream(stream_id, h2.errors.ErrorCodes.CANCEL)

    def _handle(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.DataReceived):
            self.connection.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            return
        if isinstance(event, h2.events.ResponseReceived | h2.events.TrailersReceived):
            status = dict(event.headers).get("grpc-status")
            if status is not None:
                self.statuses[StatusCode(int(status))] += 1
        if isinstance(event, h2.events.ResponseReceived) and event.stream_id in self.pending:
            # Admitted (headers) or refused (trailers-only): the hub answered; reset it now.
            self.answered += 1
            self.pending.discard(event.stream_id)
            self.reset(event.stream_id)
        elif isinstance(event, h2.events.StreamEnded | h2.events.StreamReset):
            self.pending.discard(event.stream_id)

    async def _pump(self) -> None:
        while True:
            data = await self.socket.receive_some(65536)
            if not data:
                return
            for event in self.connection.receive_data(data):
                self._handle(event)
            await self.flush()
            self.changed.set()
            self.changed = trio.Event()

    async def flood(
        self,
        who: Iterable[BindingIdentity],
        *,
        reset: Literal["answered", "at once"],
        window: int = 64,
        data: bytes | None = None,
    ) -> None:
        """Open a stream for each identity and reset it: once the hub answered (at most
        ``window`` waiting at a time), or in the same write as its HEADERS (and ``data``)."""
        for person in who:
            while len(self.pending) >= window:
                await self.changed.wait()
            stream_id = self.connection.get_next_available_stream_id()
            self.connection.send_headers(stream_id, self.request_headers(person))
            if data is not None:
                self.connection.send_data(stream_id, data)
            if reset == "at once":
                self.reset(stream_id)
            else:
                self.pending.add(stream_id)
            await self.flush()
        while self.pending:
            await self.changed.wait()


def cutover_identities(count: int) -> list[BindingIdentity]:
    """``count`` consumer identities over 4 bindings, generations rising (two streams per
    generation: same-generation reconnects), so each stream supersedes the previous one."""
    return [identity(f"flood-{i % 4}", "consumer", 1 + i // 8) for i in range(count)]


# -- (a) floods of reset streams ----------------------------------------------------------------


async def test_streams_reset_once_admitted_leave_nothing_behind() -> None:
    with trio.fail_after(60):
        async with running_hub() as run, RawH2Client.connect(run.endpoint) as client:
            who = cutover_identities(FLOOD)
            await client.flood(who, reset="answered")  # warm-up round
            await run.quiesce()
            assert client.answered == FLOOD
            run.assert_idle(live_bindings=4)
            start_rss, start_streams = rss_kib(), server_streams_alive()
            await client.flood(who, reset="answered")
            await run.quiesce()
            assert client.answered == 2 * FLOOD
            # Many were superseded (cutover) before the client reset them.
            assert client.statuses[StatusCode.ABORTED] > FLOOD // 10, client.statuses
            run.assert_idle(live_bindings=4)
            assert run.hub.undelivered() == 0
            assert run.metrics.handshake_rejections["max_streams"] == 0
            assert server_streams_alive() <= start_streams + HISTORY
            end_rss = rss_kib()
            assert end_rss <= start_rss * 1.10, (start_rss, end_rss)


async def test_streams_reset_right_after_their_headers_leave_nothing_behind() -> None:
    with trio.fail_after(60):
        async with running_hub() as run, RawH2Client.connect(run.endpoint) as client:
            who = cutover_identities(FLOOD)
            await client.flood(who, reset="at once")  # warm-up round
            await run.quiesce(server_streams_alive)
            run.assert_idle()
            start_rss, start_streams = rss_kib(), server_streams_alive()
            await client.flood(who, reset="at once")
            await run.quiesce(server_streams_alive)
            run.assert_idle()
            assert len(run.metrics.bindings) <= 4
            # Nothing of a reset stream may outlive it: grpclib's per-stream state included.
            retained = server_streams_alive() - start_streams
            end_rss = rss_kib()
            assert retained <= HISTORY, (
                f"{retained} server streams of {FLOOD} reset ones are still registered on the "
                f"connection (RSS {start_rss} -> {end_rss} KiB)"
            )
            assert end_rss <= start_rss * 1.10, (start_rss, end_rss)


async def test_streams_reset_with_a_packet_in_flight_give_the_connection_window_back() -> None:
    # More than half the connection window in all: h2 hands acknowledged bytes back in
    # WINDOW_UPDATEs once half a window is processed, so acknowledged floods must show up.
    message = process_request(bytes(4500))
    frame = struct.pack(">?I", False, len(message)) + message
    half_window = BoundaryLimits().connection_window // 2
    assert FLOOD * len(frame) > half_window
    with trio.fail_after(60):
        async with running_hub() as run, RawH2Client.connect(run.endpoint) as client:
            await run.quiesce()
            start = client.connection.outbound_flow_control_window
            who = [identity(f"inflight-{i % 4}", "producer", 1 + i) for i in range(FLOOD)]
            await client.flood(who, reset="at once", data=frame)
            await run.quiesce(lambda: client.connection.outbound_flow_control_window)
            run.assert_idle()
            # Every DATA byte the server took must be acknowledged, reset stream or not: what
            # is not is gone from the connection's window for good (at 0 the connection
            # carries no packet any more, while HEADERS still pass).
            debt = start - client.connection.outbound_flow_control_window
            # What is left is below h2's update threshold (acknowledged, not yet announced);
            # without acknowledgements it would be every byte sent.
            assert debt < half_window, f"{debt} bytes of {FLOOD * len(frame)} never acknowledged"


# -- (b) thousands of StoryRuns expire to nothing -------------------------------------------------


async def produce(channel: GrpcChannel, storyrun: str, payloads: list[bytes]) -> None:
    """A producer of ``storyrun`` sends ``payloads`` and ends; returns once the hub routed
    them all (the hub ends the stream OK)."""
    async with channel.open_stream(PROCESS_METHOD, identity(storyrun, "producer").headers()) as s:
        await s.send_batch([process_request(payload) for payload in payloads])
        s.close_send()
        with contextlib.suppress(trio.EndOfChannel):
            while True:
                await s.receive_batch()


async def test_thousands_of_storyruns_buffering_for_absent_steps_expire_to_nothing() -> None:
    settings = HubSettings()
    with trio.fail_after(90):
        async with running_hub(settings) as run:
            hub, metrics = run.hub, run.metrics
            # Warm-up: one StoryRun through its whole life, so the (released) series exists.
            await produce(run.channel, "warm-up", [b"w"])
            await run.quiesce()
            assert hub.expire(trio.current_time() + settings.binding_ttl) == 2
            run.assert_idle(live_bindings=0)
            start_series = metrics.series()
            start_lost = metrics.bindings[RELEASED].lost["binding_expired"]
            assert start_lost == 1

            limiter = trio.CapacityLimiter(64)

            async def one(index: int) -> None:
                async with limiter:
                    await produce(run.channel, f"run-{index}", [index.to_bytes(4, "big")])

            async with trio.open_nursery() as nursery:
                for index in range(FLOOD):
                    nursery.start_soon(one, index)
            await run.quiesce()
            run.assert_idle(live_bindings=2 * FLOOD)  # a producer and a consumer binding each
            assert hub.undelivered() == FLOOD
            assert hub.budget.used == sum(
                b.channel.statistics().depth_bytes for b in hub.bindings()
            )
            assert not metrics.handshake_rejections

            assert hub.expire(trio.current_time() + settings.binding_ttl) == 2 * FLOOD
            await run.quiesce()
            run.assert_idle(live_bindings=0)
            assert hub.budget.used == 0
            assert metrics.series() == start_series
            assert set(metrics.bindings) == {RELEASED}
            released = metrics.bindings[RELEASED]
            assert released.lost["binding_expired"] - start_lost == FLOOD
            assert sum(released.lost.values()) == FLOOD + 1
            assert released.packets_in == FLOOD + 1


# -- (c) budgets -----------------------------------------------------------------------------------


class BudgetWatch(trio.abc.Instrument):
    """Reads the hub's byte budget after every task step: the peak it ever reached."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.peak = 0

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        self.peak = max(self.peak, self.hub.budget.used)


@contextlib.contextmanager
def watching(hub: Hub) -> Iterator[BudgetWatch]:
    watch = BudgetWatch(hub)
    trio.lowlevel.add_instrument(watch)
    try:
        yield watch
    finally:
        trio.lowlevel.remove_instrument(watch)


BUDGET = 256 * 1024
BIG = 60_000
PRODUCERS = 10


async def start_big_producers(run: Running, nursery: trio.Nursery, count: int) -> list[str]:
    """Start ``count`` producers of one big packet each for a step that is not connected;
    return (once quiescent) the list that gets each producer's name when it finishes."""
    done: list[str] = []

    async def producer(index: int) -> None:
        await produce(run.channel, f"big-{index}", [index.to_bytes(4, "big") + bytes(BIG)])
        done.append(f"big-{index}")

    for index in range(count):
        nursery.start_soon(producer, index)
    await run.quiesce(lambda: len(done))
    return done


def buffered_runs(hub: Hub) -> list[str]:
    return sorted(b.storyrun for b in hub.bindings() if b.step == "consumer" and b.channel.depth)


async def test_the_byte_budget_holds_and_producers_wait_instead_of_the_hub_growing() -> None:
    settings = HubSettings(max_buffered_bytes=BUDGET)
    with trio.fail_after(60):
        async with running_hub(settings) as run, trio.open_nursery() as clients:
            hub, metrics = run.hub, run.metrics
            with watching(hub) as watch:
                done = await start_big_producers(run, clients, PRODUCERS)
                buffered = buffered_runs(hub)
                size = max(b.channel.statistics().depth_bytes for b in hub.bindings())
                assert size > BIG
                fits = BUDGET // size
                assert len(buffered) == fits < PRODUCERS
                assert hub.budget.used == fits * size <= BUDGET
                # The others wait in the hub (streams open, nothing buffered), not done.
                assert sorted(done) == buffered
                assert hub.open_streams() == PRODUCERS - fits
                assert sum(c.packets_in for c in metrics.bindings.values()) == PRODUCERS
                assert hub.undelivered() == fits

                # Consumers connect: every packet flows through the budget to its step.
                received: dict[str, list[bytes]] = {}

                async def consumer(index: int) -> None:
                    storyrun = f"big-{index}"
                    headers = identity(storyrun, "consumer").headers()
                    async with run.channel.open_stream(PROCESS_METHOD, headers) as stream:
                        got = received.setdefault(storyrun, [])
                        while not got:
                            for message in await stream.receive_batch():
                                packet, _flow = split_process_message(message)
                                assert packet is not None
                                got.append(DataPacket.parse(packet).binary.payload[:4])

                async with trio.open_nursery() as consumers:
                    for index in range(PRODUCERS):
                        consumers.start_soon(consumer, index)
                await run.quiesce(lambda: len(done))
                assert received == {f"big-{i}": [i.to_bytes(4, "big")] for i in range(PRODUCERS)}
                assert len(done) == PRODUCERS
            assert watch.peak <= BUDGET, f"budget peaked at {watch.peak} > {BUDGET}"
            assert hub.budget.used == 0
            assert hub.expire(trio.current_time() + settings.binding_ttl) == 2 * PRODUCERS
            await run.quiesce()
            run.assert_idle(live_bindings=0)
            assert set(metrics.bindings) == {RELEASED}
            assert sum(metrics.bindings[RELEASED].lost.values()) == 0
            assert metrics.bindings[RELEASED].packets_out == PRODUCERS


async def test_expiring_the_buffers_producers_wait_for_fails_no_actor() -> None:
    settings = HubSettings(max_buffered_bytes=BUDGET)
    with trio.fail_after(60):
        async with running_hub(settings) as run, trio.open_nursery() as clients:
            hub, metrics = run.hub, run.metrics
            done = await start_big_producers(run, clients, PRODUCERS)
            fits = len(buffered_runs(hub))
            assert len(done) == fits < PRODUCERS
            # Expire every binding without a stream: the buffered packets are lost
            # (binding_expired), and the bindings the waiting producers route to go away.
            hub.expire(trio.current_time() + settings.binding_ttl)
            await run.quiesce(lambda: len(done))
            assert not metrics.failures, f"binding actors failed: {dict(metrics.failures)}"
            assert not metrics.restarts, f"binding actors restarted: {dict(metrics.restarts)}"
            counters = list(metrics.bindings.values())
            # Each packet was ingested once and is accounted for exactly once.
            assert sum(c.packets_in for c in counters) == PRODUCERS
            accounted = sum(
                c.packets_out + sum(c.dropped.values()) + sum(c.lost.values()) for c in counters
            )
            assert accounted + hub.undelivered() == PRODUCERS
            assert metrics.bindings[RELEASED].lost["binding_expired"] >= fits
            assert len(done) == PRODUCERS
            hub.expire(trio.current_time() + settings.binding_ttl)
            await run.quiesce()
            run.assert_idle(live_bindings=0)
            assert hub.budget.used == 0


async def test_past_max_bindings_a_new_binding_is_refused_resource_exhausted() -> None:
    settings = HubSettings(max_bindings=3)
    with trio.fail_after(30):
        async with running_hub(settings) as run:
            hub, metrics = run.hub, run.metrics
            await produce(run.channel, "first", [b"1"])  # bindings: first/producer, /consumer
            await produce(run.channel, "second", [b"2"])  # second/producer; no room for its
            await run.quiesce()  # consumer binding: the packet is lost (budget), counted
            assert hub.live_bindings() == 3
            assert metrics.bindings[f"{NAMESPACE}/second/producer"].lost["budget"] == 1
            assert hub.find(NAMESPACE, "second", "consumer") is None

            headers = identity("third", "producer").headers()
            refusal: RemoteStatusError | None = None
            try:
                async with run.channel.open_stream(PROCESS_METHOD, headers):
                    pass
            except RemoteStatusError as error:
                refusal = error
            assert refusal is not None, "a binding past max_bindings was admitted"
            assert refusal.code is StatusCode.RESOURCE_EXHAUSTED
            assert metrics.handshake_rejections["max_bindings"] == 1

            # A stream for a binding that exists is still admitted and gets its packet.
            headers = identity("first", "consumer").headers()
            async with run.channel.open_stream(PROCESS_METHOD, headers) as stream:
                (message,) = await stream.receive_batch()
                packet, _flow = split_process_message(message)
                assert packet is not None
                assert DataPacket.parse(packet).binary.payload == b"1"
            await run.quiesce()
            run.assert_idle(live_bindings=3)

            # Once bindings are released there is room again.
            assert hub.expire(trio.current_time() + settings.binding_ttl) == 3
            await produce(run.channel, "third", [b"3"])
            await run.quiesce()
            assert hub.live_bindings() == 2
            assert hub.expire(trio.current_time() + settings.binding_ttl) == 2
            await run.quiesce()
            run.assert_idle(live_bindings=0)
            assert hub.budget.used == 0
