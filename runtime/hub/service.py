"""The hub: ``HubService.Process`` streams become supervised binding actors that route packets.

Each accepted stream passes admission (:mod:`bobravoz.runtime.hub.admission`), is attached to
its step's :class:`~bobravoz.runtime.hub.binding.StepBinding`, and runs as one binding actor
under its own restart budget. The actor reads the stream in batches, validates every packet
against the wire contract, and hands a copy to the buffer of each downstream step (fan-out),
retargeted to that step. Its other half delivers the step's buffer to the stream.

Nothing is lost silently, by construction:

- every pump hands packets on through a lease (the buffer gets back what was not sent) or
  gives unrouted messages back to the stream it read them from;
- a stream that ends — broken, superseded by a newer connector generation, removed, expired,
  shut down — is halted at once (nothing more is written to it) and its bridge backlog goes
  back to the *front* of the step's buffer, so the next stream gets it in order;
- whatever cannot be delivered any more is counted as lost with a reason, and a binding's
  ledger satisfies ``queued = written + dropped + lost + buffered + in flight``.

All hub state (bindings, routes, live streams) is changed only from the hub's own trio task:
the acceptor callback, the actors, the topology feed consumer and the reaper all run there.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import heapq
import itertools
import json
import logging
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Final, final

import msgspec
import trio

from bobravoz.protocol.constants import HEARTBEAT_KEY, PROCESS_METHOD
from bobravoz.protocol.packets import (
    is_heartbeat,
    read_metadata,
    retarget_packet,
    rewrite_packet,
    split_process_message,
    wrap_process_message,
)
from bobravoz.protocol.scan import (
    DATA,
    HEARTBEAT,
    NO_PACKET,
    SLOW,
    restamp,
    scan_process,
    stamp_run,
    stamp_scanned,
)
from bobravoz.protocol.validation import validate_packet
from bobravoz.protocol.wire import PacketLayout, WireFormatError
from bobravoz.runtime.channel import MemoryBudget
from bobravoz.runtime.endpoints import Endpoint
from bobravoz.runtime.errors import SupervisorEscalation
from bobravoz.runtime.grpc_bridge import (
    ServerStream,
    begin_write_behind,
    end_write_behind,
    serve_grpc,
)
from bobravoz.runtime.guard import BoundaryLimits
from bobravoz.runtime.handshake import (
    STEP_HEADER,
    STORYRUN_NAME_HEADER,
    STORYRUN_NAMESPACE_HEADER,
    BindingIdentity,
    HandshakeError,
    check_handshake,
    check_identity,
    check_metadata_limits,
)
from bobravoz.runtime.hub.binding import StepBinding, StreamSession
from bobravoz.runtime.hub.primitives import (
    DEFAULT_INPUTS_MAX_BYTES,
    STEPRUN_READY,
    STORYRUN_READY,
    Delivery,
    Outcome,
    RunState,
    evaluate,
    hook_allowed,
    hook_packet,
)
from bobravoz.runtime.hub.registry import (
    RemoveTopology,
    RunRoutes,
    TopologyChange,
    TopologyFeed,
    TopologyRegistry,
)
from bobravoz.runtime.metrics import BindingCounters, TransportMetrics, watch_tls
from bobravoz.runtime.pump import channel_to_stream
from bobravoz.runtime.status import RemoteStatusError, StatusCode
from bobravoz.runtime.supervisor import Restart, RestartPolicy, Supervisor, open_supervisor
from bobravoz.runtime.tls import ReloadingContext
from bobravoz.runtime.topology import Topology
from bobravoz.runtime.tracing import TRACEPARENT_KEY, Tracing, hub_span, start_hop

if TYPE_CHECKING:
    from opentelemetry.trace import Span

log = logging.getLogger(__name__)

_DATA = PacketLayout.DATA_PACKET
#: The metadata keys the hub overwrites on every packet it forwards (its identity stamp).
IDENTITY_KEYS: Final = tuple(
    key.encode() for key in (STORYRUN_NAME_HEADER, STORYRUN_NAMESPACE_HEADER, STEP_HEADER)
)
#: Reasons packets are counted lost when a stream or binding ends (metric label values).
LOST_STREAM_BROKEN: Final = "stream_broken"
LOST_SHUTDOWN: Final = "shutdown"
LOST_REMOVED: Final = "storyrun_removed"
LOST_EXPIRED: Final = "binding_expired"
LOST_BUDGET: Final = "budget"
LOST_ACTOR_FAILED: Final = "actor_failed"
#: A template failed for a packet: it was not delivered to that target.
LOST_TEMPLATE: Final = "template_error"
#: Why a stream past ``max_stream_duration`` ended (a boundary refusal's reason).
MAX_STREAM_DURATION: Final = "max_stream_duration"
#: No target done yet (the routing state of a message not routed anywhere).
_NONE_DONE: Final[frozenset[str]] = frozenset()
#: Bytes a stamped ``ProcessResponse`` may add to a packet besides the target's constants
#: (wrapper tag and length, envelope tag, length and sequence).
_STAMP_SLACK: Final = 32
#: Room kept under ``max_send_bytes`` for what stamping adds to a packet: the identity
#: metadata (values bounded by ``max_metadata_value_bytes``) and the envelope.
STAMP_ROOM: Final = 64 * 1024


def _count_in(counters: BindingCounters, heartbeat: bool, size: int) -> None:
    """Count one packet received: a heartbeat, or a data packet of ``size`` bytes."""
    if heartbeat:
        counters.heartbeats_in += 1
    else:
        counters.packets_in += 1
        counters.bytes_in += size


def heartbeat_packet() -> bytes:
    """A frameless ``DataPacket`` whose metadata says ``bubu-heartbeat: true``."""
    return retarget_packet(
        b"", layout=_DATA, metadata_updates={HEARTBEAT_KEY: "true"}, sequence=None
    )


@final
class HubSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Tunables of one hub process (environment names in the README)."""

    #: Streams open at once before new ones get RESOURCE_EXHAUSTED.
    max_streams: int = 2000
    #: Bindings (step buffers) alive at once; past it a new one is refused (or its packet
    #: counted lost with reason ``budget``).
    max_bindings: int = 10_000
    #: Largest rendered inputs of a run request (``executeStory``), in bytes of JSON.
    inputs_max_bytes: int = DEFAULT_INPUTS_MAX_BYTES
    #: Bytes buffered across every binding; past it each step's drop policy applies
    #: (``block`` waits).
    max_buffered_bytes: int = 256 * 1024 * 1024
    #: Seconds a binding may have no stream before it is released (its buffer counted lost
    #: as ``binding_expired``). Local mode admits any StoryRun name, so this bounds memory.
    binding_ttl: float = 300.0
    #: Seconds to keep delivering to connected steps after a shutdown request.
    shutdown_grace: float = 10.0
    #: Seconds of silence on a stream before the hub sends it a heartbeat packet.
    heartbeat_interval: float = 10.0
    #: Largest message received, in bytes (BUBU_HUB_MAX_RECV_BYTES): checked on the gRPC
    #: length prefix (the stream ends RESOURCE_EXHAUSTED, nothing of the body is buffered),
    #: and the largest packet accepted.
    max_packet_bytes: int = 10 * 1024 * 1024
    #: Largest message sent, in bytes (BUBU_HUB_MAX_SEND_BYTES); packets that could exceed
    #: it once stamped are rejected on the way in (``too_large``).
    max_send_bytes: int = 10 * 1024 * 1024
    #: Metadata entries a Process stream's headers may carry (RESOURCE_EXHAUSTED past it).
    max_metadata_entries: int = 64
    #: Longest metadata value of a Process stream's headers, in bytes (RESOURCE_EXHAUSTED).
    max_metadata_value_bytes: int = 4096
    #: Seconds a stream may stay open before it is ended DEADLINE_EXCEEDED (the connector
    #: reconnects; 0: no limit).
    max_stream_duration: float = 0.0
    #: Connection-level limits (timeouts, connection counts, reset and ping budgets, windows);
    #: the message sizes and per-connection streams come from the fields above
    #: (:func:`boundary_limits`).
    boundary: BoundaryLimits = BoundaryLimits()
    #: ``namespace``: an mTLS stream's certificate must name the namespace it claims;
    #: ``off`` trusts the headers (unsafe; BOBRAVOZ_HUB_IDENTITY).
    identity: str = "namespace"
    #: Seconds between checks of the TLS files for a rotation.
    tls_reload_interval: float = 10.0
    #: Restart budget of binding actors.
    restart: RestartPolicy = RestartPolicy()


def boundary_limits(settings: HubSettings) -> BoundaryLimits:
    """The limits the hub's server holds connections to: ``settings.boundary`` with the
    message sizes of ``settings``, and one connection allowed to carry every stream the hub
    admits (``max_streams``; h2's default of 100 would cap a client connection)."""
    return msgspec.structs.replace(
        settings.boundary,
        max_streams_per_connection=max(100, settings.max_streams),
        max_recv_bytes=settings.max_packet_bytes,
        max_send_bytes=settings.max_send_bytes,
    )


@final
class Hub:
    """Routes packets between the bindings of StoryRuns. Open with :func:`open_hub`."""

    def __init__(
        self,
        topologies: TopologyRegistry,
        settings: HubSettings,
        metrics: TransportMetrics,
        supervisor: Supervisor,
        tracing: Tracing | None = None,
    ) -> None:
        self.topologies = topologies
        #: Per-packet ``hub.route`` spans for packets that carry a sampled trace context.
        self.tracing = tracing if tracing is not None and tracing.tracer is not None else None
        #: Metadata keys that send a packet to the general path: the identity the hub
        #: rewrites, and with tracing on the trace context it continues.
        self._scan_keys: tuple[bytes, ...] = IDENTITY_KEYS + (
            (TRACEPARENT_KEY.encode(),) if self.tracing is not None else ()
        )
        self.settings = settings
        self.metrics = metrics
        self._supervisor = supervisor
        self._bindings: dict[tuple[str, str, str], StepBinding] = {}
        self._live: set[ServerStream] = set()
        self._sessions = itertools.count(1)
        self._heartbeat = wrap_process_message(heartbeat_packet())
        self.budget = MemoryBudget(settings.max_buffered_bytes)
        #: Largest packet routed: received within ``max_packet_bytes`` and, once stamped,
        #: sendable within ``max_send_bytes``.
        self.packet_limit = max(
            1, min(settings.max_packet_bytes, settings.max_send_bytes - STAMP_ROOM)
        )
        self.draining = False
        #: Per refusal reason: when it was last logged, and how many since went unlogged.
        self._refusal_logs: dict[str, tuple[float, int]] = {}
        #: Set whenever a batch was written or a stream closed (drain waits on it).
        self._progress = trio.Event()
        #: Story state per StoryRun (outputs, joins, cycles, hooks), for the primitive path.
        self._runs: dict[tuple[str, str], RunState] = {}
        #: Packets waiting in a ``sleep``: (due, order, run, source key, source counters,
        #: delivery, heartbeat, its ``hub.primitive.sleep`` span or None). Hub state: what is
        #: here at shutdown is counted lost.
        self._delayed: list[
            tuple[float, int, RunState, str, BindingCounters, Delivery, bool, Span | None]
        ] = []
        self._delay_order = itertools.count()
        self._delay_changed = trio.Event()
        #: Packets in the sleep line per (namespace, storyrun, target): bounded by the
        #: target's buffer bound, so a blocked target holds its sources back instead.
        self._sleeping: collections.Counter[tuple[str, str, str]] = collections.Counter()
        #: Set (and renewed) whenever a packet leaves the sleep line.
        self._sleep_room = trio.Event()
        metrics.open_streams = self.open_streams
        metrics.live_bindings = self.live_bindings
        metrics.join_parts_waiting = self.join_parts_waiting

    # -- state, read by metrics and tests -------------------------------------------------

    def open_streams(self) -> int:
        """Streams admitted and not yet finished."""
        return len(self._live)

    def live_bindings(self) -> int:
        """Bindings alive now."""
        return len(self._bindings)

    def bindings(self) -> tuple[StepBinding, ...]:
        """A snapshot of the live bindings."""
        return tuple(self._bindings.values())

    def find(self, namespace: str, storyrun: str, step: str) -> StepBinding | None:
        """The live binding of that step, if any."""
        return self._bindings.get((namespace, storyrun, step))

    def undelivered(self, *, connected_only: bool = False) -> int:
        """Packets buffered or in flight across every binding (or only those with a stream)."""
        return len(self._delayed) + sum(
            b.channel.depth + b.in_flight()
            for b in self._bindings.values()
            if b.current is not None or not connected_only
        )

    # -- bindings ---------------------------------------------------------------------------

    def _binding(self, namespace: str, storyrun: str, step: str, routes: RunRoutes) -> StepBinding:
        """The binding of ``step``, created on first use; HandshakeError past the budget."""
        key = (namespace, storyrun, step)
        binding = self._bindings.get(key)
        if binding is not None:
            return binding
        if self.topologies.lookup(namespace, storyrun) is not routes:
            raise HandshakeError(
                StatusCode.NOT_FOUND,
                "unknown_storyrun",
                f"StoryRun {namespace}/{storyrun} was removed or re-routed",
            )
        if len(self._bindings) >= self.settings.max_bindings:
            raise HandshakeError(
                StatusCode.RESOURCE_EXHAUSTED,
                "max_bindings",
                f"hub binding budget reached ({self.settings.max_bindings} bindings)",
            )
        binding = StepBinding(
            namespace=namespace,
            storyrun=storyrun,
            step=step,
            limits=routes.limits(step),
            counters=self.metrics.binding(f"{namespace}/{storyrun}/{step}"),
            budget=self.budget,
            now=trio.current_time(),
        )
        self._bindings[key] = binding
        self.metrics.depth_probes[binding.key] = binding.probe
        return binding

    def _release(self, binding: StepBinding, reason: str) -> None:
        """End ``binding``: its stream ends, then its buffer is counted lost for ``reason``
        and every trace of it (series, probes) goes away."""
        if binding.released:
            return
        binding.released = True
        binding.released_reason = reason
        key = (binding.namespace, binding.storyrun, binding.step)
        if self._bindings.get(key) is binding:
            # A later stream for the same step gets a fresh binding; this one winds down.
            del self._bindings[key]
        if binding.sessions:
            code = StatusCode.NOT_FOUND if reason == LOST_REMOVED else StatusCode.UNAVAILABLE
            for session in tuple(binding.sessions):
                session.end(reason, code, f"binding {binding.key} released: {reason}")
                self._supervisor.stop_child(session.name)
            return  # forgotten when its last session closes (see _close_session)
        self._forget(binding, reason)

    def _forget(self, binding: StepBinding, reason: str) -> None:
        lost = binding.channel.discard(reason)
        binding.channel.close()
        if lost:
            log.warning(
                "binding %s released (%s) with %d packets undelivered", binding.key, reason, lost
            )
        binding.refresh_written()
        if (binding.namespace, binding.storyrun, binding.step) not in self._bindings:
            self.metrics.release(binding.key)

    # -- admission --------------------------------------------------------------------------

    def accept(self, stream: ServerStream) -> None:
        """Admit or refuse a new Process stream; admitted ones become binding actors."""
        try:
            identity, routes = self._admit(stream)
            binding = self._binding(identity.namespace, identity.storyrun, identity.step, routes)
        except HandshakeError as refusal:
            self.metrics.handshake_rejections[refusal.reason] += 1
            self._log_refusal(stream, refusal)
            stream.finish(refusal.code, refusal.message)
            return
        except Exception:
            self.metrics.handshake_rejections["internal"] += 1
            log.exception("admitting a Process stream from %s failed", stream.peer)
            stream.finish(StatusCode.INTERNAL, "the hub failed to admit this stream")
            return
        predecessor = binding.current
        session = StreamSession(
            stream,
            identity.generation,
            f"stream:{binding.key}#{next(self._sessions)}",
            self._heartbeat,
        )
        if predecessor is not None:
            self.metrics.takeovers += 1
            log.warning(
                "generation %d of %s from %s (%s) takes the step over from generation %d",
                identity.generation,
                binding.key,
                stream.peer,
                stream.identity.describe() if stream.identity is not None else "plaintext",
                predecessor.generation,
            )
            predecessor.end(
                "superseded",
                StatusCode.ABORTED,
                f"superseded by connector generation {identity.generation}",
            )
        binding.current = session
        binding.sessions.add(session)
        binding.writing.add(session)
        binding.last_active = session.opened_at = trio.current_time()
        self._live.add(stream)
        self._supervisor.start_child(
            session.name, self._serve, binding, session, predecessor, restart=Restart.TEMPORARY
        )
        try:
            self._lifecycle_connected(binding, routes)
        except Exception:
            self.metrics.failures["lifecycle"] += 1
            log.exception("lifecycle hooks for %s failed", binding.key)

    def _log_refusal(self, stream: ServerStream, refusal: HandshakeError) -> None:
        """Log a refused stream: each reason at most once a second (a flood of refusals is
        counted in full by the metric, not written out line by line)."""
        now = trio.current_time()
        last, suppressed = self._refusal_logs.get(refusal.reason, (-1.0, 0))
        if last >= 0 and now - last < 1.0:
            self._refusal_logs[refusal.reason] = (last, suppressed + 1)
            return
        self._refusal_logs[refusal.reason] = (now, 0)
        more = f" ({suppressed} more refused for {refusal.reason} since)" if suppressed else ""
        log.warning("refused Process stream from %s: %s%s", stream.peer, refusal.message, more)

    def _admit(self, stream: ServerStream) -> tuple[BindingIdentity, RunRoutes]:
        if self.draining:
            raise HandshakeError(
                StatusCode.UNAVAILABLE, "shutting_down", "the hub is shutting down"
            )
        check_metadata_limits(
            stream.metadata,
            max_entries=self.settings.max_metadata_entries,
            max_value_bytes=self.settings.max_metadata_value_bytes,
        )
        identity = check_handshake(stream.metadata)
        check_identity(
            identity.namespace,
            secure=stream.secure,
            peer=stream.identity,
            mode=self.settings.identity,
        )
        routes = self.topologies.lookup(identity.namespace, identity.storyrun)
        if routes is None:
            fixed = self.topologies.fixed
            where = (
                f"; Story {fixed.topology.story_name!r} runs in namespace "
                f"{fixed.topology.namespace!r}"
                if fixed is not None
                else ""
            )
            raise HandshakeError(
                StatusCode.NOT_FOUND,
                "unknown_storyrun",
                f"no streaming topology for StoryRun {identity.namespace}/{identity.storyrun}"
                + where,
            )
        if not routes.has_step(identity.step):
            raise HandshakeError(
                StatusCode.NOT_FOUND,
                "unknown_step",
                f"step {identity.step!r} is not in Story {routes.topology.story_name!r}",
            )
        if len(self._live) >= self.settings.max_streams:
            raise HandshakeError(
                StatusCode.RESOURCE_EXHAUSTED,
                "max_streams",
                f"hub max active streams reached ({self.settings.max_streams})",
            )
        current = self._bindings.get((identity.namespace, identity.storyrun, identity.step))
        if (
            current is not None
            and current.current is not None
            and identity.generation < current.current.generation
        ):
            raise HandshakeError(
                StatusCode.FAILED_PRECONDITION,
                "generation_stale",
                f"connector generation {identity.generation} of {current.key} is older "
                f"than the connected generation {current.current.generation}",
            )
        return identity, routes

    # -- one stream --------------------------------------------------------------------------

    async def _serve(
        self, binding: StepBinding, session: StreamSession, predecessor: StreamSession | None
    ) -> None:
        """Run one stream's actor under its own restart budget; finish the stream in
        ``finally`` whatever happens (a spent budget answers INTERNAL)."""
        status: tuple[StatusCode, str] = (StatusCode.OK, "")
        lost_reason = LOST_STREAM_BROKEN
        try:
            if predecessor is not None:
                # The older stream first routes what it had already received, in order.
                await predecessor.done.wait()
            async with open_supervisor(
                binding.key,
                self.settings.restart,
                on_restart=self._on_actor_restart,
                on_failure=self.metrics.failure_hook("binding"),
                history_limit=8,
            ) as supervisor:
                supervisor.start_child(
                    "actor", self._run_actor, binding, session, restart=Restart.TRANSIENT
                )
        except SupervisorEscalation as escalation:
            log.error("binding %s gave up: %r", binding.key, escalation.__cause__)
            status = (
                StatusCode.INTERNAL,
                f"binding actor for {binding.key} failed {escalation.restarts} times",
            )
            lost_reason = LOST_ACTOR_FAILED
        except trio.Cancelled:
            status = (StatusCode.UNAVAILABLE, "the hub is shutting down")
            lost_reason = session.end_reason or LOST_SHUTDOWN
            raise
        finally:
            self._close_session(binding, session, status, lost_reason)

    def _close_session(
        self,
        binding: StepBinding,
        session: StreamSession,
        status: tuple[StatusCode, str],
        lost_reason: str,
    ) -> None:
        """Synchronous, so cancellation cannot interrupt it: settle the ledger, finish the
        stream, release admission, wake the successor."""
        stream = session.stream
        reason = session.end_reason or lost_reason
        binding.settle_session(session)
        leftover = stream.withdraw_inbound()
        if leftover:
            binding.counters.lost[reason] += len(leftover)
        code, message = session.end_status or status
        stream.finish(code, message or None)
        self._live.discard(stream)
        self._progress.set()
        binding.sessions.discard(session)
        binding.last_active = trio.current_time()
        session.done.set()
        try:
            self._lifecycle_disconnected(binding)
        except Exception:
            self.metrics.failures["lifecycle"] += 1
            log.exception("lifecycle tracking for %s failed", binding.key)
        if stream.done.is_set():
            self._finalize(binding, session, reason)
        else:
            # A write under way when the stream was halted may still complete: count what was
            # never written once the stream is over on the wire (or the hub stops).
            self._supervisor.start_child(
                f"finalize:{session.name}",
                self._finalize_when_done,
                binding,
                session,
                reason,
                restart=Restart.TEMPORARY,
            )
        if binding.released and not binding.sessions:
            self._forget(binding, reason)

    async def _finalize_when_done(
        self, binding: StepBinding, session: StreamSession, reason: str
    ) -> None:
        try:
            await session.stream.wait_done()
        finally:
            self._finalize(binding, session, reason)

    def _finalize(self, binding: StepBinding, session: StreamSession, reason: str) -> None:
        unwritten = binding.finalize_session(session)
        if unwritten:
            counters = self.metrics.counters_for(binding.key, binding.counters)
            counters.lost[reason] += unwritten
            log.warning(
                "%d packets handed to %s's stream were never written (%s)",
                unwritten,
                binding.key,
                reason,
            )

    def _on_actor_restart(self, name: str, error: BaseException) -> None:
        self.metrics.restarts["binding"] += 1
        log.error("binding actor %s failed and is restarted: %r", name, error)

    async def _run_actor(self, binding: StepBinding, session: StreamSession) -> None:
        """The binding actor: deliver the step's buffer to its stream, route what it sends.

        A failure leaves the stream open so a restarted actor carries on with it; a clean end
        of the upstream ends the actor (the stream is finished with OK).
        """
        stream = session.stream
        if stream.done.is_set() or session.end_reason is not None:
            return
        stream.accept()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._deliver, binding, session)
            await self._ingest(binding, session)
            nursery.cancel_scope.cancel()

    async def _ingest(self, binding: StepBinding, session: StreamSession) -> None:
        """Route what the stream sends. Messages taken from the stream and not yet routed go
        back to it when this is cancelled or fails (a restarted actor resumes there)."""
        stream = session.stream
        limit = self.packet_limit
        stream.sink = functools.partial(self._route_now, binding, session)
        while True:
            session.idle = binding.partial is None
            try:
                batch = await stream.receive_batch()
            except (trio.EndOfChannel, trio.BrokenResourceError, RemoteStatusError):
                return
            finally:
                session.idle = False
            routes = self.topologies.lookup(binding.namespace, binding.storyrun)
            targets = routes.targets(binding.step) if routes is not None else ()
            if routes is None or binding.released:
                # The StoryRun went away: what its stream still sends can go nowhere.
                binding.counters.lost[LOST_REMOVED] += len(batch)
                continue
            await self._route_batch(binding, stream, routes, targets, batch, limit)

    async def _route_batch(
        self,
        binding: StepBinding,
        stream: ServerStream,
        routes: RunRoutes,
        targets: tuple[str, ...],
        batch: list[bytes],
        limit: int,
    ) -> None:
        """Route every message of ``batch``; when this is cancelled or fails, the messages
        not routed go back to ``stream`` (a restarted actor resumes there).

        Each packet is scanned once and offered to each target's buffer without waiting; only
        a ``block`` buffer that is full makes it wait (:meth:`_route`), recording the targets
        already done in ``binding.partial`` first, so a restarted actor skips them.
        """
        if routes.evaluates(binding.step):
            await self._route_evaluated(binding, stream, routes, batch, limit)
            return
        keys = self._scan_keys
        counters = binding.counters
        partial = binding.partial
        resolved = self._resolve(binding, routes, targets)
        routed = 0
        # counted in locals, added to the binding's counters when the batch ends
        heartbeats = packets = size = 0
        begin_write_behind()
        try:
            count = len(batch)
            while routed < count:
                raw = batch[routed]
                done = partial[1] if partial is not None and partial[0] is raw else _NONE_DONE
                partial = None
                single = resolved[0][1] if len(resolved) == 1 else None
                if single is not None and not done:
                    taken = self._route_run(binding, single, batch, routed, limit)
                    if taken:
                        routed += taken
                        continue
                kind, start, end, envelope, _ = scan_process(raw, limit, keys)
                packet: bytes | None = None  # set by the general path only
                if kind == SLOW:
                    packet = self._inspect(binding, raw, limit)
                    if packet is None:
                        kind = NO_PACKET
                    else:
                        kind = HEARTBEAT if is_heartbeat(packet, _DATA) else DATA
                        if self.tracing is not None and kind == DATA:
                            packet = self._traced(binding, packet)
                elif kind == HEARTBEAT:
                    heartbeats += 1
                elif kind == DATA:
                    packets += 1
                    size += end - start
                if kind != NO_PACKET and targets:
                    heartbeat = kind == HEARTBEAT
                    for index, (step, target, refused) in enumerate(resolved):
                        if step in done:
                            continue
                        if target is None:
                            counters.lost[refused] += 1
                            continue
                        sequence = 0 if heartbeat else target.next_sequence()
                        if packet is None:
                            outgoing = stamp_scanned(
                                target.stamp, raw, start, end, envelope, sequence
                            )
                        else:
                            outgoing = restamp(target.stamp, packet, sequence or None)
                        if self._offer_now(target, outgoing):
                            continue
                        # A full ``block`` buffer: wait for it (and route to the rest) holding
                        # nothing but this message, which stays the stream's until routed.
                        done = done.union(name for name, _, _ in resolved[:index])
                        binding.partial = (raw, done)
                        counters.heartbeats_in += heartbeats
                        counters.packets_in += packets
                        counters.bytes_in += size
                        heartbeats = packets = size = 0  # counted before waiting
                        end_write_behind()  # what this pass offered is written before waiting
                        try:
                            await self._route(binding, routes, targets, outgoing, step)
                        finally:
                            begin_write_behind()
                        resolved = self._resolve(binding, routes, targets)
                        break
                routed += 1
                binding.partial = None
        finally:
            counters.heartbeats_in += heartbeats
            counters.packets_in += packets
            counters.bytes_in += size
            end_write_behind()
            if routed < len(batch):
                stream.unreceive(batch[routed:])

    def _route_run(
        self, source: StepBinding, target: StepBinding, batch: list[bytes], start: int, limit: int
    ) -> int:
        """Route the plain packets from ``batch[start]`` on to ``target``, the only one, in
        one compiled pass (:func:`stamp_run`); return how many were routed (0: the message
        at ``start`` needs the per-message path). A full ``block`` buffer stops the run where
        it no longer takes a packet; the sequence is rewound to it, so the per-message path
        stamps (and waits for) it next with no gap."""
        out: list[bytes] = []
        first = target.sequence
        stop, target.sequence, packets, size = stamp_run(
            batch, start, limit, self._scan_keys, target.stamp, first, out
        )
        if not out:
            return 0
        accepted = self._offer_run(target, out)
        if accepted < len(out):
            stop = start + accepted
            packets = size = 0
            for raw in batch[start:stop]:
                kind, packet_start, packet_end, _, _ = scan_process(raw, limit, self._scan_keys)
                if kind == DATA:
                    packets += 1
                    size += packet_end - packet_start
            target.sequence = first + packets
        counters = source.counters
        counters.packets_in += packets
        counters.bytes_in += size
        counters.heartbeats_in += stop - start - packets
        return stop - start

    def _offer_run(self, target: StepBinding, out: list[bytes]) -> int:
        """Offer ``out`` in order to ``target`` without waiting; how many it took (dropped by
        policy or counted lost to a released target included): fewer only when a full
        ``block`` buffer would make the caller wait."""
        channel = target.channel
        try:
            start = channel.send_run_nowait(out, list(map(len, out)))
        except trio.ClosedResourceError:
            self._lost_to_release(target, len(out))
            return len(out)
        for index in range(start, len(out)):
            outgoing = out[index]
            try:
                channel.send_nowait(outgoing, len(outgoing))
            except trio.WouldBlock:
                return index
            except trio.ClosedResourceError:
                self._lost_to_release(target, len(out) - index)
                break
        return len(out)

    def _offer_now(self, target: StepBinding, outgoing: bytes) -> bool:
        """:meth:`_offer_run` of one message: False only when a full ``block`` buffer would
        make the caller wait."""
        return self._offer_run(target, [outgoing]) == 1

    def _route_now(self, binding: StepBinding, session: StreamSession, batch: list[bytes]) -> int:
        """The stream's read callback: route the leading messages of ``batch`` at once when
        the binding's actor is idle, waiting for its next batch (so order holds); return how
        many were routed. It stops at the first message that needs the general path, or a
        full ``block`` buffer, or when the actor is busy: the actor gets the rest."""
        if (
            not session.idle
            or binding.partial is not None
            or binding.pending is not None
            or binding.released
        ):
            return 0
        routes = self.topologies.lookup(binding.namespace, binding.storyrun)
        if routes is None:
            return 0
        if routes.evaluates(binding.step):
            # The primitive path runs in the actor only: routing it in the read callback lost
            # chunk sets under load (a pending hand-over; not yet understood).
            return 0
        targets = routes.targets(binding.step)
        resolved = self._resolve(binding, routes, targets)
        limit = self.packet_limit
        counters = binding.counters
        routed = 0
        try:
            for raw in batch:
                kind, start, end, envelope, _ = scan_process(raw, limit, self._scan_keys)
                if kind == SLOW:
                    break
                if kind != NO_PACKET:
                    bound = end - start + _STAMP_SLACK
                    if not all(
                        target is None or target.channel.accepts_now(bound + target.stamp.overhead)
                        for _, target, _ in resolved
                    ):
                        break
                    heartbeat = kind == HEARTBEAT
                    _count_in(counters, heartbeat, end - start)
                    for _, target, refused in resolved:
                        if target is None:
                            counters.lost[refused] += 1
                            continue
                        sequence = 0 if heartbeat else target.next_sequence()
                        self._offer_now(
                            target,
                            stamp_scanned(target.stamp, raw, start, end, envelope, sequence),
                        )
                routed += 1
        except Exception:
            # Never raise into the bridge: the actor takes the rest (and meets the same
            # failure under its supervisor); this one is logged and counted here.
            log.exception("routing in the read callback of %s failed", binding.key)
            self.metrics.failures["read_callback"] += 1
        return routed

    # -- the primitive path (Story templates, sleeps, joins, hooks) ---------------------------

    def _run_state(self, namespace: str, storyrun: str, routes: RunRoutes) -> RunState | None:
        """The Story state of that StoryRun (a new one when its topology changed)."""
        if routes.plan is None:
            return None
        key = (namespace, storyrun)
        state = self._runs.get(key)
        if state is not None and state.plan is not routes.plan:
            self._close_run(state, LOST_REMOVED)  # its Story changed: a fresh state
        if state is None or state.plan is not routes.plan:
            state = self._runs[key] = RunState(namespace, storyrun, routes.plan, trio.current_time)
        return state

    async def _route_evaluated(
        self,
        binding: StepBinding,
        stream: ServerStream,
        routes: RunRoutes,
        batch: list[bytes],
        limit: int,
    ) -> None:
        """Route ``batch`` through the Story's primitives (:func:`evaluate`), one message at
        a time. A message whose decision is made but not fully handed over keeps its pending
        deliveries on the binding (``binding.pending``), so a restarted actor hands over the
        rest without deciding again; the message itself goes back to the stream."""
        state = self._run_state(binding.namespace, binding.storyrun, routes)
        assert state is not None
        counters = binding.counters
        routed = 0
        # Offers within one pass are written together when it ends (or before it waits).
        begin_write_behind()
        try:
            while routed < len(batch):
                raw = batch[routed]
                pending = binding.pending
                binding.pending = None
                if pending is not None and pending[0] is raw:
                    deliveries, heartbeat = pending[1], pending[2]
                else:
                    # One compiled walk validates what real engrams send; the rest takes
                    # the general checks.
                    kind, start, end, _, _ = scan_process(raw, limit, ())
                    packet = None
                    if kind in (DATA, HEARTBEAT):
                        packet = raw[start:end]
                        _count_in(counters, kind == HEARTBEAT, end - start)
                    elif kind == SLOW:
                        packet = self._inspect(binding, raw, limit)
                    deliveries = []
                    heartbeat = False
                    if packet is not None:
                        heartbeat = kind == HEARTBEAT or is_heartbeat(packet, _DATA)
                        if self.tracing is not None and not heartbeat:
                            with self._route_span(binding, packet, "story") as traced:
                                outcome = self._decide(state, binding, traced, heartbeat)
                        else:
                            outcome = self._decide(state, binding, packet, heartbeat)
                        if outcome is not None:
                            deliveries = outcome.deliveries
                await self._hand_over(binding, routes, state, raw, deliveries, heartbeat)
                routed += 1
        finally:
            end_write_behind()
            if routed < len(batch):
                stream.unreceive(batch[routed:])

    @contextlib.contextmanager
    def _route_span(
        self, binding: StepBinding, packet: bytes, primitives: str = ""
    ) -> Iterator[bytes]:
        """A ``hub.route`` span over the block, when ``packet`` carries a sampled trace
        context; yields ``packet`` continuing its trace through that span (unchanged when
        there is none)."""
        assert self.tracing is not None
        metadata = read_metadata(packet, _DATA)
        attributes: dict[str, str | int | float | bool] = {
            "storyrun": binding.storyrun,
            "step": binding.step,
            "packet_bytes": len(packet),
        }
        if primitives:
            attributes["primitives"] = primitives
        with hub_span(self.tracing, metadata, attributes) as updates:
            if updates:
                packet = rewrite_packet(packet, layout=_DATA, metadata_updates=updates)
            yield packet

    def _traced(self, binding: StepBinding, packet: bytes) -> bytes:
        """``packet`` continuing its trace through a ``hub.route`` span of its own."""
        with self._route_span(binding, packet) as traced:
            return traced

    def _decide(
        self, state: RunState, binding: StepBinding, packet: bytes, heartbeat: bool
    ) -> Outcome | None:
        """:func:`evaluate` for one packet, its counts added to the source's counters."""
        counters = binding.counters
        try:
            outcome = evaluate(state, binding.step, packet, heartbeat=heartbeat)
        except (WireFormatError, ValueError) as error:
            counters.rejected["bad_payload"] += 1
            if counters.rejected["bad_payload"] in (1, 100, 10000):
                log.warning("packet from %s has an unreadable payload: %s", binding.key, error)
            return None
        counters.filtered.update(outcome.filtered)
        if outcome.template_errors:
            counters.template_errors.update(outcome.template_errors)
            counters.lost[LOST_TEMPLATE] += sum(outcome.template_errors.values())
        counters.run_requests.update(outcome.run_requests)
        for reason, join in outcome.abandoned:
            counters.lost[reason] += len(join.parts)
            log.warning(
                "join %s for %s/%s ended without completing (%s): has %s, missing %s",
                join.key,
                binding.namespace,
                binding.storyrun,
                reason,
                ",".join(join.parts),
                ",".join(join.missing),
            )
        return outcome

    async def _hand_over(
        self,
        binding: StepBinding,
        routes: RunRoutes,
        state: RunState,
        raw: bytes,
        deliveries: list[Delivery],
        heartbeat: bool,
    ) -> None:
        """Give each delivery to its target's buffer (or to the sleep line), waiting only
        for a full ``block`` buffer; the deliveries not yet handed over stay on
        ``binding.pending`` while it waits."""
        for index, delivery in enumerate(deliveries):
            if delivery.delay > 0:
                while not self._delay(state, binding, delivery, heartbeat, routes):
                    # The sleep line holds what the target may: wait, holding the rest.
                    binding.pending = (raw, deliveries[index:], heartbeat)
                    end_write_behind()
                    try:
                        await self._wait_sleep_room()
                    finally:
                        begin_write_behind()
                    binding.pending = None
                continue
            target = self._target(binding, delivery.target, routes, binding.counters)
            if target is None:
                continue
            sequence = 0 if heartbeat else target.next_sequence()
            outgoing = delivery.stamp(target.stamp, sequence)
            if self._offer_now(target, outgoing):
                continue
            # The one waiting stays pending too: cancelled here, it is handed over again.
            binding.pending = (raw, deliveries[index:], heartbeat)
            end_write_behind()  # what this pass offered is written before waiting
            try:
                await self._offer_waiting(target, outgoing)
            finally:
                begin_write_behind()
            binding.pending = None

    def _delay(
        self,
        state: RunState,
        binding: StepBinding,
        delivery: Delivery,
        heartbeat: bool,
        routes: RunRoutes,
    ) -> bool:
        """Put ``delivery`` in the sleep line; False (nothing done) when the line already
        holds as many packets for its target as the target's buffer may (the caller waits
        for :meth:`_wait_sleep_room`, holding the message pending)."""
        line = (state.namespace, state.storyrun, delivery.target)
        if self._sleeping[line] >= routes.limits(delivery.target).max_messages:
            return False
        span = None
        if self.tracing is not None and not heartbeat:
            # The wait is a hop of its own in the packet's trace: a child of hub.route,
            # parent of what the next connector records.
            metadata = read_metadata(delivery.packet, _DATA)
            span = start_hop(
                self.tracing,
                "hub.primitive.sleep",
                metadata,
                {"step": binding.step, "target": delivery.target, "seconds": delivery.delay},
            )
            if span is not None:
                delivery.packet = rewrite_packet(
                    delivery.packet,
                    layout=_DATA,
                    metadata_updates={TRACEPARENT_KEY: metadata[TRACEPARENT_KEY]},
                )
        due = trio.current_time() + delivery.delay
        entry = (
            due,
            next(self._delay_order),
            state,
            binding.key,
            binding.counters,
            delivery,
            heartbeat,
            span,
        )
        heapq.heappush(self._delayed, entry)
        self._sleeping[line] += 1
        if self._delayed[0] is entry:
            self._delay_changed.set()
        return True

    async def _wait_sleep_room(self) -> None:
        """Wait until a packet leaves the sleep line."""
        await self._sleep_room.wait()

    def _pop_delayed(self, outcome: str) -> None:
        """Take the first packet off the sleep line, ending its span with ``outcome``."""
        _, _, state, _, _, delivery, _, span = heapq.heappop(self._delayed)
        line = (state.namespace, state.storyrun, delivery.target)
        self._sleeping[line] -= 1
        if self._sleeping[line] <= 0:
            del self._sleeping[line]
        self._sleep_room.set()
        self._sleep_room = trio.Event()
        if span is not None:
            span.set_attribute("outcome", outcome)
            span.end()

    async def release_delayed(self) -> None:
        """Hand each packet waiting in a ``sleep`` to its target when it is due (in order);
        one a newer cycle cancelled (``cancelPrevious``) is counted filtered ``cancelled``."""
        while True:
            if not self._delayed:
                self._delay_changed = trio.Event()
                await self._delay_changed.wait()
                continue
            due = self._delayed[0][0]
            if due > trio.current_time():
                self._delay_changed = trio.Event()
                with trio.move_on_at(due):
                    await self._delay_changed.wait()
                continue
            _, _, state, source_key, source_counters, delivery, heartbeat, _ = self._delayed[0]
            counters = self.metrics.counters_for(source_key, source_counters)
            if (
                delivery.cycle is not None
                and state.cycles.get(delivery.cycle[0]) != delivery.cycle[1]
            ):
                heapq.heappop(self._delayed)
                counters.filtered["cancelled"] += 1
                continue
            routes = self.topologies.lookup(state.namespace, state.storyrun)
            try:
                if routes is None or routes.plan is not state.plan:
                    raise HandshakeError(StatusCode.NOT_FOUND, "unknown_storyrun", "removed")
                target = self._binding(state.namespace, state.storyrun, delivery.target, routes)
            except HandshakeError as refusal:
                heapq.heappop(self._delayed)
                counters.lost[
                    LOST_BUDGET if refusal.reason == "max_bindings" else LOST_REMOVED
                ] += 1
                continue
            target.last_active = trio.current_time()
            sequence = 0 if heartbeat else target.next_sequence()
            outgoing = delivery.stamp(target.stamp, sequence)
            if not self._offer_now(target, outgoing):
                # Still first in line while it waits: order holds and shutdown counts it.
                target.sequence -= 0 if heartbeat else 1
                with contextlib.suppress(trio.ClosedResourceError):
                    await target.channel.wait_room(len(outgoing))
                continue
            self._pop_delayed("delivered")

    def _lost_delayed(self, reason: str) -> int:
        """Count every packet still waiting in a ``sleep`` lost for ``reason``."""
        count = len(self._delayed)
        while self._delayed:
            key, counters = self._delayed[0][3], self._delayed[0][4]
            self.metrics.counters_for(key, counters).lost[reason] += 1
            self._pop_delayed("lost")
        return count

    def _lifecycle_connected(self, binding: StepBinding, routes: RunRoutes) -> None:
        """A stream of ``binding`` was admitted: send ``steprun.ready`` and, once every
        engram step of the StoryRun has a live stream, ``storyrun.ready`` (each once)."""
        state = self._run_state(binding.namespace, binding.storyrun, routes)
        if state is None:
            return
        plan = state.plan
        self._send_hook(state, routes, STEPRUN_READY, binding.step)
        live = all(
            (found := self._bindings.get((binding.namespace, binding.storyrun, step))) is not None
            and found.current is not None
            for step in plan.engram_steps
        )
        if live and not state.ready:
            state.ready = True
            state.terminated = False
            self._send_hook(state, routes, STORYRUN_READY, binding.step)

    def _send_hook(self, state: RunState, routes: RunRoutes, event: str, origin: str) -> None:
        consumers = state.plan.hook_consumers(event)
        if not consumers:
            return
        packet, message_id = hook_packet(event, state.namespace, state.storyrun, origin)
        if message_id in state.hooks_sent:
            return
        state.hooks_sent.add(message_id)
        for step in consumers:
            if not hook_allowed(state.plan, step, packet):
                continue
            try:
                target = self._binding(state.namespace, state.storyrun, step, routes)
            except HandshakeError:
                continue
            outgoing = restamp(target.stamp, packet, target.next_sequence())
            try:
                target.channel.send_nowait(outgoing, len(outgoing))
            except trio.WouldBlock:
                target.sequence -= 1
                target.counters.lost["hook_buffer_full"] += 1
                continue
            except trio.ClosedResourceError:
                continue
            self.metrics.lifecycle[f"hook:{event}"] += 1

    def _lifecycle_disconnected(self, binding: StepBinding) -> None:
        """A stream of ``binding`` ended: hooks may be sent again on reconnect; when every
        engram step of a StoryRun that was ready has no stream, its topology terminated."""
        state = self._runs.get((binding.namespace, binding.storyrun))
        if state is None:
            return
        state.hooks_sent.clear()
        if not state.ready or state.terminated:
            return
        if any(
            (found := self._bindings.get((binding.namespace, binding.storyrun, step))) is not None
            and found.current is not None
            and found.current.end_reason is None
            and not found.current.done.is_set()
            for step in state.plan.engram_steps
        ):
            return
        state.terminated = True
        state.ready = False
        self.metrics.lifecycle["topology_terminated"] += 1
        log.info(
            "%s",
            json.dumps(
                {
                    "event": "topology_terminated",
                    "namespace": binding.namespace,
                    "storyrun": binding.storyrun,
                    "message": "streaming topology terminated: all streaming steps disconnected",
                }
            ),
        )

    def _target(
        self, source: StepBinding, step: str, routes: RunRoutes, counters: BindingCounters
    ) -> StepBinding | None:
        """The binding of ``step`` in ``source``'s StoryRun, marked active (created on first
        use); None, with the packet counted lost on ``counters``, when the hub refuses it."""
        try:
            target = self._binding(source.namespace, source.storyrun, step, routes)
        except HandshakeError as refusal:
            counters.lost[LOST_BUDGET if refusal.reason == "max_bindings" else LOST_REMOVED] += 1
            return None
        target.last_active = trio.current_time()
        return target

    def _resolve(
        self, binding: StepBinding, routes: RunRoutes, targets: tuple[str, ...]
    ) -> list[tuple[str, StepBinding | None, str]]:
        """Each target step with its binding (created on first use), or None and the lost
        reason when the hub refuses to make it; every target is marked active."""
        resolved: list[tuple[str, StepBinding | None, str]] = []
        now = trio.current_time()
        for step in targets:
            try:
                target = self._binding(binding.namespace, binding.storyrun, step, routes)
            except HandshakeError as refusal:
                reason = LOST_BUDGET if refusal.reason == "max_bindings" else LOST_REMOVED
                resolved.append((step, None, reason))
                continue
            target.last_active = now
            resolved.append((step, target, ""))
        return resolved

    def _inspect(self, binding: StepBinding, raw: bytes, limit: int) -> bytes | None:
        """The general path for what :func:`scan_process` left to it: validate one Process
        message and return its packet if it is to be routed (rejections counted and logged)."""
        counters = binding.counters
        try:
            packet, _flow = split_process_message(raw)
        except WireFormatError:
            counters.rejected["malformed"] += 1
            return None
        if packet is None:
            return None
        if len(packet) > limit:
            counters.rejected["too_large"] += 1
            return None
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
            return None
        _count_in(counters, is_heartbeat(packet, _DATA), len(packet))
        return packet

    async def _route(
        self,
        source: StepBinding,
        routes: RunRoutes,
        targets: tuple[str, ...],
        outgoing: bytes,
        step: str,
    ) -> None:
        """Finish routing ``source.partial``'s message: wait (cancellably) for room for
        ``outgoing`` in ``step``'s full buffer, then offer the message to the targets not done
        yet, waiting again for any other full ``block`` buffer; ``source.partial`` records
        each target done."""
        assert source.partial is not None
        raw, done = source.partial
        pending: bytes | None = outgoing
        for name in targets:
            if name in done:
                continue
            try:
                target = self._binding(source.namespace, source.storyrun, name, routes)
            except HandshakeError as refusal:
                reason = LOST_BUDGET if refusal.reason == "max_bindings" else LOST_REMOVED
                source.counters.lost[reason] += 1
                done = done | {name}
                source.partial = (raw, done)
                continue
            if pending is None or name != step:
                pending = self._stamp_again(target, raw)
            if pending is not None:
                await self._offer_waiting(target, pending)
            pending = None
            done = done | {name}
            source.partial = (raw, done)

    def _stamp_again(self, target: StepBinding, raw: bytes) -> bytes | None:
        """``raw``'s packet (already validated and counted) stamped for ``target``."""
        packet, _flow = split_process_message(raw)
        if packet is None:
            return None
        sequence = 0 if is_heartbeat(packet, _DATA) else target.next_sequence()
        return restamp(target.stamp, packet, sequence or None)

    async def _offer_waiting(self, target: StepBinding, outgoing: bytes) -> None:
        """Offer ``outgoing`` to ``target``'s buffer, waiting while a ``block`` buffer is
        full; counted lost when the target is released first."""
        size = len(outgoing)
        channel = target.channel
        while True:
            try:
                channel.send_nowait(outgoing, size)
                return
            except trio.WouldBlock:
                pass
            except trio.ClosedResourceError:
                break
            try:
                await channel.wait_room(size)
            except trio.ClosedResourceError:
                break  # the target was released while this packet waited for room in it
        self._lost_to_release(target)

    def _lost_to_release(self, target: StepBinding, count: int = 1) -> None:
        counters = self.metrics.counters_for(target.key, target.counters)
        counters.lost[target.released_reason or LOST_REMOVED] += count

    async def _deliver(self, binding: StepBinding, session: StreamSession) -> None:
        """Write the step's buffer to the stream through leases; heartbeat when idle."""

        def written() -> None:
            binding.refresh_written()
            self._progress.set()

        session.stream.on_written = written
        await channel_to_stream(
            binding.channel,
            session.stream,
            session.ledger,
            idle=(self.settings.heartbeat_interval, session.heartbeat),
        )

    # -- topology changes, expiry, shutdown --------------------------------------------------

    def apply(self, change: TopologyChange) -> None:
        """Apply one topology change; a removed StoryRun's bindings are released."""
        self.topologies.apply(change)
        if isinstance(change, RemoveTopology):
            key = (change.namespace, change.storyrun)
            state = self._runs.pop(key, None)
            if state is not None:
                self._close_run(state, LOST_REMOVED)
            if self.topologies.lookup(*key) is None:
                for binding in self.bindings():
                    if (binding.namespace, binding.storyrun) == key:
                        self._release(binding, LOST_REMOVED)

    async def follow(self, feed: TopologyFeed) -> None:
        """Apply the feed's changes in order, in this task, until it closes."""
        async for change in feed.changes():
            self.apply(change)

    def expire(self, now: float) -> int:
        """Release bindings with no stream for ``binding_ttl`` seconds; return how many."""
        ttl = self.settings.binding_ttl
        expired = [
            binding
            for binding in self._bindings.values()
            if binding.current is None and now - binding.last_active >= ttl
        ]
        for binding in expired:
            self._release(binding, LOST_EXPIRED)
        return len(expired)

    def end_overdue(self, now: float) -> int:
        """End every stream open ``max_stream_duration`` seconds or more (DEADLINE_EXCEEDED,
        counted ``max_stream_duration``; what it had received is still routed, its backlog
        goes back to the buffer for the next stream); return how many."""
        duration = self.settings.max_stream_duration
        if not duration:
            return 0
        overdue = [
            session
            for binding in self._bindings.values()
            for session in binding.sessions
            if session.end_reason is None and now - session.opened_at >= duration
        ]
        for session in overdue:
            self.metrics.boundary_refusals[MAX_STREAM_DURATION] += 1
            session.end(
                MAX_STREAM_DURATION,
                StatusCode.DEADLINE_EXCEEDED,
                f"the stream was open {duration:g} s, the hub's maximum stream duration: reconnect",
            )
        return len(overdue)

    def _close_run(self, state: RunState, reason: str) -> int:
        """Count the parts left in a StoryRun's join caches lost for ``reason``."""
        lost = 0
        for target, join in state.close_joins():
            key = f"{state.namespace}/{state.storyrun}/{target}"
            self.metrics.binding(key).lost[reason] += len(join.parts)
            lost += len(join.parts)
        if lost:
            log.warning(
                "%d join parts of %s/%s were left unjoined (%s)",
                lost,
                state.namespace,
                state.storyrun,
                reason,
            )
        return lost

    def join_parts_waiting(self) -> int:
        """Parts waiting in every StoryRun's join caches (a gauge's probe)."""
        return sum(state.join_parts_waiting() for state in self._runs.values())

    def expire_joins(self, now: float) -> int:
        """Collect fan-in joins past their timeout in every StoryRun (each part counted lost
        ``join_expired`` on the joining step); return how many joins expired."""
        expired = 0
        for state in self._runs.values():
            for target, cache in state.joins.items():
                for join in cache.expire(now):
                    expired += 1
                    key = f"{state.namespace}/{state.storyrun}/{target}"
                    self.metrics.binding(key).lost["join_expired"] += len(join.parts)
                    log.warning(
                        "join %s for %s expired with %s, missing %s",
                        join.key,
                        key,
                        ",".join(join.parts),
                        ",".join(join.missing),
                    )
        return expired

    async def reap(self) -> None:
        """Expire idle bindings and end overdue streams periodically (every quarter TTL or
        stream duration, at most every 30 s)."""
        period = min(30.0, max(0.01, self.settings.binding_ttl / 4))
        if self.settings.max_stream_duration:
            period = min(period, max(0.01, self.settings.max_stream_duration / 4))
        while True:
            await trio.sleep(period)
            now = trio.current_time()
            self.expire(now)
            self.end_overdue(now)
            self.expire_joins(now)

    async def drain(self, grace: float | None = None) -> int:
        """Stop admitting streams, keep delivering for up to ``grace`` seconds (the setting by
        default) until every buffer is empty; return what is still undelivered."""
        self.draining = True
        grace = self.settings.shutdown_grace if grace is None else grace
        with trio.move_on_after(grace):
            while self.undelivered(connected_only=True):
                self._progress = trio.Event()
                await self._progress.wait()
        return self.undelivered()

    def release_all(self, reason: str) -> int:
        """Release every binding (after the actors stopped); return the packets counted lost."""
        lost = self._lost_delayed(reason)
        for state in self._runs.values():
            lost += self._close_run(state, reason)
        for binding in self.bindings():
            lost += binding.channel.depth
            self._release(binding, reason)
        return lost


@contextlib.asynccontextmanager
async def open_hub(
    topologies: TopologyRegistry,
    metrics: TransportMetrics,
    settings: HubSettings | None = None,
    *,
    feed: TopologyFeed | None = None,
    tracing: Tracing | None = None,
) -> AsyncIterator[Hub]:
    """Open a hub routing by ``topologies`` (changed through ``feed`` when given).

    Its actors live until the block exits; then every stream is finished and whatever was
    still buffered is counted lost as ``shutdown`` (and logged).
    """
    settings = settings or HubSettings()
    hub: Hub | None = None
    try:
        async with open_supervisor(
            "hub", settings.restart, on_failure=metrics.failure_hook("hub")
        ) as supervisor:
            topologies.inputs_max_bytes = settings.inputs_max_bytes
            hub = Hub(topologies, settings, metrics, supervisor, tracing)
            supervisor.start_child("reaper", hub.reap, restart=Restart.PERMANENT)
            supervisor.start_child("sleep-line", hub.release_delayed, restart=Restart.PERMANENT)
            if feed is not None:
                supervisor.start_child("topology-feed", hub.follow, feed, restart=Restart.TEMPORARY)
            try:
                yield hub
            finally:
                supervisor.cancel()
    finally:
        if hub is not None:
            lost = hub.release_all(LOST_SHUTDOWN)
            if lost:
                log.warning(
                    "hub stopped with %d packets undelivered (counted lost: shutdown)", lost
                )


async def serve_hub(
    listen: Endpoint,
    topologies: TopologyRegistry | Topology,
    metrics: TransportMetrics,
    settings: HubSettings | None = None,
    *,
    feed: TopologyFeed | None = None,
    tls: ReloadingContext | None = None,
    task_status: trio.TaskStatus[Endpoint] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``HubService.Process`` on ``listen`` until cancelled, routing by ``topologies``
    (one Topology means local mode: every StoryRun of its namespace follows it).

    ``task_status.started`` receives the bound endpoint. Runs inside ``open_grpc_loop``.
    With ``tls`` (a server context) only mTLS is served, its files are reloaded when they
    change, and each stream's certificate must name its namespace (``settings.identity``).
    """
    await _serve(listen, topologies, metrics, settings, feed, None, tls, task_status)


async def serve_hub_until(
    listen: Endpoint,
    topologies: TopologyRegistry | Topology,
    metrics: TransportMetrics,
    settings: HubSettings | None,
    stop: trio.Event,
    *,
    tls: ReloadingContext | None = None,
    tracing: Tracing | None = None,
    task_status: trio.TaskStatus[Endpoint] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Like :func:`serve_hub`, and when ``stop`` is set: stop admitting, deliver for the
    shutdown grace period, then stop (what is left is counted lost and logged). With
    ``tracing``, packets carrying a sampled trace context get a ``hub.route`` span."""
    await _serve(listen, topologies, metrics, settings, None, stop, tls, task_status, tracing)


async def _serve(
    listen: Endpoint,
    topologies: TopologyRegistry | Topology,
    metrics: TransportMetrics,
    settings: HubSettings | None,
    feed: TopologyFeed | None,
    stop: trio.Event | None,
    tls: ReloadingContext | None,
    task_status: trio.TaskStatus[Endpoint],
    tracing: Tracing | None = None,
) -> None:
    registry = (
        topologies if isinstance(topologies, TopologyRegistry) else TopologyRegistry(topologies)
    )
    async with (
        open_hub(registry, metrics, settings, feed=feed, tracing=tracing) as hub,
        trio.open_nursery() as nursery,
    ):
        server = await nursery.start(
            functools.partial(
                serve_grpc,
                limits=boundary_limits(hub.settings),
                refusals=metrics.boundary_refusals,
                tls=tls,
            ),
            listen,
            [PROCESS_METHOD],
            hub.accept,
        )
        if tls is not None:
            nursery.start_soon(watch_tls, tls, hub.settings.tls_reload_interval, metrics)
        task_status.started(server.endpoint)
        if stop is None:
            await trio.sleep_forever()
        await stop.wait()
        left = await hub.drain()
        if left:
            log.warning("shutdown grace over with %d packets undelivered", left)
        nursery.cancel_scope.cancel()
