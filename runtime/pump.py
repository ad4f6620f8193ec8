"""The two pumps every data path uses, built so that a packet is never held where a
cancellation or a failure could drop it.

- :func:`channel_to_stream`: a bounded channel feeds a gRPC stream. Batches are *leased*
  from the channel and committed only once the bridge queued them (the bridge's sends are
  all-or-nothing); a :class:`StreamLedger` counts what was handed to the stream, and
  :func:`settle_stream` — called when the stream is over — withdraws the bridge's unwritten
  backlog back to the *front* of the channel and counts what was taken for a socket write
  that never completed.
- :func:`stream_to_channel`: a gRPC stream feeds one bounded channel. Messages taken from
  the stream and not yet accepted by the channel go back to the stream (``unreceive``), so a
  restarted pump resumes exactly there; waiting for room holds nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, final

import trio

from bobravoz.runtime.channel import BoundedChannel, Lease
from bobravoz.runtime.grpc_bridge import write_behind
from bobravoz.runtime.status import RemoteStatusError


class OutboundStream(Protocol):
    """The sending half of a bridge stream (server or client)."""

    written: int
    written_bytes: int

    async def send(self, message: Any) -> None:
        """Queue one message (cancel-atomic)."""

    async def send_batch(self, messages: Sequence[Any]) -> None:
        """Queue every message, all or nothing."""

    def withdraw(self) -> list[Any]:
        """Halt and return the queued, unwritten messages."""

    def offer_run_nowait(self, messages: list[Any]) -> int:
        """Queue the leading messages that fit now; how many (never waits, never raises)."""


class InboundStream(Protocol):
    """The receiving half of a bridge stream (server or client)."""

    async def receive_batch(self, max_items: int = ...) -> list[Any]:
        """Wait for and take the ready messages."""

    def unreceive(self, messages: Sequence[Any]) -> None:
        """Put taken messages back in front."""

    sink: Callable[[list[Any]], int] | None


@final
class StreamLedger:
    """What one pump handed to one stream: ``handed = written + withdrawn + unwritten``.

    ``unwritten`` is final only once the stream is over on the wire (a write that was under
    way when the stream was halted may still complete): count it then.
    """

    __slots__ = ("handed", "stream", "withdrawn")

    def __init__(self, stream: OutboundStream) -> None:
        self.stream = stream
        self.handed = 0
        self.withdrawn = 0

    def in_bridge(self) -> int:
        """Packets handed to the stream and neither written nor withdrawn (yet)."""
        return max(0, self.handed - self.stream.written - self.withdrawn)

    def unwritten(self) -> int:
        """Packets handed and never written nor withdrawn: lost with the stream once it is
        over on the wire (before that, :meth:`in_bridge`)."""
        return self.in_bridge()


async def channel_to_stream(
    channel: BoundedChannel[bytes],
    stream: OutboundStream,
    ledger: StreamLedger,
    *,
    encode: Callable[[bytes], bytes] | None = None,
    idle: tuple[float, bytes] | None = None,
    after_batch: Callable[[], None] | None = None,
) -> None:
    """Move ``channel`` to ``stream`` until the stream no longer sends (returns then).

    ``encode`` frames each item for the stream; ``idle`` = (seconds, message) sends that
    message (a heartbeat, not counted in the ledger) after each period with nothing sent.
    While it runs, the channel's :attr:`~BoundedChannel.handoff` gives an item offered to the
    empty channel straight to the stream (counted in the ledger, and followed by
    ``after_batch``, like a batch).
    """

    def hand(items: list[bytes]) -> int:
        # The channel is empty and nothing is leased: straight to the stream, in order.
        handed = stream.offer_run_nowait([encode(item) for item in items] if encode else items)
        if handed:
            ledger.handed += handed
            if after_batch is not None:
                after_batch()
        return handed

    channel.handoff = hand
    try:
        while True:
            if idle is None or channel.depth:
                lease = await channel.lease()
            else:
                waited: Lease[bytes] | None = None
                handed = ledger.handed
                with trio.move_on_after(idle[0]):
                    waited = await channel.lease()
                if waited is None:
                    if ledger.handed == handed:  # nothing went by hand-off either: idle
                        await stream.send(idle[1])
                    continue
                lease = waited
            with lease:
                items = lease.items
                count = len(items)
                await stream.send_batch([encode(item) for item in items] if encode else items)
                lease.commit()
                ledger.handed += count
            if after_batch is not None:
                after_batch()
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        return
    finally:
        if channel.handoff is hand:
            channel.handoff = None


def settle_stream(
    channel: BoundedChannel[bytes],
    ledger: StreamLedger,
    *,
    decode: Callable[[Any], bytes | None] | None = None,
) -> int:
    """The stream is done sending: halt it and put its unwritten backlog back at the front of
    ``channel`` (in order; ``decode`` maps a queued message back to the channel's item, None
    to skip it). Returns how many went back; :meth:`StreamLedger.unwritten` says, once the
    stream is over on the wire, how many were lost with it."""
    backlog: list[tuple[bytes, int]] = []
    for message in ledger.stream.withdraw():
        item = decode(message) if decode is not None else message
        if item is not None:
            backlog.append((item, len(item)))
    channel.requeue(backlog)
    ledger.withdrawn += len(backlog)
    return len(backlog)


@final
class ResumePoint:
    """Where :func:`stream_to_channel` stopped: the message it was waiting to hand on and its
    transformed item, so a resumed pump does not transform (and count) it twice."""

    __slots__ = ("idle", "item", "message", "waiting")

    def __init__(self) -> None:
        self.message: Any = None
        self.item: bytes | None = None
        self.waiting = False
        #: The pump waits for the stream's next batch holding nothing (its read callback may
        #: then hand messages on itself).
        self.idle = False

    def wait_for(self, message: Any, item: bytes) -> None:
        """Remember ``message`` (put back at the front if the wait is cancelled)."""
        self.message, self.item, self.waiting = message, item, True

    def clear(self) -> None:
        """Nothing is waiting any more."""
        self.message, self.item, self.waiting = None, None, False


def _hand_on(
    batch: list[Any],
    start: int,
    channel: BoundedChannel[bytes],
    transform: Callable[[Any], bytes | None],
    point: ResumePoint,
) -> int:
    """Hand ``batch[start:]`` to ``channel`` without waiting; return the index of the first
    message not handed on (``point`` then holds it and its item, for a wait for room)."""
    done = start
    for index in range(start, len(batch)):
        message = batch[index]
        # The message this pump was waiting to hand on was transformed (and counted) already.
        resumed = index == start and point.waiting and message is point.message
        item = point.item if resumed else transform(message)
        if item is not None:
            try:
                channel.send_nowait(item, len(item))
            except (trio.WouldBlock, trio.ClosedResourceError):
                point.wait_for(message, item)
                return done
            point.clear()
        done += 1
    return done


async def stream_to_channel(
    stream: InboundStream,
    channel: BoundedChannel[bytes],
    transform: Callable[[Any], bytes | None],
    resume: ResumePoint | None = None,
) -> None:
    """Move what ``stream`` sends into ``channel`` until it ends (returns then).

    ``transform`` validates and converts one message (None: skip it; it counts its own
    rejections). Waiting for room is cancellable and holds nothing: untaken messages go back
    to the stream, and ``resume`` (kept by the caller across restarts) remembers the one
    already transformed. Raises ``trio.ClosedResourceError`` if the channel closes.

    While the pump waits for the next batch, the stream's read callback hands messages on
    itself (the stream's ``sink``), under one write-behind pass, up to the first one that
    would have to wait; the pump gets the rest, in order.
    """
    point = resume or ResumePoint()

    def take_now(messages: list[Any]) -> int:
        if not point.idle or point.waiting:
            return 0
        return _hand_on(messages, 0, channel, transform, point)

    stream.sink = take_now
    try:
        while True:
            point.idle = not point.waiting
            try:
                batch = await stream.receive_batch()
            except (trio.EndOfChannel, trio.BrokenResourceError, RemoteStatusError):
                return
            finally:
                point.idle = False
            done = 0
            try:
                while True:
                    with write_behind():
                        done = _hand_on(batch, done, channel, transform, point)
                    if done == len(batch):
                        break
                    item = point.item
                    assert item is not None
                    await channel.wait_room(len(item))
            finally:
                if done < len(batch):
                    stream.unreceive(batch[done:])
    finally:
        if stream.sink is take_now:
            stream.sink = None
