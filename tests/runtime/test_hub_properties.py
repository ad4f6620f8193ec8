"""Property: whatever program of sends, connects, cutovers, abrupt cancels (also of a consumer
whose write stalled mid-batch), stale generations, topology removals and expiries runs against
a hub, no packet is lost or duplicated silently.

Scope: :class:`bobravoz.runtime.hub.Hub` (:func:`open_hub`) served by :func:`serve_grpc` on
loopback TCP inside one ``trio.run`` (grpclib on trio-asyncio), driven by grpclib clients of
a producer → consumer Story for three StoryRuns: two in local mode (any StoryRun of the
Story's namespace) and one in cluster mode (routed by :class:`SetTopology`, removable).

Hypothesis generates the program; each example runs it whole in a fresh hub. After every
step the test waits until the hub and the clients are quiescent (every task blocked and the
hub's state unchanged across two idle points: never a fixed sleep) and checks, with the
hub's own counters and probes:

- per binding: ``queued = written + dropped + lost + buffered + in flight``, where queued is
  what the test routed to it since it was (re)created, and the channel's ``offered`` agrees;
- across every binding and the ``(released)`` series: the same sum equals everything routed;
- ``hub.open_streams()`` equals the client streams the test holds open; bindings, depth
  probes, metric series and supervised children exist exactly for what the model says is
  alive; the shared byte budget equals the bytes buffered;
- per consumer stream: every packet the hub wrote was received (unless the client left
  abruptly), in strictly increasing hub sequence, stamped with the binding's stream id, and
  across the streams of one binding's life the sequences keep increasing (a withdrawn
  backlog comes back in order, nothing twice).

At the end a final consumer generation drains every run, and every packet id sent was
received exactly once by some consumer generation, or is counted: lost (with a reason),
dropped, or written to a stream its client abandoned. Explicit examples make every run cover
each mechanism (stalled write lost as ``stream_broken``, withdrawn backlog requeued at the
front, cutover, removal and expiry); ``--hypothesis-show-statistics`` shows the paths the
generated programs took.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass, field
from typing import Any, Literal

import trio
import trio.testing
from hypothesis import HealthCheck, currently_in_test_context, event, example, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from bobravoz.protocol.constants import PROCESS_METHOD
from bobravoz.protocol.gen.transport.v1 import BinaryFrame, DataPacket, ProcessRequest
from bobravoz.protocol.packets import is_heartbeat, read_envelope, split_process_message
from bobravoz.protocol.wire import PacketLayout
from bobravoz.runtime.endpoints import Endpoint
from bobravoz.runtime.groups import lone_exception
from bobravoz.runtime.grpc_bridge import GrpcChannel, open_grpc_channel, open_grpc_loop, serve_grpc
from bobravoz.runtime.handshake import BindingIdentity
from bobravoz.runtime.hub import Hub, HubSettings, TopologyRegistry, open_hub
from bobravoz.runtime.hub.binding import StepBinding, StreamSession
from bobravoz.runtime.hub.registry import RemoveTopology, SetTopology
from bobravoz.runtime.metrics import RELEASED, BindingCounters, TransportMetrics
from bobravoz.runtime.status import RemoteStatusError, StatusCode
from bobravoz.runtime.story import parse_story
from bobravoz.runtime.topology import Topology, streaming_topology

STORY = """
apiVersion: bubustack.io/v1alpha1
kind: Story
metadata: {name: props, namespace: default}
spec:
  pattern: realtime
  steps:
    - {name: producer, ref: {name: source}}
    - {name: consumer, ref: {name: sink}, needs: [producer]}
"""
TOPOLOGY: Topology = streaming_topology(parse_story(STORY))
DATA = PacketLayout.DATA_PACKET
SETTINGS = HubSettings()
#: Reasons a packet routed to a consumer may be counted lost in these programs.
LOSS_REASONS = {"stream_broken", "storyrun_removed", "binding_expired"}


@dataclass(frozen=True)
class RunSpec:
    namespace: str
    name: str
    #: Routed by a SetTopology (cluster mode) and removable; else local mode.
    managed: bool

    def identity(self, step: str, generation: int) -> BindingIdentity:
        return BindingIdentity(
            storyrun=self.name, namespace=self.namespace, step=step, generation=generation
        )

    def key(self, step: str) -> str:
        return f"{self.namespace}/{self.name}/{step}"


RUNS = (
    RunSpec("cluster", "managed", managed=True),
    RunSpec("default", "local-a", managed=False),
    RunSpec("default", "local-b", managed=False),
)

# -- the program ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Send:
    """The run's producer sends ``count`` packets (unique ids) and ends its stream; ``cancel``
    also abandons the live consumer: right after the packets were queued ("queued"), right
    after the hub routed them ("ingested"), or from inside the consumer after it read that
    many of them (an int)."""

    run: int
    count: int
    pad: int
    cancel: Literal["queued", "ingested"] | int | None


@dataclass(frozen=True)
class Stall:
    """The live consumer stops reading; the producer sends more than the client's bridge and
    the HTTP/2 window hold, so the hub's write stalls mid-batch; then the consumer leaves
    (the batch being written is lost with the stream, the rest goes back to the buffer)."""

    run: int


STALL_PACKETS = 2000
STALL_PAD = 8 * 1024


@dataclass(frozen=True)
class Connect:
    """A consumer connects at the run's last generation (``bump``: one higher); with a
    consumer open this is a cutover."""

    run: int
    bump: bool


@dataclass(frozen=True)
class Cancel:
    """The live consumer leaves its ``open_stream`` block abruptly (RST_STREAM)."""

    run: int


@dataclass(frozen=True)
class Stale:
    """A consumer one generation older than the connected one tries to connect."""

    run: int


@dataclass(frozen=True)
class Remove:
    """RemoveTopology for the run (only a cluster-mode run actually goes away)."""

    run: int


@dataclass(frozen=True)
class Restore:
    """SetTopology for the run again."""

    run: int


@dataclass(frozen=True)
class Expire:
    """Expire every binding with no stream, as if ``binding_ttl`` had passed."""


Op = Send | Stall | Connect | Cancel | Stale | Remove | Restore | Expire

#: Mostly the cluster-mode run and one local run, so operations meet on the same bindings.
runs = st.integers(0, 1) | st.integers(0, len(RUNS) - 1)
sends = st.builds(
    Send,
    run=runs,
    count=st.integers(1, 12),
    pad=st.sampled_from([0, 100, 2000, 16 * 1024]),
    cancel=st.none() | st.sampled_from(["queued", "ingested"]) | st.integers(1, 12),
)
connects = st.builds(Connect, run=runs, bump=st.booleans())
#: Sends and connects weigh double: most other operations need a consumer or packets.
operations: st.SearchStrategy[Op] = st.one_of(
    sends,
    connects,
    sends,
    connects,
    st.builds(Stall, run=runs),
    st.builds(Cancel, run=runs),
    st.builds(Stale, run=runs),
    st.builds(Remove, run=runs),
    st.builds(Restore, run=runs),
    st.just(Expire()),
)

# -- the clients and the model ----------------------------------------------------------------


@dataclass(eq=False)
class Consumer:
    run: int
    generation: int
    #: Which life of the run's consumer binding this stream belonged to.
    epoch: int
    key: str
    session: StreamSession
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    #: (hub sequence, packet id) of every data packet read, in order.
    received: list[tuple[int, int]] = field(default_factory=list)
    open: bool = True
    #: "cancelled" (the client left), "end" (OK), "broken", or the status the hub ended it with.
    ended: StatusCode | str | None = None
    expected_end: StatusCode | None = None
    cancel_after: int | None = None
    #: Stop reading (until the stream is abandoned).
    stalled: bool = False

    @property
    def abandoned(self) -> bool:
        return self.ended == "cancelled"


class World:
    """The hub, the test's clients, and the model of what must be true."""

    def __init__(
        self,
        hub: Hub,
        metrics: TransportMetrics,
        channel: GrpcChannel,
        clients: trio.Nursery,
    ) -> None:
        self.hub = hub
        self.metrics = metrics
        self.channel = channel
        self.clients = clients
        self.next_id = 0
        #: Every packet id the hub ingested from a producer.
        self.sent: set[int] = set()
        self.consumers: list[Consumer] = []
        self.generation = [0] * len(RUNS)
        self.present = [True] * len(RUNS)
        self.epoch = [0] * len(RUNS)
        #: Packets routed to the run's consumer binding since it was (re)created.
        self.routed = [0] * len(RUNS)
        self.total_routed = 0
        #: Whether the run's consumer / producer binding should exist now.
        self.consumer_alive = [False] * len(RUNS)
        self.producer_alive = [False] * len(RUNS)
        self.stale_refusals = 0

    # -- clients --

    def live_consumer(self, run: int) -> Consumer | None:
        found = [c for c in self.consumers if c.run == run and c.open and c.ended is None]
        assert len(found) <= 1, f"run {run} has {len(found)} live consumers: {found}"
        return found[0] if found else None

    async def consume(
        self, run: int, generation: int, *, task_status: trio.TaskStatus[Consumer]
    ) -> None:
        spec = RUNS[run]
        headers = spec.identity("consumer", generation).headers()
        async with self.channel.open_stream(PROCESS_METHOD, headers) as stream:
            binding = self.hub.find(spec.namespace, spec.name, "consumer")
            assert binding is not None
            session = binding.current
            assert session is not None
            assert session.generation == generation
            consumer = Consumer(run, generation, self.epoch[run], binding.key, session)
            self.consumers.append(consumer)
            task_status.started(consumer)
            try:
                with consumer.scope:
                    while True:
                        if consumer.stalled:
                            await trio.sleep_forever()
                        for message in await stream.receive_batch():
                            if self.take(consumer, message):
                                return  # leave the block while the hub may be writing
            except RemoteStatusError as error:
                consumer.ended = error.code
            except trio.EndOfChannel:
                consumer.ended = "end"
            except trio.BrokenResourceError:
                consumer.ended = "broken"
            finally:
                consumer.open = False

    def take(self, consumer: Consumer, message: bytes) -> bool:
        """Record one message; True when the consumer is to abandon its stream now."""
        packet, _flow = split_process_message(message)
        assert packet is not None
        if is_heartbeat(packet, DATA):
            return False
        envelope = read_envelope(packet, DATA)
        assert envelope is not None
        assert envelope.stream_id == consumer.key
        payload = DataPacket.parse(packet).binary.payload
        consumer.received.append((envelope.sequence, int.from_bytes(payload[:8], "big")))
        if consumer.cancel_after is not None:
            consumer.cancel_after -= 1
            if consumer.cancel_after <= 0:
                consumer.ended = "cancelled"
                return True
        return False

    @staticmethod
    def abandon(consumer: Consumer | None) -> None:
        if consumer is not None and consumer.open and consumer.ended is None:
            consumer.ended = "cancelled"
            consumer.scope.cancel()

    # -- operations --

    async def run(self, op: Op) -> None:
        if isinstance(op, Send):
            await self.send(op)
        elif isinstance(op, Stall):
            await self.stall(op.run)
        elif isinstance(op, Connect):
            await self.connect(op.run, max(1, self.generation[op.run] + op.bump))
        elif isinstance(op, Cancel):
            self.abandon(self.live_consumer(op.run))
        elif isinstance(op, Stale):
            await self.stale(op.run)
        elif isinstance(op, Remove):
            self.remove(op.run)
        elif isinstance(op, Restore):
            spec = RUNS[op.run]
            self.hub.apply(SetTopology(spec.namespace, spec.name, TOPOLOGY))
            self.present[op.run] = True
        else:
            self.expire()

    async def send(self, op: Send) -> None:
        live = self.live_consumer(op.run)
        spec = RUNS[op.run]
        binding = self.hub.find(spec.namespace, spec.name, "consumer")
        if (
            live is None
            and binding is not None
            and binding.channel.depth + op.count > (binding.channel.statistics().max_messages)
        ):
            # Nobody reads and the buffer (``block``, over its bound after backlogs of
            # abandoned streams came back) has no room: the producer would wait for ever.
            return
        if isinstance(op.cancel, int) and live is not None:
            live.cancel_after = op.cancel
        routed = await self.produce(
            op.run, op.count, op.pad, live if op.cancel == "queued" else None
        )
        if routed and op.cancel == "ingested":
            self.abandon(live)

    async def stall(self, run: int) -> None:
        live = self.live_consumer(run)
        if live is None:
            return  # with nobody reading, 1,100 packets would fill the buffer (block)
        live.stalled = True
        live.cancel_after = None
        if await self.produce(run, STALL_PACKETS, STALL_PAD, None):
            await self.settle()  # the hub's write is stuck on HTTP/2 flow control now
            assert live.session.in_bridge() > 0, "the hub's write did not stall"
            self.abandon(live)

    async def produce(self, run: int, count: int, pad: int, abandon: Consumer | None) -> bool:
        """The run's producer sends ``count`` packets and ends its stream; True once the hub
        routed them all (False: refused, the run was removed). ``abandon`` is abandoned
        right after the packets were queued to the client's bridge."""
        spec = RUNS[run]
        ids = range(self.next_id, self.next_id + count)
        self.next_id += count
        messages = [
            bytes(
                ProcessRequest(
                    packet=DataPacket(
                        binary=BinaryFrame(payload=ident.to_bytes(8, "big") + bytes(pad))
                    )
                )
            )
            for ident in ids
        ]
        headers = spec.identity("producer", 1).headers()
        refusal: RemoteStatusError | None = None
        try:
            async with self.channel.open_stream(PROCESS_METHOD, headers) as stream:
                await stream.send_batch(messages)
                stream.close_send()
                self.abandon(abandon)
                # The hub ends the stream OK once it routed everything it read.
                while True:
                    try:
                        batch = await stream.receive_batch()
                    except trio.EndOfChannel:
                        break
                    assert all(
                        is_heartbeat(split_process_message(m)[0] or b"", DATA) for m in batch
                    )
        except RemoteStatusError as error:
            refusal = error
        if refusal is not None:
            assert not self.present[run], refusal
            assert refusal.code is StatusCode.NOT_FOUND
            return False
        assert self.present[run], "a removed StoryRun's producer was admitted"
        self.sent.update(ids)
        self.routed[run] += count
        self.total_routed += count
        self.producer_alive[run] = self.consumer_alive[run] = True
        return True

    async def connect(self, run: int, generation: int) -> None:
        old = self.live_consumer(run)
        refusal = await self.refusal_of(run, generation)
        if refusal is not None:
            assert not self.present[run], refusal
            assert refusal.code is StatusCode.NOT_FOUND
            return
        assert self.present[run], "a removed StoryRun's consumer was admitted"
        self.generation[run] = generation
        self.consumer_alive[run] = True
        if old is not None:
            old.expected_end = StatusCode.ABORTED

    async def refusal_of(self, run: int, generation: int) -> RemoteStatusError | None:
        """Connect a consumer at ``generation``: None when admitted, else the refusal."""
        try:
            await self.clients.start(self.consume, run, generation)
        except RemoteStatusError as refusal:
            return refusal
        return None

    async def stale(self, run: int) -> None:
        live = self.live_consumer(run)
        if live is None or live.generation < 2:
            return
        refusal = await self.refusal_of(run, live.generation - 1)
        assert refusal is not None, "a stale generation was admitted"
        assert refusal.code is StatusCode.FAILED_PRECONDITION, refusal
        self.stale_refusals += 1
        assert self.metrics.handshake_rejections["generation_stale"] == self.stale_refusals

    def remove(self, run: int) -> None:
        spec = RUNS[run]
        before = self.hub.bindings()
        self.hub.apply(RemoveTopology(spec.namespace, spec.name))
        if not spec.managed:
            # Local mode: the fixed Story still routes it; nothing is released.
            assert self.hub.bindings() == before
            return
        if not self.present[run]:
            return
        self.present[run] = False
        live = self.live_consumer(run)
        if live is not None:
            live.expected_end = StatusCode.NOT_FOUND
        self.end_epoch(run)
        self.producer_alive[run] = False

    def expire(self) -> None:
        expected = 0
        for run in range(len(RUNS)):
            if self.producer_alive[run]:
                expected += 1
                self.producer_alive[run] = False
            if self.consumer_alive[run] and self.live_consumer(run) is None:
                expected += 1
                self.end_epoch(run)
        released = self.hub.expire(trio.current_time() + SETTINGS.binding_ttl)
        assert released == expected

    def end_epoch(self, run: int) -> None:
        self.consumer_alive[run] = False
        self.routed[run] = 0
        self.epoch[run] += 1

    # -- quiescence and the invariants --

    def snapshot(self) -> tuple[Any, ...]:
        hub = self.hub
        return (
            hub.open_streams(),
            hub.live_bindings(),
            hub.budget.used,
            tuple(
                (b.key, b.probe(), b.counters.packets_in, sum(b.counters.lost.values()))
                for b in hub.bindings()
            ),
            tuple((len(c.received), c.open, c.ended) for c in self.consumers),
            tuple(hub._supervisor.children),  # noqa: SLF001 - the hub's own supervisor
        )

    async def settle(self) -> None:
        """Return once every task is blocked and nothing changed since the last idle point."""
        previous = None
        while True:
            await trio.testing.wait_all_tasks_blocked(0.002)
            now = self.snapshot()
            if now == previous:
                return
            previous = now

    def check(self) -> None:
        hub = self.hub
        open_consumers = [c for c in self.consumers if c.open]
        assert hub.open_streams() == len(open_consumers)
        for consumer in self.consumers:
            if consumer.open:
                assert consumer.ended is None, consumer
            elif not consumer.abandoned:
                # The hub ends a stream only when superseded or removed, with that status.
                assert consumer.expected_end is not None, consumer
                assert consumer.ended == consumer.expected_end, consumer
        bindings: dict[str, StepBinding] = {b.key: b for b in hub.bindings()}
        for run, spec in enumerate(RUNS):
            assert (spec.key("producer") in bindings) == self.producer_alive[run], spec
            assert (spec.key("consumer") in bindings) == self.consumer_alive[run], spec
            binding = bindings.get(spec.key("consumer"))
            if binding is None:
                assert self.routed[run] == 0
                continue
            live = self.live_consumer(run)
            assert binding.current is (live.session if live is not None else None)
            depth, _bytes, in_flight = binding.probe()
            assert in_flight == 0, "in flight at quiescence"
            if live is not None:
                assert depth == 0, "a connected consumer's buffer was not delivered"
            assert binding.channel.statistics().offered == self.routed[run]
            assert self.routed[run] == ledger(binding.counters) + depth + in_flight, (
                binding.key,
                binding.counters,
                depth,
            )
        # Metric series and probes exist exactly for the live bindings.
        assert set(self.metrics.depth_probes) == set(bindings)
        assert set(self.metrics.bindings) - {RELEASED} == set(bindings)
        # Conservation over every binding, live or released.
        released = self.metrics.bindings.get(RELEASED, BindingCounters())
        accounted = ledger(released) + sum(
            ledger(b.counters) + b.channel.depth + b.in_flight() for b in bindings.values()
        )
        assert accounted == self.total_routed
        written = sum(c.session.stream.written for c in self.consumers)
        assert written == released.packets_out + sum(
            b.counters.packets_out for b in bindings.values()
        )
        # What each stream was written, it received (unless its client left), in order.
        broken = lost_by_reason(self.counters()).get("stream_broken", 0)
        for consumer in self.consumers:
            count = consumer.session.stream.written
            if consumer.abandoned:
                # A client that left may have read part of a write that never completed
                # (counted lost as stream_broken); never more.
                assert len(consumer.received) <= count + broken, consumer
            else:
                assert len(consumer.received) == count, consumer
            assert increasing([sequence for sequence, _ in consumer.received]), consumer
        for run in range(len(RUNS)):
            for epoch in range(self.epoch[run] + 1):
                sequences = [
                    sequence
                    for c in self.consumers
                    if c.run == run and c.epoch == epoch
                    for sequence, _ in c.received
                ]
                assert increasing(sequences), (run, epoch, sequences)
        # The shared budget holds exactly the bytes buffered or leased.
        assert hub.budget.used == sum(
            stats.depth_bytes + stats.in_flight_bytes
            for stats in (b.channel.statistics() for b in bindings.values())
        )
        # One supervised child per open stream, plus the reaper and the sleep line; finished
        # ones bounded.
        supervisor = hub._supervisor  # noqa: SLF001 - the hub's own supervisor
        assert len(supervisor.children) == 2 + len(open_consumers)
        assert len(supervisor.statistics().children) <= 64 + len(supervisor.children)

    def counters(self) -> list[BindingCounters]:
        """The counters of every live binding and the ``(released)`` series."""
        released = self.metrics.bindings.get(RELEASED, BindingCounters())
        return [released, *(b.counters for b in self.hub.bindings())]

    async def finish(self) -> None:
        """A final consumer generation drains every run still routed; then every id is
        received exactly once or counted."""
        for run in range(len(RUNS)):
            if self.present[run]:
                await self.connect(run, self.generation[run] + 1)
                await self.settle()
                self.check()
        assert self.hub.undelivered() == 0
        received = [ident for c in self.consumers for _, ident in c.received]
        assert len(received) == len(set(received)), "a packet was delivered twice"
        assert set(received) <= self.sent
        counters = self.counters()
        lost = lost_by_reason(counters)
        dropped = sum(sum(c.dropped.values()) for c in counters)
        assert dropped == 0, "no policy drop can happen under block"
        assert set(lost) <= LOSS_REASONS, lost
        abandoned = [c for c in self.consumers if c.abandoned]
        # Written to a stream whose client left before reading it.
        unread = sum(max(0, c.session.stream.written - len(c.received)) for c in abandoned)
        # Read by a client that left, from a write that never completed (counted lost).
        overlap = sum(max(0, len(c.received) - c.session.stream.written) for c in abandoned)
        assert overlap <= lost.get("stream_broken", 0)
        missing = len(self.sent) - len(received)
        assert missing == sum(lost.values()) + unread - overlap, (lost, unread, overlap)
        if not abandoned:
            assert unread == 0
            assert lost.get("stream_broken", 0) == 0
        if currently_in_test_context():
            self.report(lost, unread)

    def report(self, lost: dict[str, int], unread: int) -> None:
        """Hypothesis events (``--hypothesis-show-statistics``): which paths the run took."""
        for reason in sorted(lost):
            event(f"lost: {reason}")
        if unread:
            event("written to an abandoned stream, unread")
        if any(c.ended == StatusCode.ABORTED for c in self.consumers):
            event("cutover")
        if any(c.ended == StatusCode.NOT_FOUND for c in self.consumers):
            event("consumer ended by removal")
        if any(c.received and c.abandoned for c in self.consumers):
            event("abandoned mid-delivery")
        if any(b.channel.statistics().requeued for b in self.hub.bindings()):
            event("backlog requeued")


def increasing(values: list[int]) -> bool:
    return all(a < b for a, b in itertools.pairwise(values))


def lost_by_reason(counters: list[BindingCounters]) -> dict[str, int]:
    lost: dict[str, int] = {}
    for c in counters:
        for reason, count in c.lost.items():
            lost[reason] = lost.get(reason, 0) + count
    return lost


def ledger(counters: BindingCounters) -> int:
    """written + dropped + lost of one binding's counters."""
    return counters.packets_out + sum(counters.dropped.values()) + sum(counters.lost.values())


async def run_program(program: list[Op]) -> None:
    metrics = TransportMetrics(CollectorRegistry(), component="hub")
    registry = TopologyRegistry(TOPOLOGY)
    with trio.fail_after(30):
        async with open_grpc_loop(), open_hub(registry, metrics, SETTINGS) as hub:
            for spec in RUNS:
                if spec.managed:
                    hub.apply(SetTopology(spec.namespace, spec.name, TOPOLOGY))
            async with trio.open_nursery() as server_nursery:
                server = await server_nursery.start(
                    serve_grpc, Endpoint(host="127.0.0.1", port=0), [PROCESS_METHOD], hub.accept
                )
                async with (
                    open_grpc_channel(server.endpoint) as channel,
                    trio.open_nursery() as clients,
                ):
                    world = World(hub, metrics, channel, clients)
                    await world.settle()
                    world.check()
                    for op in program:
                        await world.run(op)
                        await world.settle()
                        world.check()
                    await world.finish()
                    clients.cancel_scope.cancel()
                server_nursery.cancel_scope.cancel()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(operations, min_size=4, max_size=25))
# Every run covers each mechanism at least once, whatever the random programs do:
# a write stalled mid-batch and abandoned (lost stream_broken, backlog to the successor),
@example([Connect(0, bump=True), Stall(0), Connect(0, bump=True)])
# a backlog withdrawn from a stream abandoned while the hub hands it packets, then a
# same-generation reconnect,
@example([Connect(0, bump=True), Send(0, 12, 2000, "queued"), Connect(0, bump=False)])
# cutover, abandon mid-delivery, a stale generation, removal with a consumer connected, a
# refused producer, re-adding, expiry of a buffered binding,
@example(
    [
        Connect(0, bump=True),
        Send(0, 5, 0, None),
        Connect(0, bump=True),
        Send(0, 8, 100, 3),
        Connect(0, bump=True),
        Stale(0),
        Remove(0),
        Send(0, 3, 0, None),
        Restore(0),
        Send(0, 4, 0, None),
        Send(1, 6, 0, None),
        Expire(),
        Connect(1, bump=True),
    ]
)
# and a removal with packets buffered for a step that never connected.
@example([Send(0, 5, 100, None), Remove(0), Restore(0), Send(0, 2, 0, None)])
def test_random_programs_lose_nothing_silently(program: list[Op]) -> None:
    try:
        trio.run(functools.partial(run_program, program))
    except BaseExceptionGroup as group:
        raise lone_exception(group) from None
