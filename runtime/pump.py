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


class InboundStream(Protocol):
    """The receiving half of a bridge stream (server or client)."""

    async def receive_batch(self, max_items: int = ...) -> list[Any]:
        """Wait for and take the ready messages."""

    def unreceive(self, messages: Sequence[Any]) -> None:
        """Put taken messages back in front."""


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
    message (a heartbeat, not counted in the ledger) after each idle period.
    """
    try:
        while True:
            if idle is None or channel.depth:
                lease = await channel.lease()
            else:
                waited: Lease[bytes] | None = None
                with trio.move_on_after(idle[0]):
                    waited = await channel.lease()
                if waited is None:
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

    __slots__ = ("item", "message", "waiting")

    def __init__(self) -> None:
        self.message: Any = None
        self.item: bytes | None = None
        self.waiting = False

    def wait_for(self, message: Any, item: bytes) -> None:
        """Remember ``message`` (put back at the front if the wait is cancelled)."""
        self.message, self.item, self.waiting = message, item, True

    def clear(self) -> None:
        """Nothing is waiting any more."""
        self.message, self.item, self.waiting = None, None, False


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
    """
    point = resume or ResumePoint()
    while True:
        try:
            batch = await stream.receive_batch()
        except (trio.EndOfChannel, trio.BrokenResourceError, RemoteStatusError):
            return
        done = 0
        try:
            for message in batch:
                if done == 0 and point.waiting and message is point.message:
                    item = point.item  # the message this pump was waiting to hand on
                else:
                    item = transform(message)
                if item is not None:
                    size = len(item)
                    while True:
                        try:
                            channel.send_nowait(item, size)
                            break
                        except trio.WouldBlock:
                            point.wait_for(message, item)
                            await channel.wait_room(size)
                    point.clear()
                done += 1
        finally:
            if done < len(batch):
                stream.unreceive(batch[done:])
