"""Hostile peers against an in-process hub: each is answered, counted, and nobody else suffers.

Scope: the boundary of :func:`~bobravoz.runtime.grpc_bridge.serve_grpc` (its
:class:`~bobravoz.runtime.guard.ConnectionGuard`, the per-connection hooks, the message size
checks, the read-ahead) in front of an :func:`~bobravoz.runtime.hub.open_hub` hub, on loopback
TCP inside :func:`open_grpc_loop`. Peers are bare sockets and bare ``h2`` clients, so every
byte and frame goes out exactly when the test says; well-behaved traffic is a producer and a
consumer on a grpclib channel (:class:`Pair`), which must keep flowing throughout.

Each case checks the answer on the wire (GOAWAY code and debug data, or a gRPC status and
message), the ``boundary_refusals`` / ``handshake_rejections`` count, and where memory is the
point, this process's RSS before and after (printed; run with ``-s`` to see the figures).
Timeouts run under trio's autojump clock; other waits are for the event that proves the
thing happened (bounded by ``trio.fail_after``).
"""

from __future__ import annotations

import collections
import contextlib
import functools
import gc
import socket
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import hyperframe.frame
import msgspec
import pytest
import trio
import trio.testing
from prometheus_client import CollectorRegistry

from bobravoz.protocol.constants import PROCESS_METHOD
from bobravoz.protocol.gen.transport.v1 import BinaryFrame, DataPacket, ProcessRequest
from bobravoz.protocol.packets import split_process_message
from bobravoz.runtime.endpoints import Endpoint
from bobravoz.runtime.groups import lone_exception
from bobravoz.runtime.grpc_bridge import (
    ClientStream,
    GrpcChannel,
    GrpcServer,
    open_grpc_channel,
    open_grpc_loop,
    serve_grpc,
)
from bobravoz.runtime.guard import ENHANCE_YOUR_CALM, NO_ERROR, PROTOCOL_ERROR, BoundaryLimits
from bobravoz.runtime.handshake import BindingIdentity
from bobravoz.runtime.hub import Hub, HubSettings, TopologyRegistry, boundary_limits, open_hub
from bobravoz.runtime.metrics import TransportMetrics
from bobravoz.runtime.status import RemoteStatusError, StatusCode
from bobravoz.runtime.story import parse_story
from bobravoz.runtime.tls import ReloadingContext
from bobravoz.runtime.topology import streaming_topology
from bobravoz.sdk.local_pki import LocalPki

STORY = """
apiVersion: bubustack.io/v1alpha1
kind: Story
metadata: {name: hostile, namespace: default}
spec:
  pattern: realtime
  steps:
    - {name: producer, ref: {name: source}}
    - {name: consumer, ref: {name: sink}, needs: [producer]}
"""
TOPOLOGY = streaming_topology(parse_story(STORY))
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
MIB = 1024 * 1024


def who(storyrun: str, step: str, generation: int = 1) -> BindingIdentity:
    return BindingIdentity(storyrun=storyrun, namespace="default", step=step, generation=generation)


def packet(payload: bytes) -> bytes:
    return bytes(ProcessRequest(packet=DataPacket(binary=BinaryFrame(payload=payload))))


def payload_of(message: bytes) -> bytes:
    found, _flow = split_process_message(message)
    assert found is not None
    return DataPacket.parse(found).binary.payload


def rss_kib() -> int:
    """This process's resident set size (VmRSS), in KiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS in /proc/self/status")


def settle() -> int:
    gc.collect()
    return rss_kib()


def report(case: str, before: int, after: int) -> None:
    print(f"\nRSS {case}: {before / 1024:.1f} MiB -> {after / 1024:.1f} MiB")


# -- the hub under test ----------------------------------------------------------------------


@dataclass
class Running:
    hub: Hub
    metrics: TransportMetrics
    endpoint: Endpoint
    channel: GrpcChannel
    server: GrpcServer

    @property
    def refusals(self) -> collections.Counter[str]:
        return self.metrics.boundary_refusals

    def server_socket_of(self, client: trio.SocketStream) -> Any:
        """The hub's end of the connection ``client`` opened."""
        assert self.server.guard is not None
        local = client.socket.getsockname()
        for state in self.server.guard.states():
            handle = state.handle
            sock = handle.socket() if hasattr(handle, "socket") else None
            if sock is not None and sock.getpeername() == local:
                return sock
        raise AssertionError(f"no server connection from {local}")

    async def quiesce(self, *probes: object) -> None:
        """Return once every task is blocked and the hub's state (and ``probes``, callables)
        did not change since the previous idle point."""
        previous = None
        while True:
            await trio.testing.wait_all_tasks_blocked(0.01)
            now = (
                self.hub.open_streams(),
                self.hub.undelivered(),
                dict(self.refusals),
                *(probe() for probe in probes),  # type: ignore[operator]
            )
            if now == previous:
                return
            previous = now


def hub_settings(**changes: object) -> HubSettings:
    boundary = changes.pop("boundary", BoundaryLimits())
    return msgspec.structs.replace(
        HubSettings(),
        heartbeat_interval=600.0,
        boundary=boundary,
        **changes,  # type: ignore[arg-type]
    )


@contextlib.asynccontextmanager
async def running_hub(
    settings: HubSettings | None = None,
    *,
    client_limits: BoundaryLimits | None = None,
    tls: ReloadingContext | None = None,
) -> AsyncIterator[Running]:
    """A hub serving on loopback as ``serve_hub`` does (its limits from ``settings``; mTLS
    with ``tls``), and a grpclib client connection to it (plaintext: with ``tls`` it is there
    but never used). A failure inside comes out as itself."""
    settings = settings or hub_settings()
    metrics = TransportMetrics(CollectorRegistry(), component="hub")
    serve = functools.partial(
        serve_grpc, limits=boundary_limits(settings), refusals=metrics.boundary_refusals, tls=tls
    )
    try:
        async with (
            open_grpc_loop(),
            open_hub(TopologyRegistry(TOPOLOGY), metrics, settings) as hub,
            trio.open_nursery() as nursery,
        ):
            server = await nursery.start(
                serve, Endpoint(host="127.0.0.1", port=0), [PROCESS_METHOD], hub.accept
            )
            async with open_grpc_channel(server.endpoint, limits=client_limits) as channel:
                yield Running(hub, metrics, server.endpoint, channel, server)
            nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        raise lone_exception(group) from None


@dataclass
class Pair:
    """A producer and a consumer of one StoryRun on the test's grpclib channel."""

    producer: ClientStream
    consumer: ClientStream
    received: list[bytes] = field(default_factory=list)

    async def roundtrip(self, payload: bytes) -> None:
        """Send ``payload`` and wait until the consumer has it."""
        await self.producer.send(packet(payload))
        with trio.fail_after(10):
            while payload not in self.received:
                self.received.extend(payload_of(m) for m in await self.consumer.receive_batch())


@contextlib.asynccontextmanager
async def pair(run: Running, storyrun: str = "good") -> AsyncIterator[Pair]:
    channel = run.channel
    async with (
        channel.open_stream(PROCESS_METHOD, who(storyrun, "consumer").headers()) as consumer,
        channel.open_stream(PROCESS_METHOD, who(storyrun, "producer").headers()) as producer,
    ):
        yield Pair(producer, consumer)


# -- bare peers ------------------------------------------------------------------------------


def parse_frames(data: bytes) -> list[hyperframe.frame.Frame]:
    frames = []
    while len(data) >= 9:
        frame, length = hyperframe.frame.Frame.parse_frame_header(memoryview(data[:9]))
        if len(data) < 9 + length:
            break
        frame.parse_body(memoryview(data[9 : 9 + length]))
        frames.append(frame)
        data = data[9 + length :]
    return frames


async def read_until_closed(sock: trio.SocketStream, limit: float = 10.0) -> bytes:
    """Everything the server sends until it closes the connection (bounded by ``limit``)."""
    received = b""
    with trio.fail_after(limit):
        while True:
            try:
                chunk = await sock.receive_some(65536)
            except trio.BrokenResourceError:  # reset after a GOAWAY: the end as well
                return received
            if not chunk:
                return received
            received += chunk


def goaway_of(data: bytes) -> hyperframe.frame.GoAwayFrame:
    goaways = [f for f in parse_frames(data) if isinstance(f, hyperframe.frame.GoAwayFrame)]
    assert goaways, f"no GOAWAY in {parse_frames(data)}"
    return goaways[-1]


@dataclass
class RawPeer:
    """One HTTP/2 connection driven frame by frame by ``h2``; received frames are processed
    (and acknowledged) while ``reading`` is set."""

    sock: trio.SocketStream
    authority: str
    conn: h2.connection.H2Connection = field(
        default_factory=lambda: h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        )
    )
    goaway: h2.events.ConnectionTerminated | None = None
    closed: trio.Event = field(default_factory=trio.Event)
    statuses: dict[int, tuple[StatusCode, str]] = field(default_factory=dict)
    #: Streams the server answered (response headers, trailers-only refusals included).
    responded: set[int] = field(default_factory=set)
    changed: trio.Event = field(default_factory=trio.Event)
    reading: bool = True
    #: Whether the server's SETTINGS with its stream limit arrived (and were acknowledged).
    settled: bool = False

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(cls, endpoint: Endpoint, *, reading: bool = True) -> AsyncIterator[RawPeer]:
        sock = await trio.open_tcp_stream(endpoint.host, endpoint.port)
        async with sock, trio.open_nursery() as nursery:
            peer = cls(sock, f"{endpoint.host}:{endpoint.port}", reading=reading)
            peer.conn.initiate_connection()
            await peer.flush()
            if reading:
                nursery.start_soon(peer._pump)
                # The server's stream limit is in force once we acknowledged its SETTINGS
                # (h2 applies 100 until then): wait for them, our ACK goes out first.
                await peer.wait(lambda: peer.settled or peer.closed.is_set())
            yield peer
            nursery.cancel_scope.cancel()

    def headers(self, identity: BindingIdentity, **extra: str) -> list[tuple[str, str]]:
        return [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", PROCESS_METHOD),
            (":authority", self.authority),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
            *identity.headers().items(),
            *extra.items(),
        ]

    async def flush(self) -> bool:
        """Send what h2 queued; False once the server closed the connection."""
        data = self.conn.data_to_send()
        if data:
            try:
                await self.sock.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return False
        return True

    def open(self, identity: BindingIdentity, **extra: str) -> int:
        stream_id = self.conn.get_next_available_stream_id()
        self.conn.send_headers(stream_id, self.headers(identity, **extra))
        return stream_id

    async def _pump(self) -> None:
        try:
            while True:
                try:
                    data = await self.sock.receive_some(65536)
                except trio.BrokenResourceError:
                    data = b""
                if not data:
                    return
                try:
                    events = self.conn.receive_data(data)
                except h2.exceptions.ProtocolError:
                    return
                for event in events:
                    self._handle(event)
                await self.flush()
                self.changed.set()
                self.changed = trio.Event()
        finally:
            self.closed.set()
            self.changed.set()

    def _handle(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.DataReceived):
            self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.goaway = event
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            changed = event.changed_settings
            self.settled |= h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS in changed
        elif isinstance(event, h2.events.ResponseReceived | h2.events.TrailersReceived):
            self.responded.add(event.stream_id)
            values = dict(event.headers)
            if "grpc-status" in values:
                self.statuses[event.stream_id] = (
                    StatusCode(int(values["grpc-status"])),
                    values.get("grpc-message", ""),
                )

    async def wait(self, condition: object, limit: float = 10.0) -> None:
        with trio.fail_after(limit):
            while not condition():  # type: ignore[operator]
                await self.changed.wait()


# -- garbage ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sent", "reason", "code", "debug"),
    [
        (
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(200),
            "bad_preface",
            PROTOCOL_ERROR,
            "preamble",
        ),
        (b"GET / HTTP/1.1\r\nHost: hub\r\n\r\n", "bad_preface", PROTOCOL_ERROR, "preamble"),
        # The preface and SETTINGS, then a DATA frame on stream 0 and junk.
        (
            PREFACE
            + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
            + b"\x00\x00\x08\x00\x00\x00\x00\x00\x00"
            b"garbage!",
            "protocol_error",
            PROTOCOL_ERROR,
            "",
        ),
    ],
    ids=["tls-hello", "http1", "preface-then-garbage"],
)
async def test_garbage_gets_goaway_and_the_others_keep_flowing(
    sent: bytes, reason: str, code: int, debug: str
) -> None:
    with trio.fail_after(30):
        async with running_hub() as run, pair(run) as good:
            await good.roundtrip(b"before")
            before = settle()
            for _ in range(20):
                sock = await trio.open_tcp_stream(run.endpoint.host, run.endpoint.port)
                async with sock:
                    await sock.send_all(sent)
                    goaway = goaway_of(await read_until_closed(sock))
                assert goaway.error_code == code
                assert debug in goaway.additional_data.decode().lower()
            assert run.refusals[reason] == 20
            await good.roundtrip(b"after")
            report(f"20 x {reason}", before, settle())


# -- oversized headers and metadata ------------------------------------------------------------


async def test_oversized_headers_get_goaway_enhance_your_calm() -> None:
    with trio.fail_after(30):
        async with running_hub() as run, pair(run) as good:
            async with RawPeer.connect(run.endpoint) as peer:
                big = {f"x-big-{i}": "v" * 1000 for i in range(20)}  # 20 KiB > 16 KiB
                peer.open(who("big", "producer"), **big)
                await peer.flush()
                await peer.wait(lambda: peer.closed.is_set())
            assert peer.goaway is not None
            assert peer.goaway.error_code == ENHANCE_YOUR_CALM
            assert b"16384" in (peer.goaway.additional_data or b"")
            assert run.refusals["header_list_too_large"] == 1
            assert run.hub.open_streams() == 2
            await good.roundtrip(b"still")


@pytest.mark.parametrize(
    ("extra", "reason", "named"),
    [
        ({f"x-m-{i}": "v" for i in range(60)}, "metadata_entries", "the limit is 64"),
        ({"x-long": "v" * 5000}, "metadata_value_too_long", "the limit is 4096 bytes"),
    ],
)
async def test_metadata_past_the_limits_refuses_the_stream(
    extra: dict[str, str], reason: str, named: str
) -> None:
    with trio.fail_after(30):
        async with running_hub() as run:
            headers = {**who("run", "producer").headers(), **extra}
            with pytest.raises(RemoteStatusError) as refused:
                async with run.channel.open_stream(PROCESS_METHOD, headers):
                    pass
            assert refused.value.code is StatusCode.RESOURCE_EXHAUSTED
            assert named in refused.value.message
            assert run.metrics.handshake_rejections == {reason: 1}
            async with pair(run) as good:  # the same connection still serves
                await good.roundtrip(b"fine")


# -- streams: abandoned, reset, per peer -----------------------------------------------------


async def test_thousands_of_streams_opened_and_abandoned_leave_nothing_behind() -> None:
    """Rounds of 8 connections opening 250 streams each (300 admitted, the rest refused
    RESOURCE_EXHAUSTED), then dropped with every admitted stream open. After a warm-up round
    (the allocator's high-water mark) the RSS stays flat."""
    settings = hub_settings(max_streams=300)
    rounds = 3
    with trio.fail_after(120):
        async with running_hub(settings) as run:
            rss = [settle()]
            for round_ in range(rounds):
                async with contextlib.AsyncExitStack() as stack:
                    peers = [
                        await stack.enter_async_context(RawPeer.connect(run.endpoint))
                        for _ in range(8)
                    ]
                    for index, peer in enumerate(peers):
                        for stream in range(250):
                            peer.open(who(f"ab-{round_}-{index}-{stream}", "consumer"))
                        await peer.flush()
                    for peer in peers:  # every stream answered: admitted or refused
                        await peer.wait(lambda peer=peer: len(peer.responded) == 250, 30)
                    assert run.hub.open_streams() == 300
                    refused = collections.Counter(
                        code for peer in peers for code, _ in peer.statuses.values()
                    )
                    assert refused == {StatusCode.RESOURCE_EXHAUSTED: 1700}, refused
                # Abandoned: the sockets close with every admitted stream still open.
                await run.quiesce()
                assert run.hub.open_streams() == 0
                assert run.hub.expire(trio.current_time() + settings.binding_ttl) == 300
                await run.quiesce()
                rss.append(settle())
            assert run.hub.live_bindings() == 0
            assert run.metrics.handshake_rejections == {"max_streams": 1700 * rounds}
            async with pair(run) as good:
                await good.roundtrip(b"alive")
            report(f"{rounds} x 2,000 streams opened and abandoned (start, warm)", rss[0], rss[1])
            report("  ... after the last round", rss[1], rss[-1])
            assert rss[-1] <= rss[1] * 1.10, rss


async def flood_resets(endpoint: Endpoint, pairs: int) -> tuple[int, RawPeer]:
    """Open a connection and send up to ``pairs`` HEADERS+RST_STREAM pairs until the server
    answers with GOAWAY; return how many were sent."""
    sent = 0
    async with RawPeer.connect(endpoint) as peer:
        identity = who("flood", "consumer")
        while sent < pairs and peer.goaway is None and not peer.closed.is_set():
            for _ in range(200):
                stream_id = peer.open(identity)
                peer.conn.reset_stream(stream_id, h2.errors.ErrorCodes.CANCEL)
                sent += 1
            if not await peer.flush():
                break
            await trio.lowlevel.checkpoint()
        await peer.wait(lambda: peer.closed.is_set(), 10)
    return sent, peer


async def test_rapid_resets_get_goaway_and_rss_stays_flat() -> None:
    rounds = 6
    with trio.fail_after(120):
        async with running_hub() as run, pair(run) as good:
            rss = []
            for round_ in range(rounds):
                sent, peer = await flood_resets(run.endpoint, 20_000)
                assert peer.goaway is not None, f"round {round_}: no GOAWAY after {sent} pairs"
                assert peer.goaway.error_code == ENHANCE_YOUR_CALM
                assert b"streams reset" in (peer.goaway.additional_data or b"")
                assert sent < 20_000
                await good.roundtrip(f"round {round_}".encode())  # others keep flowing
                await run.quiesce()
                rss.append(settle())
            assert run.refusals["rapid_reset"] == rounds
            assert run.hub.open_streams() == 2
            report(f"{rounds} rounds of HEADERS+RST floods (first, last round)", rss[0], rss[-1])
            assert rss[-1] <= rss[1] * 1.10, rss


async def test_streams_past_the_per_peer_bound_are_refused_resource_exhausted() -> None:
    settings = hub_settings(boundary=BoundaryLimits(max_streams_per_peer=3))
    with trio.fail_after(30):
        async with (
            running_hub(settings) as run,
            RawPeer.connect(run.endpoint) as one,
            RawPeer.connect(run.endpoint) as two,
        ):
            first = [one.open(who(f"p{index}", "consumer")) for index in range(2)]
            await one.flush()
            await one.wait(lambda: one.responded >= set(first))
            third = two.open(who("p2", "consumer"))
            fourth = two.open(who("p3", "consumer"))
            await two.flush()
            await two.wait(lambda: two.responded >= {third, fourth})
            assert third not in two.statuses  # admitted: headers, no status yet
            code, message = two.statuses[fourth]
            assert code is StatusCode.RESOURCE_EXHAUSTED
            assert "the limit per client" in message
            assert run.refusals["max_streams_per_peer"] == 1
            assert run.hub.open_streams() == 3


# -- connections -----------------------------------------------------------------------------


async def test_connections_past_the_bound_are_refused_with_goaway_and_serving_goes_on() -> None:
    # The test's own grpclib channel is one of the five.
    settings = hub_settings(boundary=BoundaryLimits(max_connections=5))
    with trio.fail_after(30):
        async with running_hub(settings) as run, pair(run) as good:
            socks = [
                await trio.open_tcp_stream(run.endpoint.host, run.endpoint.port) for _ in range(4)
            ]
            for sock in socks:
                await sock.send_all(PREFACE + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
            for _ in range(10):
                extra = await trio.open_tcp_stream(run.endpoint.host, run.endpoint.port)
                async with extra:
                    goaway = goaway_of(await read_until_closed(extra))
                assert goaway.error_code == ENHANCE_YOUR_CALM
                assert b"its limit" in goaway.additional_data
            assert run.refusals["max_connections"] == 10
            await good.roundtrip(b"served")
            await socks.pop().aclose()
            await run.quiesce()
            async with RawPeer.connect(run.endpoint) as peer:
                late = peer.open(who("late", "consumer"))
                await peer.flush()
                await peer.wait(lambda: late in peer.responded)
                assert late not in peer.statuses
                assert run.hub.open_streams() == 3
            for sock in socks:
                await sock.aclose()


async def test_idle_and_silent_connections_are_closed_by_the_timeouts(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limits = BoundaryLimits(handshake_timeout=10.0, idle_timeout=60.0, keepalive_time=0)
    settings = hub_settings(boundary=limits)
    async with running_hub(settings) as run:
        start = trio.current_time()
        silent = [
            await trio.open_tcp_stream(run.endpoint.host, run.endpoint.port) for _ in range(50)
        ]
        preface_only = []
        for _ in range(5):
            sock = await trio.open_tcp_stream(run.endpoint.host, run.endpoint.port)
            await sock.send_all(PREFACE + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
            preface_only.append(sock)
        for sock in silent + preface_only:
            goaway = goaway_of(await read_until_closed(sock, 20))
            assert (goaway.error_code, goaway.additional_data) == (
                NO_ERROR,
                b"no request within 10 s of connecting",
            )
        assert 10.0 <= trio.current_time() - start <= 12.0
        assert run.refusals["handshake_timeout"] == 55
        # A connection whose last stream ended: GOAWAY(NO_ERROR) once idle for 60 s.
        async with RawPeer.connect(run.endpoint) as peer:
            stream_id = peer.open(who("idle", "producer"))
            peer.conn.end_stream(stream_id)
            await peer.flush()
            await peer.wait(lambda: stream_id in peer.statuses, 5)
            ended = trio.current_time()
            await peer.wait(lambda: peer.closed.is_set(), 120)
        assert peer.goaway is not None
        assert (peer.goaway.error_code, peer.goaway.additional_data) == (
            NO_ERROR,
            b"no stream for 60 s",
        )
        assert 60.0 <= trio.current_time() - ended <= 62.0
        assert run.refusals["idle_timeout"] == 1
        for sock in silent + preface_only:
            await sock.aclose()


@pytest.mark.parametrize("sent", [b"", PREFACE], ids=["silent", "plaintext-to-tls"])
async def test_tls_handshakes_that_stall_or_fail_are_closed_and_counted(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, sent: bytes
) -> None:
    """On an mTLS listener a connection that never completes the TLS handshake is dropped at
    the first-request timeout (``handshake_timeout``), and one that speaks plaintext at once
    (``tls_handshake``); neither holds a connection slot afterwards."""
    server = ReloadingContext(LocalPki(tmp_path / "pki").issue("hub").files, "server")
    settings = hub_settings(boundary=BoundaryLimits(handshake_timeout=5.0))
    async with running_hub(settings, tls=server) as run:
        assert run.server.guard is not None
        start = trio.current_time()
        sock = await trio.open_tcp_stream(run.endpoint.host, run.endpoint.port)
        async with sock:
            await sock.send_all(sent)
            assert await read_until_closed(sock, 20) == b""
        reason = "handshake_timeout" if not sent else "tls_handshake"
        await run.quiesce(lambda: run.server.guard.connections())  # type: ignore[union-attr]
        assert run.refusals == {reason: 1}
        if not sent:
            assert 5.0 <= trio.current_time() - start <= 6.0
        assert run.server.guard.connections() == 0  # nothing held (the channel never dialled)


async def test_a_peer_that_stops_answering_is_closed_by_keepalive(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limits = BoundaryLimits(keepalive_time=30.0, keepalive_timeout=5.0, idle_timeout=0)
    async with running_hub(hub_settings(boundary=limits)) as run:
        async with RawPeer.connect(run.endpoint, reading=False) as peer:
            peer.open(who("mute", "consumer"))
            await peer.flush()
            opened = trio.current_time()
            data = await read_until_closed(peer.sock, 60)
        pings = [f for f in parse_frames(data) if isinstance(f, hyperframe.frame.PingFrame)]
        assert pings, "no keepalive ping"
        goaway = goaway_of(data)
        assert goaway.additional_data == b"no answer to a keepalive ping within 5 s"
        assert 35.0 <= trio.current_time() - opened <= 37.0
        assert run.refusals["keepalive_timeout"] == 1
        await run.quiesce()
        assert run.hub.open_streams() == 0


async def test_a_ping_flood_gets_goaway_too_many_pings() -> None:
    with trio.fail_after(30):
        async with running_hub() as run, RawPeer.connect(run.endpoint) as peer:
            for index in range(10):
                peer.conn.ping(struct.pack(">Q", index))
            await peer.flush()
            await peer.wait(lambda: peer.closed.is_set())
            assert peer.goaway is not None
            assert (peer.goaway.error_code, peer.goaway.additional_data) == (
                ENHANCE_YOUR_CALM,
                b"too_many_pings",
            )
            assert run.refusals["too_many_pings"] == 1


async def test_streams_open_past_the_maximum_duration_end_deadline_exceeded(
    autojump_clock: trio.testing.MockClock,
) -> None:
    settings = hub_settings(max_stream_duration=3600.0, binding_ttl=10 * 3600.0)
    async with running_hub(settings) as run, pair(run, "long") as long:
        await long.roundtrip(b"first")
        opened = trio.current_time()

        async def drain() -> None:
            while True:
                await long.consumer.receive_batch()

        with pytest.raises(RemoteStatusError) as ended:
            await drain()
        assert ended.value.code is StatusCode.DEADLINE_EXCEEDED
        assert "maximum stream duration" in ended.value.message
        assert 3600.0 <= trio.current_time() - opened <= 3600.0 + 3600.0 / 4
        assert run.refusals["max_stream_duration"] == 2  # the producer's stream as well


# -- peers that stop reading, big messages, isolation ---------------------------------------------


async def test_a_consumer_that_stops_reading_holds_its_own_buffer_only() -> None:
    with trio.fail_after(60):
        async with running_hub() as run, pair(run, "flowing") as good:
            await good.roundtrip(b"warm")
            before = settle()
            async with RawPeer.connect(run.endpoint, reading=False) as stuck:
                stuck.open(who("stuck", "consumer"))
                await stuck.flush()
                async with run.channel.open_stream(
                    PROCESS_METHOD, who("stuck", "producer").headers()
                ) as producer:
                    body = bytes(16 * 1024)

                    async def produce() -> None:
                        for index in range(2000):
                            await producer.send(packet(index.to_bytes(4, "big") + body))

                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(produce)
                        for index in range(300):  # meanwhile the other StoryRun flows
                            await good.roundtrip(f"good {index}".encode())
                        await run.quiesce()
                        during = settle()
                        stuck_binding = run.hub.find("default", "stuck", "consumer")
                        assert stuck_binding is not None
                        assert stuck_binding.channel.statistics().depth_bytes <= 10 * MIB
                        nursery.cancel_scope.cancel()
            report("a consumer that stopped reading, 2,000 x 16 KiB sent to it", before, during)
            assert during - before < 96 * 1024


async def test_a_peer_flooding_settings_without_reading_is_dropped() -> None:
    """Every SETTINGS is answered with an ACK; a peer that never reads them makes them pile
    up in the hub until ``max_write_backlog`` (the classic SETTINGS flood): then it is
    dropped. Both ends' socket buffers are made small, so the kernel holds little of it."""
    with trio.fail_after(60):
        async with running_hub() as run, pair(run) as good:
            before = settle()
            sock = trio.socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            await sock.connect((run.endpoint.host, run.endpoint.port))
            async with trio.SocketStream(sock) as stream:
                await stream.send_all(PREFACE + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
                await run.quiesce()
                run.server_socket_of(stream).setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
                settings_frame = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
                with contextlib.suppress(trio.BrokenResourceError):
                    for _ in range(2000):  # 2,000,000 SETTINGS, never reading an ACK
                        await stream.send_all(settings_frame * 1000)
                    pytest.fail("the hub kept a peer that never read 2,000,000 SETTINGS acks")
            assert run.refusals["write_backlog"] == 1
            await good.roundtrip(b"unaffected")
            report("a SETTINGS flood from a peer that never reads", before, settle())


async def test_a_message_declared_over_the_limit_is_refused_at_its_prefix() -> None:
    settings = hub_settings(max_packet_bytes=1 * MIB)
    with trio.fail_after(30):
        async with running_hub(settings) as run, pair(run) as good:
            await good.roundtrip(b"before")
            before = settle()
            async with RawPeer.connect(run.endpoint) as peer:
                stream_id = peer.open(who("big", "producer"))
                declared = 200 * MIB
                peer.conn.send_data(stream_id, struct.pack(">?I", False, declared))
                await peer.flush()
                chunk = bytes(16 * 1024)
                with contextlib.suppress(h2.exceptions.H2Error):
                    for _ in range(128):  # 2 MiB of the body, as the windows allow
                        if stream_id in peer.statuses:
                            break
                        while peer.conn.local_flow_control_window(stream_id) < len(chunk):
                            await peer.changed.wait()
                        peer.conn.send_data(stream_id, chunk)
                        await peer.flush()
                await peer.wait(lambda: stream_id in peer.statuses)
            code, message = peer.statuses[stream_id]
            assert code is StatusCode.RESOURCE_EXHAUSTED
            assert f"a {declared}-byte message" in message
            assert f"{MIB}-byte limit" in message
            assert run.refusals["max_recv_bytes"] == 1
            await good.roundtrip(b"after")
            report("a 200 MiB-declared message (1 MiB limit)", before, settle())


# A stream window small enough that a few hundred packets fill it, and the same window for the
# connection: the configuration in which one stalled stream used to stall its connection.
OLD_WINDOWS = BoundaryLimits(
    stream_window=1 * MIB, connection_window=1 * MIB, read_ahead_bytes=0, reset_burst=0
)
NEW_WINDOWS = BoundaryLimits(stream_window=1 * MIB, connection_window=4 * MIB, reset_burst=0)


@pytest.mark.parametrize(
    ("limits", "isolated"),
    [(NEW_WINDOWS, True), (OLD_WINDOWS, False)],
    ids=["read-ahead", "control"],
)
async def test_a_stalled_storyrun_does_not_stall_another_on_the_same_connection(
    limits: BoundaryLimits, isolated: bool
) -> None:
    """Two StoryRuns on one HTTP/2 connection; one consumer stops reading. With the read-ahead
    the other gets all 300 packets; the control (equal windows, no read-ahead: the old
    configuration) shows the test can fail: the other StoryRun starves."""
    settings = hub_settings(boundary=limits, max_buffered_bytes=256 * MIB)
    body = bytes(8 * 1024)
    with trio.fail_after(60):
        async with (
            running_hub(settings, client_limits=limits) as run,
            pair(run, "stalled") as stalled,
            pair(run, "flowing") as flowing,
        ):
            # The stalled consumer never reads: 1,500 packets are more than its bridge pipe
            # (512) and windows take; the rest wait in the hub ("block").
            async def produce(into: Pair, count: int) -> None:
                for index in range(count):
                    await into.producer.send(packet(index.to_bytes(4, "big") + body))

            async def consume() -> None:
                while len(flowing.received) < 300:
                    flowing.received.extend(
                        payload_of(m) for m in await flowing.consumer.receive_batch()
                    )

            async with trio.open_nursery() as nursery:
                nursery.start_soon(produce, stalled, 1500)
                await run.quiesce()  # the stalled StoryRun has filled what it can
                nursery.start_soon(produce, flowing, 300)
                if isolated:
                    await consume()
                    assert [int.from_bytes(p[:4], "big") for p in flowing.received] == list(
                        range(300)
                    )
                else:
                    nursery.start_soon(consume)
                    await run.quiesce(lambda: len(flowing.received))
                    assert len(flowing.received) < 300
                nursery.cancel_scope.cancel()
