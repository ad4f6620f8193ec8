"""The hub: ``HubService.Process`` streams become supervised binding actors that route packets.

Each accepted stream passes the handshake (:mod:`bobravoz.runtime.handshake`), is matched to a
step of the topology, and becomes one binding actor under the hub's supervisor. The actor reads
the stream in batches, validates every packet against the wire contract, and hands a copy to
the bounded buffer of each downstream step (fan-out), with the identity metadata rewritten to
the target and the hub's own per-target sequence. Each step's buffer is owned by that step's
binding and outlives its streams: packets for a step that has not connected yet (or is
reconnecting) wait there and are flushed in order when it connects. Packets travel as bytes.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
from collections.abc import AsyncIterator, Callable
from typing import Final, final

import msgspec
import trio

from bobravoz.protocol.packets import (
    Retargeter,
    is_heartbeat,
    retarget_packet,
    split_process_message,
    wrap_process_message,
)
from bobravoz.protocol.validation import validate_packet
from bobravoz.protocol.wire import PacketLayout, WireFormatError
from bobravoz.runtime.channel import BoundedChannel, ChannelLimits, DropPolicy, DropReason
from bobravoz.runtime.endpoints import Endpoint
from bobravoz.runtime.errors import SupervisorEscalation
from bobravoz.runtime.grpc_bridge import ServerStream, serve_grpc
from bobravoz.runtime.handshake import (
    STEP_HEADER,
    STORYRUN_NAME_HEADER,
    STORYRUN_NAMESPACE_HEADER,
    BindingIdentity,
    HandshakeError,
    check_handshake,
)
from bobravoz.runtime.metrics import BindingCounters, TransportMetrics
from bobravoz.runtime.status import RemoteStatusError, StatusCode
from bobravoz.runtime.supervisor import Restart, RestartPolicy, Supervisor, open_supervisor
from bobravoz.runtime.topology import Topology

log = logging.getLogger(__name__)

PROCESS_METHOD: Final = "/transport.v1.HubService/Process"
HEARTBEAT_KEY: Final = "bubu-heartbeat"
_DATA = PacketLayout.DATA_PACKET


def heartbeat_packet() -> bytes:
    """A frameless ``DataPacket`` whose metadata says ``bubu-heartbeat: true``."""
    return retarget_packet(
        b"", layout=_DATA, metadata_updates={HEARTBEAT_KEY: "true"}, sequence=None
    )


#: Primitive steps the hub passes packets through (the Go hub's behaviour for these types).
PASS_THROUGH_PRIMITIVES: Final = frozenset({"condition", "parallel", "sleep"})


def engram_targets(topology: Topology, step: str) -> tuple[str, ...]:
    """The engram steps a packet from ``step`` reaches, walking through primitive steps.

    ``condition``, ``parallel`` and ``sleep`` pass packets on (without evaluating or delaying
    them yet); ``stop`` and every other primitive end the path. Order follows the Story;
    each target appears once.
    """
    found: list[str] = []
    for edge in topology.downstream_of(step):
        node = topology.step(edge.target)
        if node.primitive is None:
            candidates: tuple[str, ...] = (node.id,)
        elif node.primitive in PASS_THROUGH_PRIMITIVES:
            candidates = engram_targets(topology, node.id)
        else:
            candidates = ()
        found.extend(target for target in candidates if target not in found)
    return tuple(found)


@final
class HubSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Tunables of one hub process (environment names in the README)."""

    #: Streams open at once before new ones get RESOURCE_EXHAUSTED.
    max_streams: int = 2000
    #: Seconds of silence on a stream before the hub sends it a heartbeat packet.
    heartbeat_interval: float = 10.0
    #: Largest packet accepted, in bytes (BUBU_HUB_MAX_RECV_BYTES).
    max_packet_bytes: int = 10 * 1024 * 1024
    #: Restart budget of binding actors.
    restart: RestartPolicy = RestartPolicy()


@final
class StepBinding:
    """One step of one StoryRun as the hub sees it: its buffer and its current stream."""

    def __init__(
        self,
        *,
        namespace: str,
        storyrun: str,
        step: str,
        limits: ChannelLimits,
        counters: BindingCounters,
    ) -> None:
        self.namespace = namespace
        self.storyrun = storyrun
        self.step = step
        self.key = f"{namespace}/{storyrun}/{step}"
        self.counters = counters
        self.channel: BoundedChannel[bytes] = BoundedChannel(
            limits, name=self.key, on_drop=self._count_drop
        )
        self.stream: ServerStream | None = None
        self.generation = 0
        self.actor_name: str | None = None
        self.identity_metadata = {
            STORYRUN_NAME_HEADER: storyrun,
            STORYRUN_NAMESPACE_HEADER: namespace,
            STEP_HEADER: step,
        }
        self.retarget = Retargeter(
            layout=_DATA, metadata_updates=self.identity_metadata, stream_id=self.key
        )
        self._sequence = itertools.count(1)

    def next_sequence(self) -> int:
        """The sequence the hub stamps on the next packet for this step (stream_id = key)."""
        return next(self._sequence)

    def _count_drop(self, reason: DropReason, item: bytes, size: int) -> None:
        self.counters.dropped[str(reason)] += 1


def _limits_for(topology: Topology, step: str) -> ChannelLimits:
    edges = topology.upstream_of(step)
    if not edges:
        return ChannelLimits()
    buffer = edges[0].buffer
    return ChannelLimits(
        max_messages=buffer.max_messages,
        max_bytes=buffer.max_bytes,
        policy=DropPolicy(buffer.drop_policy),
    )


@final
class TopologyRegistry:
    """Which topology routes each StoryRun.

    Local mode has one Story: every StoryRun in its namespace uses it (``fixed``). In a
    cluster the controller hands each realtime StoryRun's topology over with :meth:`set`
    and takes it back with :meth:`remove`; the hub never reads the cluster itself.
    """

    def __init__(self, fixed: Topology | None = None) -> None:
        self.fixed = fixed
        self._runs: dict[tuple[str, str], Topology] = {}
        self._targets: dict[tuple[int, str], tuple[str, ...]] = {}

    def set(self, namespace: str, storyrun: str, topology: Topology) -> None:
        """Route StoryRun ``namespace/storyrun`` by ``topology``."""
        self._runs[(namespace, storyrun)] = topology

    def remove(self, namespace: str, storyrun: str) -> None:
        """Forget a StoryRun (new streams for it are refused)."""
        self._runs.pop((namespace, storyrun), None)

    def lookup(self, namespace: str, storyrun: str) -> Topology | None:
        """The topology of that StoryRun, or None."""
        found = self._runs.get((namespace, storyrun))
        if found is None and self.fixed is not None and self.fixed.namespace == namespace:
            return self.fixed
        return found

    def targets(self, topology: Topology, step: str) -> tuple[str, ...]:
        """:func:`engram_targets`, computed once per topology and step."""
        key = (id(topology), step)
        found = self._targets.get(key)
        if found is None:
            found = self._targets[key] = engram_targets(topology, step)
        return found


@final
class Hub:
    """Routes packets between the bindings of StoryRuns. Open with :func:`open_hub`."""

    def __init__(
        self,
        topologies: TopologyRegistry,
        settings: HubSettings,
        metrics: TransportMetrics,
        supervisor: Supervisor,
    ) -> None:
        self.topologies = topologies
        self.settings = settings
        self.metrics = metrics
        self._supervisor = supervisor
        self._bindings: dict[tuple[str, str, str], StepBinding] = {}
        self._connections = itertools.count(1)
        self._heartbeat = heartbeat_packet()

    def binding(self, namespace: str, storyrun: str, step: str) -> StepBinding:
        """The binding of ``step`` in that StoryRun, created (with its buffer) on first use."""
        key = (namespace, storyrun, step)
        binding = self._bindings.get(key)
        if binding is None:
            binding = StepBinding(
                namespace=namespace,
                storyrun=storyrun,
                step=step,
                limits=_limits_for(self._topology(namespace, storyrun), step),
                counters=self.metrics.binding(f"{namespace}/{storyrun}/{step}"),
            )
            self._bindings[key] = binding
            channel = binding.channel

            def depth() -> tuple[int, int]:
                stats = channel.statistics()
                return stats.depth, stats.depth_bytes

            self.metrics.depth_probes[binding.key] = depth
        return binding

    def _topology(self, namespace: str, storyrun: str) -> Topology:
        topology = self.topologies.lookup(namespace, storyrun)
        if topology is None:
            raise KeyError(f"no topology for StoryRun {namespace}/{storyrun}")
        return topology

    def accept(self, stream: ServerStream) -> None:
        """Admit or refuse a new Process stream; admitted ones become binding actors."""
        try:
            identity = self._admit(stream)
        except HandshakeError as refusal:
            self.metrics.handshake_rejections[refusal.reason] += 1
            log.warning("refused Process stream from %s: %s", stream.peer, refusal.message)
            stream.finish(refusal.code, refusal.message)
            return
        binding = self.binding(identity.namespace, identity.storyrun, identity.step)
        if binding.stream is not None and binding.actor_name is not None:
            log.info(
                "generation %d of %s replaces generation %d",
                identity.generation,
                binding.key,
                binding.generation,
            )
            self._supervisor.stop_child(binding.actor_name)
            binding.stream.finish(
                StatusCode.ABORTED, f"superseded by connector generation {identity.generation}"
            )
        binding.stream = stream
        binding.generation = identity.generation
        binding.actor_name = f"binding:{binding.key}#{next(self._connections)}"
        self.metrics.open_streams += 1
        self._supervisor.start_child(
            binding.actor_name, self._supervise_binding, binding, stream, restart=Restart.TEMPORARY
        )

    def _admit(self, stream: ServerStream) -> BindingIdentity:
        identity = check_handshake(stream.metadata)
        topology = self.topologies.lookup(identity.namespace, identity.storyrun)
        if topology is None:
            fixed = self.topologies.fixed
            where = (
                f"; Story {fixed.story_name!r} runs in namespace {fixed.namespace!r}"
                if fixed is not None
                else ""
            )
            raise HandshakeError(
                StatusCode.NOT_FOUND,
                "unknown_storyrun",
                f"no streaming topology for StoryRun {identity.namespace}/{identity.storyrun}"
                + where,
            )
        if not topology.has_step(identity.step):
            raise HandshakeError(
                StatusCode.NOT_FOUND,
                "unknown_step",
                f"step {identity.step!r} is not in Story {topology.story_name!r}",
            )
        if self.metrics.open_streams >= self.settings.max_streams:
            raise HandshakeError(
                StatusCode.RESOURCE_EXHAUSTED,
                "max_streams",
                f"hub max active streams reached ({self.settings.max_streams})",
            )
        current = self._bindings.get((identity.namespace, identity.storyrun, identity.step))
        if (
            current is not None
            and current.stream is not None
            and identity.generation < current.generation
        ):
            raise HandshakeError(
                StatusCode.FAILED_PRECONDITION,
                "generation_stale",
                f"connector generation {identity.generation} of {current.key} is older "
                f"than the connected generation {current.generation}",
            )
        return identity

    async def _supervise_binding(self, binding: StepBinding, stream: ServerStream) -> None:
        """Run the binding actor under its own restart budget; a spent budget ends the stream.

        The budget is per binding, so an actor that keeps failing costs its own stream only.
        """
        try:
            async with open_supervisor(
                binding.key, self.settings.restart, on_restart=self._on_actor_restart
            ) as supervisor:
                supervisor.start_child(
                    "actor", self._run_binding, binding, stream, restart=Restart.TRANSIENT
                )
        except SupervisorEscalation as escalation:
            log.error("binding %s gave up: %r", binding.key, escalation.__cause__)
            stream.finish(
                StatusCode.INTERNAL,
                f"binding actor for {binding.key} failed {escalation.restarts} times",
            )
        finally:
            self._release(binding, stream)

    def _on_actor_restart(self, name: str, error: BaseException) -> None:
        self.metrics.restarts["binding"] += 1
        log.error("binding actor %s failed and is restarted: %r", name, error)

    async def _run_binding(self, binding: StepBinding, stream: ServerStream) -> None:
        """The binding actor: deliver the step's buffer to its stream, route what it sends.

        A failure leaves the stream open so a restarted actor carries on with it; a clean end
        of the upstream finishes the call with OK.
        """
        if stream.done.is_set():
            return
        stream.accept()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._deliver, binding, stream)
            await self._ingest(binding, stream)
            nursery.cancel_scope.cancel()
        stream.finish()

    def _release(self, binding: StepBinding, stream: ServerStream) -> None:
        if binding.stream is stream:
            binding.stream = None
            binding.actor_name = None
            self.metrics.open_streams -= 1

    async def _ingest(self, binding: StepBinding, stream: ServerStream) -> None:
        topology = self._topology(binding.namespace, binding.storyrun)
        targets = self.topologies.targets(topology, binding.step)
        counters = binding.counters
        limit = self.settings.max_packet_bytes
        while True:
            try:
                batch = await stream.receive_batch()
            except trio.EndOfChannel:
                return
            except (trio.BrokenResourceError, RemoteStatusError):
                return
            for raw in batch:
                try:
                    packet, _flow = split_process_message(raw)
                except WireFormatError:
                    counters.rejected["malformed"] += 1
                    continue
                if packet is None:
                    continue
                if len(packet) > limit:
                    counters.rejected["too_large"] += 1
                    continue
                violation = validate_packet(packet, _DATA)
                if violation is not None:
                    counters.rejected[violation.reason] += 1
                    if counters.rejected[violation.reason] in (1, 100, 10000):
                        log.warning(
                            "rejected packet from %s: %s: %s",
                            binding.key,
                            violation.field,
                            violation.message,
                        )
                    continue
                heartbeat = is_heartbeat(packet, _DATA)
                if heartbeat:
                    counters.heartbeats_in += 1
                else:
                    counters.packets_in += 1
                    counters.bytes_in += len(packet)
                for step in targets:
                    target = self.binding(binding.namespace, binding.storyrun, step)
                    outgoing = target.retarget(
                        packet, None if heartbeat else target.next_sequence()
                    )
                    try:
                        target.channel.send_nowait(outgoing, len(outgoing))
                    except trio.WouldBlock:
                        await target.channel.send(outgoing, len(outgoing))

    async def _deliver(self, binding: StepBinding, stream: ServerStream) -> None:
        counters = binding.counters
        interval = self.settings.heartbeat_interval
        heartbeat = wrap_process_message(self._heartbeat)
        channel = binding.channel
        while True:
            batch: list[bytes] = []
            if channel.depth:
                batch = await channel.receive_batch()
            else:
                with trio.move_on_after(interval):
                    batch = await channel.receive_batch()
            try:
                if not batch:
                    await stream.send(heartbeat)
                    continue
                await stream.send_batch([wrap_process_message(packet) for packet in batch])
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                lost = len(batch) + stream.outbound_depth()
                if lost:
                    counters.dropped["stream_broken"] += lost
                return
            counters.packets_out += len(batch)
            counters.bytes_out += sum(len(packet) for packet in batch)


@contextlib.asynccontextmanager
async def open_hub(
    topologies: TopologyRegistry,
    metrics: TransportMetrics,
    settings: HubSettings | None = None,
) -> AsyncIterator[Hub]:
    """Open a hub routing by ``topologies``; its binding actors live until the block exits."""
    settings = settings or HubSettings()
    async with open_supervisor("hub", settings.restart) as supervisor:
        hub = Hub(topologies, settings, metrics, supervisor)
        try:
            yield hub
        finally:
            supervisor.cancel()


async def serve_hub(
    listen: Endpoint,
    topologies: TopologyRegistry | Topology,
    metrics: TransportMetrics,
    settings: HubSettings | None = None,
    *,
    task_status: trio.TaskStatus[Endpoint] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``HubService.Process`` on ``listen`` until cancelled, routing by ``topologies``
    (one Topology means local mode: every StoryRun of its namespace follows it).

    ``task_status.started`` receives the bound endpoint. Runs inside ``open_grpc_loop``.
    """
    registry = (
        topologies if isinstance(topologies, TopologyRegistry) else TopologyRegistry(topologies)
    )
    async with open_hub(registry, metrics, settings) as hub:
        accept: Callable[[ServerStream], None] = hub.accept
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                functools.partial(
                    serve_grpc,
                    max_streams_per_connection=max(100, hub.settings.max_streams),
                ),
                listen,
                [PROCESS_METHOD],
                accept,
            )
            task_status.started(server.endpoint)
