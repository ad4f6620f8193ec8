"""The hub in process: stream lifecycle, cutovers, topology changes, budgets and loss accounting.

Scope: :mod:`bobravoz.runtime.hub` (``open_hub`` + ``serve_grpc`` with ``Hub.accept``, or
``serve_hub`` with a :class:`TopologyFeed`) on loopback TCP inside ``open_grpc_loop``, driven by
grpclib clients from ``open_grpc_channel`` (and raw grpclib channels where a connection must
die under streams that never finished). Each test pins one promise of the "No silent loss"
issue: open streams are a live set released in ``finally``; a superseded stream is halted at
once (even when its peer stopped reading) and its unwritten backlog goes back to the front of
the step's buffer, so the two generations together get every packet once, in order (also
when the old one lags behind what was written to it); routing follows
the current topology object; removed and expired bindings are released with their buffer
counted lost by reason and their metric series gone; hub-wide budgets and a failing admission
refuse only the stream concerned; and per binding
``queued = written + dropped + lost + buffered + in flight``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import grpclib.const
import msgspec
import pytest
import trio
import trio_asyncio
from grpclib.client import Channel
from procs import eventually
from prometheus_client import CollectorRegistry, generate_latest

from bobravoz.protocol.constants import PROCESS_METHOD
from bobravoz.protocol.gen.transport.v1 import BinaryFrame, DataPacket, ProcessRequest
from bobravoz.protocol.packets import (
    is_heartbeat,
    read_envelope,
    read_metadata,
    split_process_message,
)
from bobravoz.protocol.wire import PacketLayout
from bobravoz.runtime.endpoints import Endpoint
from bobravoz.runtime.grpc_bridge import (
    ClientStream,
    ForwardingCodec,
    GrpcChannel,
    RawMessage,
    open_grpc_channel,
    open_grpc_loop,
    serve_grpc,
)
from bobravoz.runtime.handshake import BindingIdentity
from bobravoz.runtime.hub import (
    Hub,
    HubSettings,
    TopologyFeed,
    TopologyRegistry,
    boundary_limits,
    open_hub,
)
from bobravoz.runtime.hub.binding import StepBinding
from bobravoz.runtime.hub.registry import RemoveTopology, SetTopology
from bobravoz.runtime.hub.service import serve_hub
from bobravoz.runtime.metrics import RELEASED, TransportMetrics
from bobravoz.runtime.pump import StreamLedger
from bobravoz.runtime.status import RemoteStatusError, StatusCode
from bobravoz.runtime.story import parse_story
from bobravoz.runtime.topology import Topology, streaming_topology

NS = "default"
DATA = PacketLayout.DATA_PACKET
LOOPBACK = Endpoint(host="127.0.0.1", port=0)

PAIR = """
metadata: {name: pair, namespace: default}
spec:
  pattern: realtime
  steps:
    - {name: src, ref: {name: e}}
    - {name: sink, ref: {name: e}, needs: [src]}
"""

FAN_OUT = """
metadata: {name: fan, namespace: default}
spec:
  pattern: realtime
  steps:
    - {name: src, ref: {name: e}}
    - {name: sink-a, ref: {name: e}, needs: [src]}
    - {name: sink-b, ref: {name: e}, needs: [src]}
"""


def story_to(sink: str) -> str:
    """A Story ``src -> <sink>``: two of these differ only in where ``src`` routes."""
    return f"""
metadata: {{name: story-{sink}, namespace: default}}
spec:
  pattern: realtime
  steps:
    - {{name: src, ref: {{name: e}}}}
    - {{name: {sink}, ref: {{name: e}}, needs: [src]}}
"""


def other(sink: str) -> str:
    """The sink of the other Story in the topology-swap test."""
    return "sink-b" if sink == "sink-a" else "sink-a"


def topology(text: str) -> Topology:
    """A fresh Topology object for the Story ``text``."""
    return streaming_topology(parse_story(text))


def headers(step: str, *, run: str = "run-1", generation: int = 1) -> dict[str, str]:
    return BindingIdentity(storyrun=run, namespace=NS, step=step, generation=generation).headers()


def request(number: int, payload: int = 32) -> bytes:
    """A ProcessRequest whose packet carries ``number`` in its metadata (key ``n``)."""
    return bytes(
        ProcessRequest(
            packet=DataPacket(
                metadata={"n": str(number)}, binary=BinaryFrame(payload=b"x" * payload)
            )
        )
    )


@dataclass(frozen=True, slots=True)
class Delivered:
    """One data packet as a consumer received it: the hub's stamp and the producer's number."""

    sequence: int
    number: int


def delivered(messages: Iterable[bytes]) -> list[Delivered]:
    """The data packets in ``messages`` (ProcessResponses), heartbeats left out."""
    found: list[Delivered] = []
    for message in messages:
        packet, _flow = split_process_message(message)
        if packet is None or is_heartbeat(packet, DATA):
            continue
        envelope = read_envelope(packet, DATA)
        assert envelope is not None, "the hub stamps an envelope on every data packet"
        found.append(Delivered(envelope.sequence, int(read_metadata(packet, DATA)["n"])))
    return found


async def produce(stream: ClientStream, numbers: Iterable[int], payload: int = 32) -> None:
    """Send one request per number, one message at a time (as a connector does)."""
    for number in numbers:
        await stream.send(request(number, payload))


async def read_until(stream: ClientStream, into: list[Delivered], done: Callable[[], bool]) -> None:
    """Receive into ``into`` until ``done()`` holds."""
    while not done():
        into.extend(delivered(await stream.receive_batch()))


async def read_to_end(stream: ClientStream, into: list[Delivered]) -> RemoteStatusError | None:
    """Receive into ``into`` until the call ends; return the status it ended with (None: OK)."""
    try:
        while True:
            into.extend(delivered(await stream.receive_batch()))
    except RemoteStatusError as ended:
        return ended
    except trio.EndOfChannel:
        return None


async def until(condition: Callable[[], bool], what: Callable[[], str], limit: float = 10) -> None:
    """Wait (bounded poll of real state) until ``condition()``; fail with ``what()`` if not."""
    try:
        await eventually(condition, limit)
    except trio.TooSlowError:
        pytest.fail(f"not within {limit} s: {what()}")


def ledger(binding: StepBinding) -> dict[str, int]:
    """Where every packet queued for ``binding`` is now, from its counters and probes."""
    depth, _depth_bytes, in_flight = binding.probe()
    counters = binding.counters
    return {
        "written": counters.packets_out,
        "dropped": sum(counters.dropped.values()),
        "lost": sum(counters.lost.values()),
        "buffered": depth,
        "in_flight": in_flight,
    }


def assert_accounted(binding: StepBinding, queued: int) -> None:
    """``queued = written + dropped + lost + buffered + in flight`` for ``binding``, where
    ``queued`` is what the test routed to it (and what its buffer saw offered)."""
    parts = ledger(binding)
    assert binding.channel.statistics().offered == queued, binding.key
    assert sum(parts.values()) == queued, (binding.key, queued, parts)


@dataclass
class Running:
    hub: Hub
    endpoint: Endpoint
    metrics: TransportMetrics
    registry: CollectorRegistry


def quiet(**changes: Any) -> HubSettings:
    """Hub settings with ``changes`` and no heartbeats during a test (they are not data)."""
    return msgspec.structs.replace(HubSettings(), heartbeat_interval=600.0, **changes)


@contextlib.asynccontextmanager
async def running_hub(
    topologies: TopologyRegistry, settings: HubSettings | None = None
) -> AsyncIterator[Running]:
    """``open_hub`` served on loopback by ``serve_grpc(..., hub.accept)``, as ``serve_hub``
    does, with the Hub object in reach. Must run inside ``open_grpc_loop``."""
    settings = settings or quiet()
    registry = CollectorRegistry()
    metrics = TransportMetrics(registry, component="hub")
    async with open_hub(topologies, metrics, settings) as hub, trio.open_nursery() as nursery:
        server = await nursery.start(
            functools.partial(
                serve_grpc,
                limits=boundary_limits(settings),
                refusals=metrics.boundary_refusals,
            ),
            LOOPBACK,
            [PROCESS_METHOD],
            hub.accept,
        )
        try:
            yield Running(hub, server.endpoint, metrics, registry)
        finally:
            nursery.cancel_scope.cancel()


def local(text: str = PAIR) -> TopologyRegistry:
    """Local mode: every StoryRun of the namespace follows one Story."""
    return TopologyRegistry(topology(text))


async def refused(channel: GrpcChannel, metadata: dict[str, str]) -> RemoteStatusError:
    """The status a stream opened with ``metadata`` is refused with (fails if admitted)."""
    with pytest.raises(RemoteStatusError) as caught:
        async with channel.open_stream(PROCESS_METHOD, metadata):
            pass
    return caught.value


def scraped(registry: CollectorRegistry) -> str:
    """The ``/metrics`` exposition text of ``registry``."""
    return generate_latest(registry).decode()


# -- (a) open streams are a live set -----------------------------------------------------------


async def test_overlapping_replacements_leave_only_open_streams_counted() -> None:
    """200 generations of one consumer replace each other one after the other, each while
    its predecessor is still connected (all 199 are superseded: ABORTED); then 100 more are
    opened at once (each superseded or refused as stale). ``open_streams()`` comes back to the
    one stream really open, the newest generation's, then to 0 when it closes. (The old hub
    counted every admitted stream and uncounted only a binding's current one: every
    superseded stream leaked.)"""
    in_order, burst = 200, 100
    with trio.fail_after(30):
        async with (
            open_grpc_loop(),
            running_hub(local()) as running,
            open_grpc_channel(running.endpoint) as channel,
        ):
            hub = running.hub
            outcomes: collections.Counter[str] = collections.Counter()
            release = trio.Event()

            def gauge() -> float | None:
                return running.registry.get_sample_value(
                    "bobravoz_open_streams", {"component": "hub"}
                )

            async def consumer(
                generation: int, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
            ) -> None:
                """Hold generation ``generation`` open until superseded or released."""
                try:
                    async with (
                        channel.open_stream(
                            PROCESS_METHOD, headers("sink", generation=generation)
                        ) as stream,
                        trio.open_nursery() as inner,
                    ):
                        task_status.started()

                        async def on_release() -> None:
                            await release.wait()
                            inner.cancel_scope.cancel()

                        inner.start_soon(on_release)
                        ended = await read_to_end(stream, [])
                        outcomes[ended.code.name if ended else "OK"] += 1
                        inner.cancel_scope.cancel()
                except RemoteStatusError as refusal:
                    outcomes[refusal.code.name] += 1
                    task_status.started()

            async with trio.open_nursery() as nursery:
                for generation in range(1, in_order + 1):
                    await nursery.start(consumer, generation)
                await until(
                    lambda: outcomes.total() == in_order - 1,
                    lambda: f"outcomes {dict(outcomes)}",
                )
                assert outcomes == {"ABORTED": in_order - 1}
                binding = hub.find(NS, "run-1", "sink")
                assert binding is not None
                await until(
                    lambda: hub.open_streams() == 1,
                    lambda: f"open_streams() = {hub.open_streams()}, 1 stream is open",
                )
                for generation in range(in_order + 1, in_order + burst + 1):
                    nursery.start_soon(consumer, generation)
                newest = in_order + burst
                await until(
                    lambda: outcomes.total() == newest - 1,
                    lambda: f"outcomes {dict(outcomes)}",
                )
                assert set(outcomes) <= {"ABORTED", "FAILED_PRECONDITION"}, outcomes
                await until(
                    lambda: hub.open_streams() == 1,
                    lambda: f"open_streams() = {hub.open_streams()}, 1 stream is open",
                )
                assert binding.current is not None
                assert binding.current.generation == newest
                assert len(binding.sessions) == 1
                assert gauge() == 1
                release.set()
            await until(
                lambda: hub.open_streams() == 0,
                lambda: f"open_streams() = {hub.open_streams()} after every client closed",
            )
            assert gauge() == 0
            assert binding.current is None
            assert not binding.sessions
            assert running.metrics.bindings[binding.key].lost == {}


# -- (b) streams never finished, connections gone ---------------------------------------------


async def _hold_streams(
    endpoint: Endpoint, metadatas: Sequence[dict[str, str]]
) -> tuple[Channel, list[asyncio.Task[None]]]:
    """(asyncio) Open one raw grpclib connection with a Process stream per metadata; return
    once the hub admitted all of them. The streams never send, end or cancel."""
    channel = Channel(endpoint.host, endpoint.port, codec=ForwardingCodec())
    loop = asyncio.get_running_loop()
    admitted = [loop.create_future() for _ in metadatas]

    async def hold(metadata: dict[str, str], ready: asyncio.Future[None]) -> None:
        async with channel.request(
            PROCESS_METHOD,
            grpclib.const.Cardinality.STREAM_STREAM,
            RawMessage,
            RawMessage,
            metadata=metadata,
        ) as stream:
            await stream.send_request()
            await stream.recv_initial_metadata()
            ready.set_result(None)
            await stream.recv_message()  # until the connection goes away

    tasks = [
        asyncio.create_task(hold(metadata, ready))
        for metadata, ready in zip(metadatas, admitted, strict=True)
    ]
    await asyncio.gather(*admitted)
    return channel, tasks


async def _drop_connection(channel: Channel, tasks: list[asyncio.Task[None]]) -> int:
    """(asyncio) Close the connection under its streams; return how many of them failed."""
    channel.close()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    return sum(isinstance(result, BaseException) for result in results)


async def test_streams_whose_connections_die_are_released_and_admission_recovers() -> None:
    """300 streams (the whole ``max_streams`` budget) are admitted on three connections and
    never finished; the connections are closed. ``open_streams()`` returns to 0 and a new
    stream is admitted and served."""
    count, per_connection = 300, 100
    with trio.fail_after(30):
        async with (
            open_grpc_loop(),
            running_hub(local(), quiet(max_streams=count)) as running,
        ):
            hub = running.hub
            held = []
            for first in range(0, count, per_connection):
                metadatas = [
                    headers("sink", run=f"run-{index}")
                    for index in range(first, first + per_connection)
                ]
                held.append(
                    await trio_asyncio.aio_as_trio(_hold_streams)(running.endpoint, metadatas)
                )
            assert hub.open_streams() == count
            async with open_grpc_channel(running.endpoint) as channel:
                full = await refused(channel, headers("sink", run="one-more"))
                assert full.code == StatusCode.RESOURCE_EXHAUSTED
            for channel_and_tasks in held:
                failed = await trio_asyncio.aio_as_trio(_drop_connection)(*channel_and_tasks)
                assert failed == per_connection  # each one saw its connection die
            await until(
                lambda: hub.open_streams() == 0,
                lambda: f"open_streams() = {hub.open_streams()} after the connections closed",
            )
            assert all(binding.current is None for binding in hub.bindings())
            async with (
                open_grpc_channel(running.endpoint) as channel,
                channel.open_stream(PROCESS_METHOD, headers("sink", run="run-new")) as sink,
                channel.open_stream(PROCESS_METHOD, headers("src", run="run-new")) as src,
            ):
                await src.send(request(7))
                got: list[Delivered] = []
                await read_until(sink, got, lambda: bool(got))
                assert got == [Delivered(1, 7)]
                assert hub.open_streams() == 2


# -- (c) routing follows the current topology object -----------------------------------------


async def test_topology_swaps_never_route_to_a_stale_step() -> None:
    """A StoryRun's topology is swapped 10 times through the feed between Story A (src ->
    sink-a) and Story B (src -> sink-b), each time a new Topology object, while one ``src``
    stream stays open. Every packet reaches the sink of the topology current when it was
    sent and no other. (The old hub computed an actor's targets once per stream and cached
    them by ``id(topology)``.)"""
    swaps = 10
    registry = TopologyRegistry()
    feed = TopologyFeed()
    metrics = TransportMetrics(CollectorRegistry(), component="hub")
    with trio.fail_after(20):
        async with open_grpc_loop(), trio.open_nursery() as nursery:
            endpoint = await nursery.start(
                functools.partial(serve_hub, feed=feed), LOOPBACK, registry, metrics, quiet()
            )

            async def switch(sink: str) -> None:
                await feed.set(NS, "run-1", topology(story_to(sink)))

                def applied() -> bool:
                    routes = registry.lookup(NS, "run-1")
                    return routes is not None and routes.has_step(sink)

                await until(applied, lambda: f"the feed applying the topology to {sink}")

            received: dict[str, list[Delivered]] = {"sink-a": [], "sink-b": []}
            expected: dict[str, list[int]] = {"sink-a": [], "sink-b": []}
            await switch("sink-a")
            async with (
                open_grpc_channel(endpoint) as channel,
                channel.open_stream(PROCESS_METHOD, headers("src")) as src,
                trio.open_nursery() as readers,
            ):

                async def consume(
                    sink: str, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                ) -> None:
                    async with channel.open_stream(PROCESS_METHOD, headers(sink)) as stream:
                        task_status.started()
                        await read_to_end(stream, received[sink])

                async def connect(sink: str) -> None:
                    await readers.start(consume, sink)

                async def send_to(current: str, number: int) -> None:
                    expected[current].append(number)
                    await src.send(request(number))
                    await until(
                        lambda: (
                            [d.number for d in received["sink-a"] + received["sink-b"]]
                            == expected["sink-a"] + expected["sink-b"]
                            or number in [d.number for d in received[other(current)]]
                        ),
                        lambda: f"packet {number} at {current}: received {received}",
                    )
                    assert [d.number for d in received[current]] == expected[current], (
                        f"packet {number} was routed to {other(current)}, a stale step"
                    )

                await connect("sink-a")
                await send_to("sink-a", 0)
                for swap in range(1, swaps + 1):
                    current = "sink-b" if swap % 2 else "sink-a"
                    await switch(current)
                    if swap == 1:
                        await connect("sink-b")
                    await send_to(current, swap)
                readers.cancel_scope.cancel()
            for sink, got in received.items():
                assert [d.number for d in got] == expected[sink]
                assert [d.sequence for d in got] == list(range(1, len(got) + 1))
            assert set(metrics.bindings) == {f"{NS}/run-1/{step}" for step in ("src", *received)}
            nursery.cancel_scope.cancel()


# -- (d) RemoveTopology releases the run -----------------------------------------------------


async def test_removed_storyrun_releases_its_bindings_series_and_counts_its_buffer_lost() -> None:
    """Two StoryRuns, each with 5 packets buffered for a ``sink`` that never connected and an
    open ``src`` stream. Removing run-1 ends its stream (NOT_FOUND), releases both of its
    bindings and their metric series, and counts its 5 buffered packets lost as
    ``storyrun_removed``; run-2 is untouched."""
    registry = TopologyRegistry()
    with trio.fail_after(15):
        async with (
            open_grpc_loop(),
            running_hub(registry) as running,
            open_grpc_channel(running.endpoint) as channel,
        ):
            hub, metrics = running.hub, running.metrics
            for run in ("run-1", "run-2"):
                hub.apply(SetTopology(NS, run, topology(PAIR)))
            async with (
                channel.open_stream(PROCESS_METHOD, headers("src", run="run-1")) as src1,
                channel.open_stream(PROCESS_METHOD, headers("src", run="run-2")) as src2,
            ):
                await produce(src1, range(5))
                await produce(src2, range(5))

                def buffered(run: str) -> int:
                    binding = hub.find(NS, run, "sink")
                    return binding.channel.depth if binding is not None else 0

                await until(
                    lambda: buffered("run-1") == buffered("run-2") == 5,
                    lambda: f"5 packets buffered per run: {buffered('run-1')}, {buffered('run-2')}",
                )
                sink1 = hub.find(NS, "run-1", "sink")
                assert sink1 is not None
                assert hub.live_bindings() == 4
                series = metrics.series()
                assert "run-1" in scraped(running.registry)

                hub.apply(RemoveTopology(NS, "run-1"))

                ended = await read_to_end(src1, [])
                assert ended is not None
                assert ended.code == StatusCode.NOT_FOUND
                await until(
                    lambda: hub.live_bindings() == 2,
                    lambda: f"live bindings {[b.key for b in hub.bindings()]}",
                )
                assert {b.key for b in hub.bindings()} == {
                    f"{NS}/run-2/src",
                    f"{NS}/run-2/sink",
                }
                assert metrics.series() < series
                assert not [key for key in metrics.bindings if "/run-1/" in key]
                assert not [key for key in metrics.depth_probes if "/run-1/" in key]
                assert "run-1" not in scraped(running.registry)
                assert sink1.counters.lost == {"storyrun_removed": 5}
                assert metrics.bindings[RELEASED].lost == {"storyrun_removed": 5}
                assert_accounted(sink1, queued=5)
                assert buffered("run-2") == 5
                assert hub.open_streams() == 1
                gone = await refused(channel, headers("sink", run="run-1"))
                assert gone.code == StatusCode.NOT_FOUND


# -- (e) idle bindings expire ----------------------------------------------------------------


async def test_idle_bindings_expire_after_the_ttl_with_their_buffer_counted_lost() -> None:
    """run-1's ``src`` sends 4 packets to a ``sink`` that never connects and disconnects;
    run-2's ``sink`` stays connected. ``expire(now)`` releases nothing before the TTL;
    ``expire(now + ttl)`` releases run-1's two bindings (4 packets lost as
    ``binding_expired``) and keeps run-2's connected one."""
    ttl = 120.0
    with trio.fail_after(15):
        async with (
            open_grpc_loop(),
            running_hub(local(), quiet(binding_ttl=ttl)) as running,
            open_grpc_channel(running.endpoint) as channel,
            channel.open_stream(PROCESS_METHOD, headers("sink", run="run-2")),
        ):
            hub, metrics = running.hub, running.metrics
            async with channel.open_stream(PROCESS_METHOD, headers("src")) as src:
                await produce(src, range(4))

                def sink() -> StepBinding | None:
                    return hub.find(NS, "run-1", "sink")

                await until(
                    lambda: (found := sink()) is not None and found.channel.depth == 4,
                    lambda: "4 packets buffered for run-1/sink",
                )
            source = hub.find(NS, "run-1", "src")
            assert source is not None
            await until(lambda: source.current is None, lambda: "run-1/src's stream closing")
            idle = sink()
            assert idle is not None
            assert hub.live_bindings() == 3

            assert hub.expire(trio.current_time()) == 0
            assert hub.live_bindings() == 3
            assert hub.expire(trio.current_time() + ttl) == 2

            assert {b.key for b in hub.bindings()} == {f"{NS}/run-2/sink"}
            assert idle.counters.lost == {"binding_expired": 4}
            assert source.counters.lost == {}
            assert metrics.bindings[RELEASED].lost == {"binding_expired": 4}
            assert set(metrics.bindings) == {RELEASED, f"{NS}/run-2/sink"}
            assert set(metrics.depth_probes) == {f"{NS}/run-2/sink"}
            assert "run-1" not in scraped(running.registry)
            assert_accounted(idle, queued=4)
            assert_accounted(source, queued=0)


# -- (f) the binding budget ------------------------------------------------------------------


async def test_binding_budget_refuses_new_bindings_with_resource_exhausted() -> None:
    """With ``max_bindings=3`` and three bindings alive, a fourth step's stream is refused
    RESOURCE_EXHAUSTED, a packet routed to a fourth binding is counted lost as ``budget`` on
    its source, and once a binding is released a new one is admitted."""
    with trio.fail_after(15):
        async with (
            open_grpc_loop(),
            running_hub(local(), quiet(max_bindings=3, binding_ttl=120.0)) as running,
            open_grpc_channel(running.endpoint) as channel,
            channel.open_stream(PROCESS_METHOD, headers("src", run="run-1")) as src,
            channel.open_stream(PROCESS_METHOD, headers("sink", run="run-2")),
        ):
            hub, metrics = running.hub, running.metrics
            async with channel.open_stream(PROCESS_METHOD, headers("sink", run="run-3")):
                assert hub.live_bindings() == 3
                full = await refused(channel, headers("sink", run="run-4"))
                assert full.code == StatusCode.RESOURCE_EXHAUSTED
                assert "binding budget" in full.message
                assert metrics.handshake_rejections["max_bindings"] == 1
                assert hub.open_streams() == 3

                await produce(src, range(2))  # to run-1/sink: a fourth binding
                source = hub.find(NS, "run-1", "src")
                assert source is not None
                await until(
                    lambda: source.counters.packets_in == 2,
                    lambda: f"run-1/src received {source.counters.packets_in} of 2",
                )
                assert source.counters.lost == {"budget": 2}
                assert hub.find(NS, "run-1", "sink") is None
                assert hub.live_bindings() == 3
            third = hub.find(NS, "run-3", "sink")
            assert third is not None
            await until(lambda: third.current is None, lambda: "run-3/sink's stream closing")
            assert hub.expire(trio.current_time() + 120.0) == 1
            async with channel.open_stream(PROCESS_METHOD, headers("sink", run="run-4")):
                assert hub.live_bindings() == 3
                assert hub.find(NS, "run-4", "sink") is not None


# -- (g) a failing admission refuses one stream ----------------------------------------------


async def test_an_exception_in_admission_refuses_only_that_stream(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Admission raising RuntimeError for one stream answers it INTERNAL, counts an
    ``internal`` rejection and leaves nothing behind; the next stream is admitted and
    served."""
    with trio.fail_after(15):
        async with (
            open_grpc_loop(),
            running_hub(local()) as running,
            open_grpc_channel(running.endpoint) as channel,
        ):
            hub = running.hub
            admit = hub._admit  # noqa: SLF001 - the seam the failure is injected at
            calls = 0

            def failing_once(stream: Any) -> Any:
                nonlocal calls
                calls += 1
                if calls == 1:
                    raise RuntimeError("admission blew up")
                return admit(stream)

            monkeypatch.setattr(hub, "_admit", failing_once)
            failed = await refused(channel, headers("sink"))
            assert failed.code == StatusCode.INTERNAL
            assert running.metrics.handshake_rejections == {"internal": 1}
            assert hub.open_streams() == 0
            assert hub.live_bindings() == 0
            async with (
                channel.open_stream(PROCESS_METHOD, headers("sink")) as sink,
                channel.open_stream(PROCESS_METHOD, headers("src")) as src,
            ):
                await produce(src, range(3))
                got: list[Delivered] = []
                await read_until(sink, got, lambda: len(got) >= 3)
                assert got == [Delivered(1, 0), Delivered(2, 1), Delivered(3, 2)]
                assert hub.open_streams() == 2
            assert calls == 3


# -- (h) cutover of a consumer while a producer streams -------------------------------------


def assert_split_in_order(old: list[Delivered], new: list[Delivered], total: int) -> None:
    """The old generation got a gap-free prefix of the hub's sequence and the new one exactly
    the rest, each in order; together every packet sent, none twice."""
    old_sequences = [d.sequence for d in old]
    new_sequences = [d.sequence for d in new]
    missing = sorted(set(range(1, total + 1)) - set(old_sequences) - set(new_sequences))
    assert not missing, (
        f"{len(missing)} of {total} packets reached neither generation "
        f"(first {missing[:5]}; generation 1 got {len(old)}, generation 2 got {len(new)})"
    )
    assert old_sequences == list(range(1, len(old) + 1)), "generation 1: gaps, repeats or order"
    assert new_sequences == list(range(len(old) + 1, total + 1)), "generation 2 after the cutover"
    assert [d.number for d in old + new] == list(range(total)), "the producer's order"


async def test_cutover_while_a_producer_streams_delivers_every_packet_once() -> None:
    """A producer sends 3,000 packets; after the consumer's generation 1 has read a third,
    generation 2 connects. Generation 1 ends ABORTED with a gap-free prefix, generation 2
    gets exactly the rest in order (the withdrawn backlog first), nothing is counted lost or
    dropped and the consumer's ledger balances."""
    total = 3000
    with trio.fail_after(20):
        async with (
            open_grpc_loop(),
            running_hub(local()) as running,
            open_grpc_channel(running.endpoint) as producer_connection,
            open_grpc_channel(running.endpoint) as old_connection,
            open_grpc_channel(running.endpoint) as new_connection,
        ):
            hub = running.hub
            old: list[Delivered] = []
            new: list[Delivered] = []
            async with (
                old_connection.open_stream(PROCESS_METHOD, headers("sink", generation=1)) as first,
                producer_connection.open_stream(PROCESS_METHOD, headers("src")) as src,
                trio.open_nursery() as nursery,
            ):
                nursery.start_soon(produce, src, range(total))
                await read_until(first, old, lambda: len(old) >= total // 3)
                ended: list[RemoteStatusError | None] = []

                async def drain_old() -> None:
                    ended.append(await read_to_end(first, old))

                nursery.start_soon(drain_old)
                async with new_connection.open_stream(
                    PROCESS_METHOD, headers("sink", generation=2)
                ) as second:
                    await read_until(second, new, lambda: bool(new) and new[-1].sequence >= total)
            assert ended
            assert ended[0] is not None
            assert ended[0].code == StatusCode.ABORTED
            assert_split_in_order(old, new, total)
            sink = hub.find(NS, "run-1", "sink")
            assert sink is not None
            await until(lambda: not sink.sessions, lambda: "the consumer's sessions closing")
            assert sink.counters.lost == {}
            assert sink.counters.dropped == {}
            assert ledger(sink)["written"] == total
            assert_accounted(sink, queued=total)


async def written_to(stream: Any, count: int) -> None:
    """Wait until the hub has written ``count`` packets to the server stream ``stream``."""
    await until(
        lambda: stream.written == count,
        lambda: f"the hub writing packet {count} (written: {stream.written})",
    )


async def test_cutover_of_a_lagging_consumer_keeps_what_it_had_not_read() -> None:
    """Generation 1 of the consumer lags: the hub has written 700 packets to its connection
    and it has read none when generation 2 replaces it. Generation 1 then reads everything it
    still can; whatever it cannot get must reach generation 2 or be counted lost: the union
    of both generations is every packet, and the hub's ledger matches what the clients saw."""
    total, step = 700, 50
    with trio.fail_after(20):
        async with (
            open_grpc_loop(),
            running_hub(local()) as running,
            open_grpc_channel(running.endpoint) as producer_connection,
            open_grpc_channel(running.endpoint) as old_connection,
            open_grpc_channel(running.endpoint) as new_connection,
            old_connection.open_stream(PROCESS_METHOD, headers("sink", generation=1)) as first,
            producer_connection.open_stream(PROCESS_METHOD, headers("src")) as src,
        ):
            sink = running.hub.find(NS, "run-1", "sink")
            assert sink is not None
            assert sink.current is not None
            stream = sink.current.stream
            for start in range(0, total, step):
                # In steps, so that the hub's bridge never holds more than one step.
                await produce(src, range(start, start + step))
                await written_to(stream, start + step)
            old: list[Delivered] = []
            new: list[Delivered] = []
            async with new_connection.open_stream(
                PROCESS_METHOD, headers("sink", generation=2)
            ) as second:
                ended = await read_to_end(first, old)
                assert ended is not None
                assert ended.code == StatusCode.ABORTED
                with trio.move_on_after(5):
                    await read_until(second, new, lambda: len(old) + len(new) >= total)
            written, lost = sink.counters.packets_out, dict(sink.counters.lost)
        vanished = written - len(old) - len(new)
        assert vanished == sum(lost.values()), (
            f"the hub counts {written} packets written to the consumer and lost {lost}; "
            f"generation 1 received {len(old)}, generation 2 {len(new)}: "
            f"{vanished} vanished uncounted"
        )
        assert_split_in_order(old, new, total)


async def write_stalls(stream: Any, ledger: StreamLedger) -> None:
    """Wait until a write to ``stream`` is pending (taken from its bridge, not written) and
    nothing has moved for 4 polls in a row (bounded poll of real state)."""
    last: tuple[int, int] | None = None
    still = 0
    with trio.move_on_after(10):
        while still < 4:
            await trio.sleep(0.05)
            now = (stream.written, stream.outbound_depth())
            pending = ledger.handed - stream.written - stream.outbound_depth()
            still = still + 1 if now == last and pending > 0 else 0
            last = now
        return
    pytest.fail(f"the hub's writes to generation 1 never stalled ({last}, handed {ledger.handed})")


async def test_cutover_of_a_stalled_consumer_is_immediate_and_its_ledger_honest() -> None:
    """Generation 1 of the consumer stops reading while 16 KiB packets keep coming, until
    HTTP/2 flow control stalls a write to it. Generation 2 is admitted and served at once (a
    superseded stream is halted, not waited for) and gets the rest in order. When generation
    1 then reads what it was sent, the union is every packet, and the hub's ledger agrees
    with the clients: what they received is counted written, and nothing they received is
    counted lost."""
    total, payload = 1200, 16 * 1024
    old: list[Delivered] = []
    new: list[Delivered] = []
    served_after: float | None = None
    with trio.fail_after(30):
        async with (
            open_grpc_loop(),
            running_hub(local()) as running,
            open_grpc_channel(running.endpoint) as producer_connection,
            open_grpc_channel(running.endpoint) as old_connection,
            open_grpc_channel(running.endpoint) as new_connection,
            old_connection.open_stream(PROCESS_METHOD, headers("sink", generation=1)) as first,
            producer_connection.open_stream(PROCESS_METHOD, headers("src")) as src,
            trio.open_nursery() as nursery,
        ):
            sink = running.hub.find(NS, "run-1", "sink")
            assert sink is not None
            assert sink.current is not None
            stream = sink.current.stream
            nursery.start_soon(produce, src, range(total), payload)
            # Generation 1's bridge inbound (512 messages) is full, its HTTP/2 window used up
            # behind it: a write to it is pending and nothing moves any more.
            await write_stalls(stream, sink.current.ledger)
            stalled_at = f"{stream.written} written to generation 1, {sink.channel.depth} buffered"
            cutover = trio.current_time()
            with trio.move_on_after(10):
                async with new_connection.open_stream(
                    PROCESS_METHOD, headers("sink", generation=2)
                ) as second:
                    await read_until(second, new, lambda: bool(new))
                    served_after = trio.current_time() - cutover
                    await read_until(second, new, lambda: new[-1].sequence >= total)
                    ended = await read_to_end(first, old)  # generation 1 reads again
                    assert ended is not None
                    assert ended.code == StatusCode.ABORTED
            await until(lambda: not sink.sessions, lambda: "the consumer's sessions closing")
            written, lost = sink.counters.packets_out, dict(sink.counters.lost)
            nursery.cancel_scope.cancel()
    assert served_after is not None, f"generation 2 never served after the cutover ({stalled_at})"
    assert served_after < 5, f"generation 2 waited {served_after:.1f} s for the stalled one"
    assert_split_in_order(old, new, total)
    assert (written, lost) == (len(old) + len(new), {}), (
        f"the clients received {len(old) + len(new)} packets (generation 1 {len(old)}, "
        f"generation 2 {len(new)}), none twice; the hub counts {written} written and lost {lost}"
    )


# -- (i) drain on shutdown -------------------------------------------------------------------


async def test_shutdown_counts_the_buffer_of_a_never_connected_step_lost_and_balances() -> None:
    """Fan-out ``src -> sink-a, sink-b``: 50 packets, ``sink-a`` connected and served,
    ``sink-b`` never connects. ``drain`` stops admission and reports the 50 undelivered;
    closing the hub counts them lost as ``shutdown``, and every binding's ledger balances
    before and after."""
    total = 50
    with trio.fail_after(15):
        async with open_grpc_loop():
            async with (
                running_hub(local(FAN_OUT)) as running,
                open_grpc_channel(running.endpoint) as channel,
            ):
                hub, metrics = running.hub, running.metrics
                async with (
                    channel.open_stream(PROCESS_METHOD, headers("sink-a")) as sink_a,
                    channel.open_stream(PROCESS_METHOD, headers("src")) as src,
                ):
                    await produce(src, range(total))
                    got: list[Delivered] = []
                    await read_until(sink_a, got, lambda: len(got) >= total)
                    assert [d.sequence for d in got] == list(range(1, total + 1))
                    bindings = {b.step: b for b in hub.bindings()}
                    assert set(bindings) == {"src", "sink-a", "sink-b"}
                    await until(
                        lambda: bindings["sink-a"].in_flight() == 0,
                        lambda: f"sink-a ledger {ledger(bindings['sink-a'])}",
                    )
                    queued = {"src": 0, "sink-a": total, "sink-b": total}
                    for step, binding in bindings.items():
                        assert_accounted(binding, queued[step])
                    assert ledger(bindings["sink-b"])["buffered"] == total

                    assert await hub.drain(grace=5) == total
                    late = await refused(channel, headers("sink-b"))
                    assert late.code == StatusCode.UNAVAILABLE
            assert hub.live_bindings() == 0
            assert hub.open_streams() == 0
            assert bindings["sink-b"].counters.lost == {"shutdown": total}
            assert bindings["sink-a"].counters.lost == {}
            assert bindings["sink-a"].counters.packets_out == total
            for step, binding in bindings.items():
                assert_accounted(binding, queued[step])
            assert set(metrics.bindings) == {RELEASED}
            assert metrics.bindings[RELEASED].lost == {"shutdown": total}
            assert metrics.bindings[RELEASED].packets_out == total


# -- (h) runs stamped in one pass stop at a full buffer with no gap ---------------------------

SMALL_BLOCK = """
metadata: {name: small, namespace: default}
spec:
  pattern: realtime
  transports:
    - name: t
      transportRef: bobravoz-grpc
      streaming:
        backpressure: {buffer: {maxMessages: 7}}
  steps:
    - {name: src, ref: {name: e}, transport: t}
    - {name: sink, ref: {name: e}, needs: [src], transport: t}
"""


async def test_a_full_block_buffer_stops_a_batch_with_gap_free_sequences() -> None:
    """The producer's batches are routed in one compiled pass until the 7-message buffer of a
    sink that is not connected yet is full; the run stops there, the rest waits, and the sink
    then gets all 300 packets in order, stamped 1..300 with no gap and nothing counted lost."""
    total = 300
    async with open_grpc_loop(), running_hub(local(SMALL_BLOCK)) as running:  # noqa: SIM117
        async with open_grpc_channel(running.endpoint) as channel:
            async with channel.open_stream(PROCESS_METHOD, headers("src")) as producer:
                await producer.send_batch([request(number) for number in range(total)])
                hub = running.hub
                await until(
                    lambda: (
                        (sink := hub.find(NS, "run-1", "sink")) is not None
                        and sink.channel.depth == 7
                    ),
                    lambda: "the sink's buffer did not fill",
                )
                got: list[Delivered] = []
                async with channel.open_stream(PROCESS_METHOD, headers("sink")) as consumer:
                    await read_until(consumer, got, lambda: len(got) >= total)
                sink = hub.find(NS, "run-1", "sink")
                assert sink is not None
                assert [item.number for item in got] == list(range(total))
                assert [item.sequence for item in got] == list(range(1, total + 1))
                assert not sink.counters.lost


# -- (i) the per-packet path makes no reference cycles ----------------------------------------


async def _garbage_cycles_routing(count: int) -> int:
    """Objects the cycle collector frees after ``count`` packets go producer -> hub ->
    consumer with the collector off (everything else is freed by reference counting)."""
    import gc

    async with open_grpc_loop(), running_hub(local()) as running:  # noqa: SIM117
        async with open_grpc_channel(running.endpoint) as channel:
            async with (
                channel.open_stream(PROCESS_METHOD, headers("sink")) as consumer,
                channel.open_stream(PROCESS_METHOD, headers("src")) as producer,
            ):
                got: list[Delivered] = []
                await produce(producer, range(50))  # warm: connections, bindings, caches
                await read_until(consumer, got, lambda: len(got) >= 50)
                gc.collect()
                gc.disable()
                try:
                    await producer.send_batch([request(n) for n in range(50, 50 + count)])
                    await read_until(consumer, got, lambda: len(got) >= 50 + count)
                    return gc.collect()
                finally:
                    gc.enable()


async def test_routing_packets_leaves_no_reference_cycles_per_packet() -> None:
    """What the collector finds does not grow with the packets routed: the hot path frees
    everything it allocates by reference counting (no collector pauses grow with traffic)."""
    few = await _garbage_cycles_routing(200)
    many = await _garbage_cycles_routing(4000)
    assert many - few < 200, (few, many)  # far less than one object per packet
