"""One step of one StoryRun as the hub sees it: its buffer, its counters, its current stream.

A :class:`StepBinding` owns the bounded channel of packets waiting for its step; the channel
outlives any one stream, so packets for a step that has not connected yet (or is
reconnecting, or being replaced by a newer connector generation) wait there in order. A
:class:`StreamSession` is one accepted ``Process`` stream attached to a binding, with the
ledger that says what happened to every packet handed to it.
"""

from __future__ import annotations

from typing import Any, final

import trio

from bobravoz.protocol.scan import TargetStamp
from bobravoz.runtime.channel import BoundedChannel, ChannelLimits, MemoryBudget
from bobravoz.runtime.grpc_bridge import ServerStream
from bobravoz.runtime.handshake import STEP_HEADER, STORYRUN_NAME_HEADER, STORYRUN_NAMESPACE_HEADER
from bobravoz.runtime.metrics import BindingCounters
from bobravoz.runtime.pump import StreamLedger, settle_stream
from bobravoz.runtime.status import StatusCode


@final
class StreamSession:
    """One accepted stream on a binding, and the ledger of what was handed to it.

    The ledger counts data packets queued into the stream's bridge; at the end
    ``handed = written + withdrawn + unwritten`` (unwritten: taken for a socket write that
    never completed, lost with the stream).
    """

    def __init__(self, stream: ServerStream, generation: int, name: str, heartbeat: bytes):
        self.stream = stream
        self.generation = generation
        self.name = name
        self.heartbeat = heartbeat
        stream.uncounted = heartbeat
        self.ledger = StreamLedger(stream)
        #: Why the session ended when someone other than the stream ended it.
        self.end_reason: str | None = None
        self.end_status: tuple[StatusCode, str] | None = None
        self.done = trio.Event()
        #: Whether the binding's actor waits for the stream's next batch holding nothing (the
        #: read callback may then route new messages itself, in order).
        self.idle = False
        #: When the hub admitted the stream (trio time; ``max_stream_duration`` counts from it).
        self.opened_at = 0.0

    def in_bridge(self) -> int:
        """Data packets handed to the stream and not yet written."""
        return self.ledger.in_bridge()

    def end(self, reason: str, code: StatusCode, message: str) -> None:
        """Mark the session ended by the hub (superseded, removed, expired, shutdown): its
        stream writes nothing more at once (its backlog is withdrawn when the session closes)
        and reads nothing more (what it already received is still routed, in order, before a
        successor starts), so a peer that stopped reading cannot hold the cutover up."""
        if self.end_reason is None:
            self.end_reason = reason
            self.end_status = (code, message)
        self.idle = False
        self.stream.halt()
        self.stream.stop_receiving()
        self.stream.finish(code, message)


@final
class StepBinding:
    """One step of one StoryRun: its buffer, counters, sequence and current stream."""

    def __init__(
        self,
        *,
        namespace: str,
        storyrun: str,
        step: str,
        limits: ChannelLimits,
        counters: BindingCounters,
        budget: MemoryBudget | None,
        now: float,
    ) -> None:
        self.namespace = namespace
        self.storyrun = storyrun
        self.step = step
        self.key = f"{namespace}/{storyrun}/{step}"
        self.counters = counters
        #: ``ProcessResponse`` messages waiting for the step's stream, retargeted and stamped.
        self.channel: BoundedChannel[bytes] = BoundedChannel(
            limits, name=self.key, on_drop=self._count_drop, budget=budget
        )
        #: The newest stream (the one the buffer is delivered to).
        self.current: StreamSession | None = None
        #: Every stream not yet closed (an older one may still route what it received).
        self.sessions: set[StreamSession] = set()
        self.released = False
        self.released_reason: str | None = None
        self.last_active = now
        #: Rewrites a packet for this step: its identity metadata and its envelope stamp.
        self.stamp = TargetStamp(
            metadata_updates={
                STORYRUN_NAME_HEADER: storyrun,
                STORYRUN_NAMESPACE_HEADER: namespace,
                STEP_HEADER: step,
            },
            stream_id=self.key,
        )
        #: The sequence the hub stamps on the next packet for this step.
        self.sequence = 1
        #: Written by sessions whose streams are over on the wire.
        self.written_before = 0
        self.written_bytes_before = 0
        #: Sessions whose streams may still write (the live one, and closed ones whose last
        #: write is still under way); their counts are read live.
        self.writing: set[StreamSession] = set()
        #: An ingest batch's first packet that was routed to some targets before the actor
        #: stopped: (the raw message, the targets done). A restarted actor skips those.
        self.partial: tuple[bytes, frozenset[str]] | None = None
        #: The primitive path's message whose decision is made but not fully handed over:
        #: (the raw message, the deliveries left, heartbeat). A restarted actor hands those
        #: over instead of deciding again (no join, cycle or output state is touched twice).
        self.pending: tuple[bytes, list[Any], bool] | None = None

    def next_sequence(self) -> int:
        """The sequence the hub stamps on the next packet for this step (stream_id = key)."""
        value = self.sequence
        self.sequence = value + 1
        return value

    def _count_drop(self, reason: str, item: bytes, size: int) -> None:
        self.counters.count_drop(reason)

    def in_flight(self) -> int:
        """Packets leased from the buffer or handed to a stream and not yet written."""
        return self.channel.in_flight + sum(session.in_bridge() for session in self.writing)

    def probe(self) -> tuple[int, int, int]:
        """(depth, depth in bytes, in flight): what ``/metrics`` reads (the written counts are
        brought up to date on the way)."""
        self.refresh_written()
        stats = self.channel.statistics()
        return stats.depth, stats.depth_bytes, self.in_flight()

    def refresh_written(self) -> None:
        """Copy the streams' written counts into the counters."""
        written = self.written_before
        written_bytes = self.written_bytes_before
        for session in self.writing:
            written += session.stream.written
            written_bytes += session.stream.written_bytes
        self.counters.packets_out = written
        self.counters.bytes_out = written_bytes

    def settle_session(self, session: StreamSession) -> int:
        """``session`` is over: halt its stream and requeue its unwritten backlog at the front
        of the buffer (heartbeats skipped); return how many went back."""

        def unless_heartbeat(message: bytes) -> bytes | None:
            return None if message is session.heartbeat else message

        requeued = settle_stream(self.channel, session.ledger, decode=unless_heartbeat)
        if self.current is session:
            self.current = None
        return requeued

    def finalize_session(self, session: StreamSession) -> int:
        """``session``'s stream is over on the wire: fold its written counts and return how
        many packets handed to it were never written (lost with it)."""
        if session not in self.writing:
            return 0
        self.writing.discard(session)
        stream = session.stream
        self.written_before += stream.written
        self.written_bytes_before += stream.written_bytes
        self.refresh_written()
        return session.ledger.unwritten()
