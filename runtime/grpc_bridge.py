"""The asyncio island: grpclib served and called from trio through trio-asyncio.

This is the only module of ours that imports asyncio, trio-asyncio or grpclib's I/O. Everything
it hands out is trio-native: :class:`ServerStream` and :class:`ClientStream` move messages with
trio methods, raise trio's ``ClosedResourceError`` / ``BrokenResourceError`` / ``EndOfChannel``
and :class:`~bobravoz.runtime.errors.RemoteStatusError`, and never expose an asyncio object.

How messages cross: both loops run on one thread (trio-asyncio hosts asyncio inside trio), so a
:class:`_Pipe` is a plain deque whose two ends wake each other synchronously. The asyncio pumps
append or drain *all* ready messages and wake the other side once; the trio side takes
everything available in one call. One crossing per message was measured 8x slower, hence the
batching. Lifetimes belong to trio: asyncio code never opens nurseries or cancel scopes.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import logging
import ssl
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from typing import Any, Final, Generic, TypeVar, final

import grpclib.client
import grpclib.const
import grpclib.exceptions
import grpclib.metadata
import grpclib.server
import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import h2.stream
import hyperframe.frame
import trio
import trio_asyncio
from grpclib.client import Channel
from grpclib.config import Configuration
from grpclib.encoding.base import CodecBase

from bobravoz.protocol.framing import UNLIMITED, declared_length, frame_messages, split_messages
from bobravoz.runtime.endpoints import Endpoint, prepare_unix_socket
from bobravoz.runtime.groups import lone_exception
from bobravoz.runtime.guard import (
    ENHANCE_YOUR_CALM,
    NO_ERROR,
    PROTOCOL_ERROR,
    BoundaryLimits,
    ConnectionGuard,
    ConnectionState,
    Refusal,
    connection_bound,
    open_files_limit,
)
from bobravoz.runtime.status import RemoteStatusError, StatusCode
from bobravoz.runtime.tls import PeerIdentity, ReloadingContext, peer_identity

T = TypeVar("T")
log = logging.getLogger(__name__)

#: Batch size the pumps move at most per wake-up.
DEFAULT_BATCH: Final = 256
#: Messages buffered per direction inside the bridge before the pump waits (HTTP/2 pushes back).
DEFAULT_PIPE_CAPACITY: Final = 512


@final
class RawMessage:
    """Marker message type: the codec hands such messages over as undecoded ``bytes``."""


@final
class ForwardingCodec(CodecBase):
    """A grpclib codec that forwards ``bytes`` untouched and encodes typed messages.

    Data paths declare :class:`RawMessage` and see raw bytes; control paths may declare a
    betterproto2 class and get it parsed. Outgoing ``bytes`` are sent as they are.
    """

    __content_subtype__ = "proto"

    def encode(self, message: Any, message_type: Any) -> bytes:
        """Return the wire bytes of ``message`` (bytes pass through)."""
        if isinstance(message, bytes | bytearray | memoryview):
            return bytes(message)
        return bytes(message)

    def decode(self, data: bytes, message_type: Any) -> Any:
        """Return ``data`` itself for :class:`RawMessage`, else the parsed message."""
        if message_type is RawMessage:
            return data
        return message_type().parse(data)


@final
class _Pipe(Generic[T]):
    """A bounded single-thread queue whose ends may live on the trio or the asyncio side."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.items: collections.deque[T] = collections.deque()
        self.closed = False
        #: Set by :meth:`halt`: the asyncio side takes nothing more (items stay to withdraw).
        self.halted = False
        #: Set by ``stop_receiving``: the asyncio side reads nothing more into this pipe.
        self.stopped = False
        self.error: BaseException | None = None
        self._lot = trio.lowlevel.ParkingLot()
        self._futures: list[asyncio.Future[None]] = []
        #: Takes the leading received items itself, before they are queued (see ``sink``).
        self.sink: Callable[[list[T]], int] | None = None
        #: Received bytes of a message whose rest has not arrived yet (inbound pipes).
        self.partial = b""
        #: Largest message this pipe carries (checked on the length prefix inbound, before
        #: the body is kept; before framing outbound).
        self.max_message = UNLIMITED

    def wake(self) -> None:
        """Wake every waiter of either loop; each re-checks its own condition."""
        if self._lot:
            self._lot.unpark_all()
        if self._futures:
            futures, self._futures = self._futures, []
            for future in futures:
                if not future.done():
                    future.set_result(None)

    def wake_trio(self) -> None:
        """Wake the trio-side waiters only."""
        if self._lot:
            self._lot.unpark_all()

    def put(self, item: T) -> None:
        """Append ``item`` (the caller checked :meth:`has_room` or accepts overshoot)."""
        self.items.append(item)
        if len(self.items) == 1:
            self.wake()

    def put_all(self, items: Sequence[T]) -> None:
        """Append every item of ``items`` and wake the other side once."""
        was_empty = not self.items
        self.items.extend(items)
        if was_empty and items:
            self.wake()

    def has_room(self) -> bool:
        """Whether one more item fits under the capacity."""
        return len(self.items) < self.capacity

    def close(self, error: BaseException | None = None) -> None:
        """No more items will be put; waiters drain what is left, then see the end."""
        if not self.closed:
            self.closed = True
            self.error = error
        self.wake()

    def halt(self) -> None:
        """Close for senders and stop the asyncio side from taking more items."""
        self.halted = True
        self.close(self.error)

    def take(self, max_items: int) -> list[T]:
        """Remove and return up to ``max_items`` items, waking producers waiting for room."""
        count = min(max_items, len(self.items))
        taken = [self.items.popleft() for _ in range(count)]
        if count:
            self.wake()  # a sender may wait for room for a whole batch, not just one item
        return taken

    async def trio_wait(self) -> None:
        """Park the calling trio task until the next :meth:`wake`."""
        await self._lot.park()

    async def aio_wait(self) -> None:
        """Suspend the calling asyncio task until the next :meth:`wake`."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._futures.append(future)
        await future


def _short_data_frame_repr(frame: hyperframe.frame.DataFrame) -> str:
    return f"<{len(frame.data)} bytes of data>"


def _data_frame_repr(frame: hyperframe.frame.DataFrame) -> str:
    return f"DataFrame(stream_id={frame.stream_id}): <{len(frame.data)} bytes of data>"


# h2 formats ``repr(frame)`` of every frame it receives for a trace log call that discards it,
# and a DATA frame's repr serialises its body again and hex-dumps it: measured at 2-5 % of the
# hub's CPU at peak. Its repr here names the stream and the size only (not the flags, whose
# sorted listing cost as much again).
hyperframe.frame.DataFrame._body_repr = _short_data_frame_repr  # type: ignore[method-assign,assignment]  # noqa: SLF001
hyperframe.frame.DataFrame.__repr__ = _data_frame_repr  # type: ignore[method-assign,assignment]

#: Bytes coalesced into one HTTP/2 write at most (grpclib splits it into frames as needed).
_COALESCE_BYTES: Final = 256 * 1024


@final
class MessageTooLarge(Exception):
    """A gRPC message over a size limit (``BUBU_HUB_MAX_RECV_BYTES`` / ``_MAX_SEND_BYTES``)."""

    def __init__(self, size: int, limit: int, direction: str) -> None:
        super().__init__(
            f"a {size}-byte message is over the {limit}-byte limit of messages {direction}"
        )
        self.size = size
        self.limit = limit
        self.direction = direction


def _frame_messages(messages: list[Any], limit: int = UNLIMITED) -> bytes:
    """Length-prefixed gRPC messages, concatenated: several fit one HTTP/2 DATA frame.
    Raises :class:`MessageTooLarge` (framing nothing) for one over ``limit`` bytes."""
    try:
        return frame_messages(messages, limit)
    except TypeError:  # typed messages among them (control paths): serialise those first
        return _frame_messages([m if isinstance(m, bytes) else bytes(m) for m in messages], limit)
    except ValueError:
        size = max(len(message) for message in messages)
        raise MessageTooLarge(size, limit, "sent") from None


def _take_coalesced(pipe: _Pipe[Any], *, wake: bool = True) -> list[Any]:
    """Take queued messages up to about :data:`_COALESCE_BYTES` (at least one); nothing
    once the pipe was halted. ``wake`` wakes senders waiting for room."""
    taken: list[Any] = []
    if pipe.halted:
        return taken
    size = 0
    items = pipe.items
    while items and (not taken or size < _COALESCE_BYTES):
        message = items.popleft()
        size += len(message) if isinstance(message, bytes) else 64
        taken.append(message)
    if taken and wake:
        pipe.wake()  # a sender may wait for room for a whole batch, not just one item
    return taken


#: States in which h2's ``send_data`` only sends: the connection's and the stream's state
#: machines stay where they are (see :func:`_queue_data_frame`).
_SENDING_CONNECTION: Final = frozenset(
    {h2.connection.ConnectionState.CLIENT_OPEN, h2.connection.ConnectionState.SERVER_OPEN}
)
_SENDING_STREAM: Final = frozenset(
    {h2.stream.StreamState.OPEN, h2.stream.StreamState.HALF_CLOSED_REMOTE}
)
#: A DATA frame's type and flags bytes (no END_STREAM, no padding).
_DATA_TYPE_FLAGS: Final = b"\x00\x00"


def _queue_data_frame(
    h2_connection: h2.connection.H2Connection, stream_id: int, data: bytes
) -> bool:
    """What h2's ``send_data(stream_id, data)`` does for one DATA frame without padding or
    END_STREAM on a stream that can send: both flow-control windows charged and the frame's
    bytes appended to the connection's outbound buffer, without h2's state-machine steps
    (no-ops in these states), frame objects and debug logging (measured ~9 -> ~1.5 us).
    False, having changed nothing, in any other state or when the windows or the peer's
    frame size do not take ``data`` whole (h2's own ``send_data`` then decides)."""
    stream = h2_connection.streams.get(stream_id)
    if (
        stream is None
        or stream.state_machine.state not in _SENDING_STREAM
        or h2_connection.state_machine.state not in _SENDING_CONNECTION
    ):
        return False
    size = len(data)
    if (
        size > stream.outbound_flow_control_window
        or size > h2_connection.outbound_flow_control_window
        or size > h2_connection.max_outbound_frame_size
    ):
        return False
    stream.outbound_flow_control_window -= size
    h2_connection.outbound_flow_control_window -= size
    buffer = h2_connection._data_to_send  # noqa: SLF001 - h2 4.x, pinned by the bridge tests
    buffer += size.to_bytes(3, "big")
    buffer += _DATA_TYPE_FLAGS
    buffer += stream_id.to_bytes(4, "big")
    buffer += data
    return True


def _write_data_now(h2_stream: Any, data: bytes) -> bool:
    """Write ``data`` as one DATA frame of grpclib's stream ``h2_stream`` right away when the
    connection is writable and :func:`_queue_data_frame` takes it (grpclib's bookkeeping
    included); False, having written nothing, otherwise."""
    connection = h2_stream.connection
    if not connection.write_ready.is_set():
        return False
    h2_connection = h2_stream._h2_connection  # noqa: SLF001
    if not _queue_data_frame(h2_connection, h2_stream.id, data):
        return False
    h2_stream._transport.write(h2_connection.data_to_send())  # noqa: SLF001
    size = len(data)
    h2_stream.data_sent += size
    connection.data_sent += size
    connection.data_send_process()
    return True


async def _send_data(h2_stream: Any, data: bytes) -> None:
    """grpclib's ``send_data`` (which waits for flow control and splits frames), with one
    frame written at once when :func:`_write_data_now` can."""
    if not _write_data_now(h2_stream, data):
        await h2_stream.send_data(data)


async def _write_server(
    stream: grpclib.server.Stream[Any, Any], messages: list[Any], ends: _StreamEnds
) -> None:
    """Write ``messages`` with one grpclib data write (grpclib's per-message path costs a
    socket write per message; the bookkeeping below mirrors its ``send_message``)."""
    data = _frame_messages(messages, ends._outbound.max_message)  # noqa: SLF001
    await _send_data(stream._stream, data)  # noqa: SLF001
    ends._count_written(messages)  # noqa: SLF001
    stream._send_message_done = True  # noqa: SLF001
    stream._messages_sent += len(messages)  # noqa: SLF001
    stream._stream.connection.messages_sent += len(messages)  # noqa: SLF001


def _write_now(stream: Any, messages: list[Any], ends: _StreamEnds) -> bool:
    """Write ``messages`` synchronously when HTTP/2 lets it all go at once (the connection
    is writable, the stream's window and the frame size take it whole); False, having written
    nothing, otherwise. Called only while the stream's send pump is parked with nothing
    queued, so it never interleaves with the pump's writes; it saves waking the pump."""
    h2_stream = stream._stream  # noqa: SLF001
    connection = h2_stream.connection
    if not connection.write_ready.is_set():
        return False
    try:
        data = _frame_messages(messages, ends._outbound.max_message)  # noqa: SLF001
    except MessageTooLarge:
        return False  # the pump meets it and ends the stream
    if not _write_data_now(h2_stream, data):
        # Not in the plain state: h2 decides (a stream that is closing raises).
        size = len(data)
        h2_connection = h2_stream._h2_connection  # noqa: SLF001
        try:
            if size > h2_connection.max_outbound_frame_size:
                return False
            if h2_connection.local_flow_control_window(h2_stream.id) < size:
                return False
            h2_connection.send_data(h2_stream.id, data)
        except h2.exceptions.H2Error:
            return False  # the stream is closing: the pump (woken by the caller) finds out
        h2_stream._transport.write(h2_connection.data_to_send())  # noqa: SLF001
        h2_stream.data_sent += size
        connection.data_sent += size
        connection.data_send_process()
    stream._send_message_done = True  # noqa: SLF001
    stream._messages_sent += len(messages)  # noqa: SLF001
    connection.messages_sent += len(messages)
    ends._count_written(messages)  # noqa: SLF001
    return True


async def _wait_writing_directly(stream: Any, ends: _StreamEnds, *, direct: bool) -> None:
    """A send pump's wait for more to send; meanwhile (with ``direct``) the trio side's
    offers are written synchronously by :func:`_write_now`, since the pump writes nothing."""
    if direct:
        ends._write_now = lambda messages: _write_now(stream, messages, ends)  # noqa: SLF001
    try:
        await ends._outbound.aio_wait()  # noqa: SLF001
    finally:
        ends._write_now = None  # noqa: SLF001


async def _write_client(
    stream: grpclib.client.Stream[Any, Any], messages: list[Any], ends: _StreamEnds
) -> None:
    """Client twin of :func:`_write_server`."""
    with stream._wrapper:  # noqa: SLF001 - maps transport errors like send_message does
        await _send_data(stream._stream, _frame_messages(messages))  # noqa: SLF001
    ends._count_written(messages)  # noqa: SLF001
    stream._send_message_done = True  # noqa: SLF001
    stream._messages_sent += len(messages)  # noqa: SLF001
    stream._stream.connection.messages_sent += len(messages)  # noqa: SLF001


def _broken(pipe: _Pipe[Any], what: str) -> trio.BrokenResourceError:
    error = trio.BrokenResourceError(f"{what}: the peer or the connection went away")
    if pipe.error is not None:
        error.__cause__ = pipe.error
    return error


@final
class _WriteBehind:
    """The write-behind passes open on this thread, and the streams they left to flush."""

    def __init__(self) -> None:
        self.depth = 0
        self.streams: list[_StreamEnds] = []


_BEHIND: Final = _WriteBehind()


@contextlib.contextmanager
def write_behind() -> Iterator[None]:
    """A synchronous pass (never ``await`` inside) whose :meth:`~_StreamEnds.offer_nowait`
    calls are written when it ends: one socket write per stream for all it offered, instead
    of one per message. Nested passes flush when the outermost ends."""
    begin_write_behind()
    try:
        yield
    finally:
        end_write_behind()


def begin_write_behind() -> None:
    """Open a write-behind pass (:func:`write_behind` without a ``with`` block); end it with
    :func:`end_write_behind` before any ``await``."""
    _BEHIND.depth += 1


def end_write_behind() -> None:
    """End the pass :func:`begin_write_behind` opened (the outermost one flushes)."""
    _BEHIND.depth -= 1
    if not _BEHIND.depth:
        flush_behind()


def flush_behind() -> None:
    """Write what the open passes offered so far (before a pass must ``await``). Never
    raises: a stream whose synchronous write fails is logged and left to its send pump,
    which meets the same failure and ends the stream as a broken one."""
    streams = _BEHIND.streams
    while streams:
        stream = streams.pop()
        try:
            stream.flush()
        except Exception:
            log.exception("a write-behind flush failed; the stream's send pump takes over")
            stream._outbound.wake()  # noqa: SLF001


class _StreamEnds:
    """The trio-facing half shared by server and client streams.

    Sends are cancel-atomic: a call either queued everything it was given (and returns) or,
    cancelled or failing, queued nothing. Messages queued but not yet written can be taken
    back with :meth:`halt` + :meth:`withdraw` (a superseded or broken stream gives its
    backlog back to the caller's buffer). ``written`` counts messages written to the
    connection, except the ``uncounted`` marker object (heartbeats).
    """

    def __init__(self, *, capacity: int) -> None:
        self._inbound: _Pipe[Any] = _Pipe(capacity)
        self._outbound: _Pipe[Any] = _Pipe(capacity)
        #: Messages (and their bytes) written to the connection, ``uncounted`` excluded.
        self.written = 0
        self.written_bytes = 0
        #: A message object (compared by identity) that ``written`` does not count.
        self.uncounted: object | None = None
        #: Called (synchronously, on the trio thread) after each write to the connection.
        self.on_written: Callable[[], None] | None = None
        #: Set by the send pump while it waits with nothing queued: writes synchronously.
        self._write_now: Callable[[list[Any]], bool] | None = None
        #: Whether messages wait for the end of the current write-behind pass.
        self._behind = False

    def _count_written(self, messages: list[Any]) -> None:
        marker = self.uncounted
        if marker is not None and any(message is marker for message in messages):
            messages = [message for message in messages if message is not marker]
        self.written += len(messages)
        self.written_bytes += sum(map(len, messages))
        if self.on_written is not None:
            self.on_written()

    def _check_receivable(self) -> None:
        pipe = self._inbound
        if pipe.closed:
            if isinstance(pipe.error, RemoteStatusError):
                raise pipe.error
            if pipe.error is not None:
                raise _broken(pipe, "receive")
            raise trio.EndOfChannel

    async def receive_batch(self, max_items: int = DEFAULT_BATCH) -> list[Any]:
        """Wait for at least one message, then return all ready ones (at most ``max_items``).

        Always a checkpoint. Raises ``trio.EndOfChannel`` once the peer finished sending and
        everything was taken, ``trio.BrokenResourceError`` when the stream broke, or a
        :class:`RemoteStatusError` when the peer ended the call with a non-OK status. A
        caller that cannot hand every message on can :meth:`unreceive` the rest.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        pipe = self._inbound
        while not pipe.items:
            self._check_receivable()
            await pipe.trio_wait()
        taken = pipe.take(max_items)
        await trio.lowlevel.cancel_shielded_checkpoint()
        return taken

    @property
    def sink(self) -> Callable[[list[Any]], int] | None:
        """A synchronous callback given each run of newly received messages when nothing is
        queued ahead of them; it returns how many leading ones it took (handled entirely: they
        are never queued). The rest are queued for :meth:`receive_batch` as usual."""
        return self._inbound.sink

    @sink.setter
    def sink(self, sink: Callable[[list[Any]], int] | None) -> None:
        self._inbound.sink = sink

    def inbound_depth(self) -> int:
        """Messages received and queued for :meth:`receive_batch`, not yet taken."""
        return len(self._inbound.items)

    def unreceive(self, messages: Sequence[Any]) -> None:
        """Put received ``messages`` back in front of what is still to be received."""
        if messages:
            self._inbound.items.extendleft(reversed(messages))

    def stop_receiving(self) -> None:
        """Read nothing more from the peer: what is already received can still be taken,
        then :meth:`receive_batch` raises ``trio.EndOfChannel``."""
        pipe = self._inbound
        pipe.stopped = True
        pipe.close(pipe.error)

    def withdraw_inbound(self) -> list[Any]:
        """Take every received message not yet taken (the caller keeps or counts them: a
        stream that ends with unhandled input must not lose it silently)."""
        items = self._inbound.items
        taken = list(items)
        items.clear()
        if taken:
            self._inbound.wake()
        return taken

    def _check_sendable(self) -> None:
        pipe = self._outbound
        if pipe.closed:
            if pipe.error is not None:
                raise _broken(pipe, "send")
            raise trio.ClosedResourceError("this stream no longer sends")

    async def send(self, message: Any) -> None:
        """Queue ``message`` for sending, waiting while the bridge's buffer is full.

        Cancel-atomic. Raises ``trio.ClosedResourceError`` after :meth:`close_send`/finish,
        and ``trio.BrokenResourceError`` when the stream is gone.
        """
        await self.send_batch((message,))

    def offer_nowait(self, message: Any) -> bool:
        """Queue ``message`` now if the stream sends and the bridge's buffer has room;
        False (nothing queued) otherwise. Never raises, never waits (see
        :meth:`offer_run_nowait`)."""
        return self.offer_run_nowait([message]) == 1

    def offer_run_nowait(self, messages: list[Any]) -> int:
        """Queue the leading ``messages`` that fit the bridge's buffer now; return how many
        (none once the stream no longer sends). Never raises, never waits.

        While the send pump waits with nothing to do, they are written right away (no task
        switch) or, inside :func:`write_behind`, when that pass ends (one socket write for all
        the pass offered).
        """
        pipe = self._outbound
        room = pipe.capacity - len(pipe.items)
        if pipe.closed or room <= 0:
            return 0
        taken = messages if len(messages) <= room else messages[:room]
        writer = self._write_now
        if writer is not None and _BEHIND.depth:
            pipe.items.extend(taken)
            if not self._behind:
                self._behind = True
                _BEHIND.streams.append(self)
        elif writer is None or pipe.items or not writer(taken):
            pipe.put_all(taken)
        return len(taken)

    def flush(self) -> None:
        """Write what :meth:`offer_nowait` queued behind: right now when the connection takes
        it whole, else by waking the send pump (which waits for HTTP/2 flow control)."""
        self._behind = False
        pipe = self._outbound
        while pipe.items and not pipe.closed:
            writer = self._write_now
            if writer is None:
                break
            batch = _take_coalesced(pipe, wake=False)
            if not writer(batch):
                pipe.items.extendleft(reversed(batch))
                break
        if pipe.items:
            pipe.wake()  # the pump writes what is left when the window opens
        else:
            pipe.wake_trio()  # senders waiting for room may go on

    def send_nowait(self, message: Any) -> None:
        """Queue ``message`` now or raise ``trio.WouldBlock`` when the bridge's buffer is full."""
        self._check_sendable()
        pipe = self._outbound
        if not pipe.has_room():
            raise trio.WouldBlock
        pipe.put(message)

    async def send_batch(self, messages: Sequence[Any]) -> None:
        """Queue every message of ``messages`` in order, all or nothing (see :meth:`send`).

        Waits until the bridge's buffer has room for the whole batch (or is empty, for a
        batch larger than it); cancellation while waiting queues nothing.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        pipe = self._outbound
        wanted = len(messages)
        while True:
            self._check_sendable()
            queued = len(pipe.items)
            if not queued or queued + wanted <= pipe.capacity:
                break
            await pipe.trio_wait()
        pipe.items.extend(messages)
        if not queued:
            pipe.wake()
        await trio.lowlevel.cancel_shielded_checkpoint()

    def outbound_depth(self) -> int:
        """Messages queued in the bridge and not yet taken for writing."""
        return len(self._outbound.items)

    def halt(self) -> None:
        """Stop sending now: nothing queued is written any more and further sends raise
        ``trio.ClosedResourceError``; take the backlog with :meth:`withdraw`."""
        self._outbound.halt()

    def withdraw(self) -> list[Any]:
        """Halt the stream and return every message queued and never taken for writing."""
        pipe = self._outbound
        pipe.halt()
        items = list(pipe.items)
        pipe.items.clear()
        pipe.wake()
        return items


@final
class ServerStream(_StreamEnds):
    """One accepted bidi RPC, seen from trio.

    The owner reads with :meth:`receive_batch`, writes with :meth:`send` / :meth:`send_batch`,
    and ends the call with :meth:`finish` (status OK or an error status and message).
    """

    def __init__(
        self,
        *,
        method: str,
        metadata: Mapping[str, str],
        peer: str,
        secure: bool = False,
        identity: PeerIdentity | None = None,
    ) -> None:
        super().__init__(capacity=DEFAULT_PIPE_CAPACITY)
        self.method = method
        self.metadata = dict(metadata)
        self.peer = peer
        #: True when the call came over mTLS (the client's certificate was verified).
        self.secure = secure
        #: What the verified client certificate says (None over plaintext).
        self.identity = identity
        self.status: StatusCode | None = None
        self.status_message: str | None = None
        self.accepted = False
        self.done = trio.Event()

    def accept(self) -> None:
        """Send the response headers now: the client learns the stream was admitted."""
        self.accepted = True
        self._outbound.wake()

    def finish(self, status: StatusCode = StatusCode.OK, message: str | None = None) -> None:
        """End the call: queued messages are still written, then trailers with ``status``."""
        if self.status is None:
            self.status = status
            self.status_message = message
        self._outbound.close()

    async def wait_done(self) -> None:
        """Return once the RPC is over on the wire (finished, cancelled or broken)."""
        await self.done.wait()


@final
class ClientStream(_StreamEnds):
    """One outgoing bidi RPC, seen from trio. Obtain it from :meth:`GrpcChannel.open_stream`."""

    def __init__(self, *, method: str) -> None:
        super().__init__(capacity=DEFAULT_PIPE_CAPACITY)
        self.method = method
        self.initial_metadata: dict[str, str] = {}

    def close_send(self) -> None:
        """Half-close: the server sees the end of our messages; we can still receive."""
        self._outbound.close()


def _metadata_dict(metadata: Any) -> dict[str, str]:
    result: dict[str, str] = {}
    for key, value in metadata.items():
        if isinstance(value, str) and key not in result:
            result[key] = value
    return result


def _translate(error: BaseException) -> BaseException:
    if isinstance(error, grpclib.exceptions.GRPCError):
        return RemoteStatusError(StatusCode(error.status.value), error.message or "")
    return error


#: A trio callback receiving each accepted stream; it must not block (spawn work instead).
StreamAcceptor = Callable[[ServerStream], None]


@final
class _Service:
    """grpclib servable mapping method paths to the bridge's pumps."""

    def __init__(
        self,
        methods: Sequence[str],
        incoming: trio.MemorySendChannel[ServerStream],
        *,
        secure: bool = False,
        limits: BoundaryLimits | None = None,
        guard: ConnectionGuard | None = None,
    ):
        self._secure = secure
        self._methods = methods
        self._incoming = incoming
        self._limits = limits or BoundaryLimits()
        self._guard = guard

    def __mapping__(self) -> dict[str, grpclib.const.Handler]:
        return {
            method: grpclib.const.Handler(
                self._handle,
                grpclib.const.Cardinality.STREAM_STREAM,
                RawMessage,
                RawMessage,
            )
            for method in self._methods
        }

    async def _handle(self, stream: grpclib.server.Stream[Any, Any]) -> None:
        peer = stream.peer.addr() if stream.peer is not None else None
        certificate = stream.peer.cert() if stream.peer is not None else None
        ends = ServerStream(
            method=stream._method_name,  # noqa: SLF001 - grpclib keeps the path here only
            metadata=_metadata_dict(stream.metadata or {}),
            peer=repr(peer),
            secure=self._secure,
            identity=peer_identity(certificate),
        )
        ends._inbound.max_message = self._limits.max_recv_bytes  # noqa: SLF001
        ends._outbound.max_message = self._limits.max_send_bytes  # noqa: SLF001
        try:
            self._incoming.send_nowait(ends)
        except trio.WouldBlock:
            message = "too many streams waiting to be admitted"
            if self._guard is not None:
                self._guard.count(Refusal("admission_backlog", message))
            raise grpclib.exceptions.GRPCError(
                grpclib.const.Status.RESOURCE_EXHAUSTED, message
            ) from None
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise grpclib.exceptions.GRPCError(
                grpclib.const.Status.UNAVAILABLE, "the server is shutting down"
            ) from None
        try:
            await _serve_pumps(stream, ends, self._guard)
        finally:
            ends._inbound.close(ends._inbound.error)  # noqa: SLF001
            ends._outbound.close(trio.BrokenResourceError("call ended"))  # noqa: SLF001
            ends.done.set()
        if ends.status is not None and ends.status is not StatusCode.OK:
            raise grpclib.exceptions.GRPCError(
                grpclib.const.Status(int(ends.status)), ends.status_message
            )


async def _read_chunk(h2_stream: Any) -> bytes:
    """Every byte grpclib has buffered for the stream, waiting for at least one; ``b""`` once
    the peer ended it.

    The first ``recv_data(1)`` waits (and acknowledges the DATA frame it takes, as grpclib
    does); the second takes exactly what is already queued, so it never waits. One read
    takes all the messages of one or more DATA frames, where grpclib's ``recv_message``
    awaits twice per message.
    """
    first: bytes = await h2_stream.recv_data(1)
    if not first:
        return b""
    buffer = h2_stream.buffer
    queued = buffer._acked_size + sum(  # noqa: SLF001 - pinned by the bridge tests
        item.data_size
        for item in buffer._unacked._queue  # noqa: SLF001
    )
    if not queued:
        return first
    rest: bytes = await h2_stream.recv_data(queued)
    return first + rest


def _count_received(stream: Any, count: int) -> None:
    """grpclib's own bookkeeping of ``recv_message``, for ``count`` messages."""
    stream._messages_received += count  # noqa: SLF001
    connection = stream._stream.connection  # noqa: SLF001
    connection.messages_received += count
    connection.last_message_received = time.monotonic()


def _sink(inbound: _Pipe[Any], messages: list[Any]) -> list[Any]:
    """Offer ``messages`` to the inbound sink (under :func:`write_behind`); the ones it did
    not take. A sink that raises is logged and switched off: every message then goes through
    the pipe."""
    sink = inbound.sink
    assert sink is not None
    begin_write_behind()  # not the context manager: this runs for every read
    try:
        taken = sink(messages)
    except Exception:
        log.exception("the stream's read callback failed; the stream's reader takes over")
        inbound.sink = None
        return messages
    finally:
        end_write_behind()
    return messages[taken:] if taken else messages


def _install_eager_reader(stream: Any, inbound: _Pipe[Any]) -> None:
    """Let the connection's read callback hand a stream's messages to its sink at once.

    grpclib queues each DATA frame in the stream's buffer and wakes the reading task; while
    that task waits with nothing buffered, nothing queued in ``inbound`` and a sink set, the
    frame is split and given to the sink right in the read callback instead (its window is
    acknowledged as grpclib's read would), saving the task switch. Anything else takes
    grpclib's path, in order.
    """
    buffer = stream._stream.buffer  # noqa: SLF001 - grpclib's Buffer, pinned by the bridge tests
    queue_data = buffer.add

    def add(data: bytes, ack_size: int) -> None:
        if (
            inbound.sink is None
            or inbound.items
            or inbound.closed
            or buffer._acked_size  # noqa: SLF001
            or not buffer._unacked.empty()  # noqa: SLF001
        ):
            queue_data(data, ack_size)
            return
        try:
            _take_in(stream, inbound, data)
        except (ValueError, MessageTooLarge):
            queue_data(data, ack_size)  # the reading task reports it
            return
        buffer._ack_callback(ack_size)  # noqa: SLF001 - consumed, as a read would acknowledge

    buffer.add = add


def _take_in(stream: Any, inbound: _Pipe[Any], data: bytes) -> None:
    """Split ``data`` (after the partial message received before it) into messages, count
    them as grpclib would, offer them to the sink when nothing is queued ahead, and queue
    the rest. Raises ``ValueError`` (having changed nothing) for a compressed message, and
    :class:`MessageTooLarge` once the length prefix of a message over ``inbound.max_message``
    is in (the messages before it are taken in first; its body is never kept)."""
    partial = inbound.partial
    limit = inbound.max_message
    messages, rest = split_messages(partial + data if partial else data, limit)
    inbound.partial = rest
    if messages:
        _count_received(stream, len(messages))
        if inbound.sink is not None and not inbound.items and not inbound.closed:
            messages = _sink(inbound, messages)
        inbound.put_all(messages)
    if rest and declared_length(rest) > limit:
        inbound.partial = b""
        raise MessageTooLarge(declared_length(rest), limit, "received")


async def _receive_into(
    stream: Any,
    inbound: _Pipe[Any],
    *,
    trailers: bool,
    on_too_large: Callable[[MessageTooLarge], None] | None = None,
) -> None:
    """Move received messages into ``inbound`` until the peer ends (then close it); a failure
    closes it with the translated error, which the trio side raises. A message over the
    pipe's size limit closes it broken and is reported to ``on_too_large``.

    Reads in bulk (:func:`_read_chunk`): every message complete in what grpclib buffered is
    put in one go, and the trio side is woken once. With a sink set, the read callback may
    take them first (:func:`_install_eager_reader`).
    """
    try:
        if trailers and not stream._recv_initial_metadata_done:  # noqa: SLF001
            await stream.recv_initial_metadata()
        wrapper = stream._wrapper if trailers else contextlib.nullcontext()  # noqa: SLF001
        _install_eager_reader(stream, inbound)
        while True:
            while not inbound.has_room() or inbound.stopped:
                if inbound.stopped:
                    return  # the trio side takes nothing more: leave the rest unread
                await inbound.aio_wait()
            with wrapper:
                chunk = await _read_chunk(stream._stream)  # noqa: SLF001
            if not chunk:
                if inbound.partial:
                    raise grpclib.exceptions.ProtocolError(
                        f"the stream ended inside a message ({len(inbound.partial)} bytes of it)"
                    )
                if trailers:
                    await stream.recv_trailing_metadata()
                inbound.close()
                return
            _take_in(stream, inbound, chunk)
    except asyncio.CancelledError:
        inbound.close(trio.BrokenResourceError("stream cancelled"))
        raise
    except MessageTooLarge as error:
        broken = trio.BrokenResourceError(str(error))
        broken.__cause__ = error
        inbound.close(broken)
        if on_too_large is not None:
            on_too_large(error)
    except Exception as error:  # noqa: BLE001 - surfaces on the trio side
        status = _status_from_trailers(stream) if trailers else None
        if status is not None:
            # The peer completed its response (trailers) and then reset the stream: the
            # messages it sent before the trailers are ours, even if grpclib drops them.
            inbound.items.extend(_salvage(stream, inbound.partial))
        if status is StatusCode.OK:
            inbound.close()  # the server finished with OK before we half-closed: a clean end
        elif isinstance(status, RemoteStatusError):
            inbound.close(status)
        else:
            inbound.close(_translate(error))


def _salvage(stream: Any, pending: bytes = b"") -> list[bytes]:
    """Complete messages still in grpclib's receive buffer of a reset client stream (after
    ``pending``, the start of a message read before).

    HTTP/2 lets a server follow a complete response (trailers) with RST_STREAM(NO_ERROR);
    grpclib's client then refuses to read what it had already buffered. Those messages were
    sent before the trailers, so they are delivered (taken from its private buffer; the bridge
    tests pin the attributes used here).
    """
    buffer = getattr(getattr(stream, "_stream", None), "buffer", None)
    if buffer is None:
        return []
    parts = [pending]
    parts += [bytes(chunk.data) for chunk in buffer._acked]  # noqa: SLF001
    parts += [bytes(item.data) for item in buffer._unacked._queue if item.data]  # noqa: SLF001
    with contextlib.suppress(ValueError):  # a compressed message: nothing after it is ours
        return split_messages(b"".join(parts))[0]
    return []


def _status_from_trailers(stream: Any) -> RemoteStatusError | StatusCode | None:
    """The status in trailers that arrived before a reset or a protocol complaint
    (``StatusCode.OK`` for a clean finish, None without trailers).

    A server that ends a call while the client still sends follows its trailers with
    RST_STREAM(NO_ERROR); grpclib then reports the reset (or that our side was not ended)
    and the status would be lost.
    """
    trailers = getattr(stream._stream, "trailers", None)  # noqa: SLF001
    if not trailers:
        return None
    values = dict(trailers)
    try:
        code = StatusCode(int(values.get("grpc-status", "")))
    except ValueError:
        return None
    if code is StatusCode.OK:
        return code
    return RemoteStatusError(code, urllib.parse.unquote(values.get("grpc-message", "")))


async def _serve_pumps(
    stream: grpclib.server.Stream[Any, Any], ends: ServerStream, guard: ConnectionGuard | None
) -> None:
    inbound = ends._inbound  # noqa: SLF001
    outbound = ends._outbound  # noqa: SLF001

    def too_large(error: MessageTooLarge) -> None:
        # Refused at the length prefix: the stream ends with RESOURCE_EXHAUSTED naming the
        # limit (messages queued before it are still written, then the trailers).
        if guard is not None:
            reason = "max_recv_bytes" if error.direction == "received" else "max_send_bytes"
            guard.count(Refusal(reason, str(error)))
        ends.finish(StatusCode.RESOURCE_EXHAUSTED, str(error))

    async def send_pump() -> None:
        headers_sent = False
        while True:
            if not headers_sent and (ends.accepted or outbound.items):
                await stream.send_initial_metadata()
                headers_sent = True
            if outbound.items and not outbound.halted:
                try:
                    await _write_server(stream, _take_coalesced(outbound), ends)
                except MessageTooLarge as error:
                    too_large(error)  # what that batch held is lost with the stream
                continue
            if outbound.closed:
                return  # halted: what is left is the trio side's to withdraw
            await _wait_writing_directly(stream, ends, direct=headers_sent)

    async with asyncio.TaskGroup() as group:
        receiver = group.create_task(
            _receive_into(stream, inbound, trailers=False, on_too_large=too_large)
        )
        try:
            await send_pump()
        except Exception as error:
            inbound.close(error)
            outbound.close(error)
            raise
        finally:
            receiver.cancel()


@final
class GrpcServer:
    """A running gRPC server whose streams are handed to trio. See :func:`serve_grpc`.

    ``guard`` is the :class:`~bobravoz.runtime.guard.ConnectionGuard` holding its connections
    to their limits (its ``statistics()`` and ``states()`` are for observers and tests)."""

    def __init__(self, endpoint: Endpoint, guard: ConnectionGuard | None = None) -> None:
        self.endpoint = endpoint
        self.guard = guard


def _peer_host(peername: Any) -> str | None:
    """The client address of a TCP peer (None for a unix-socket peer)."""
    if isinstance(peername, tuple) and peername and isinstance(peername[0], str):
        return peername[0]
    return None


def _window_update(increment: int) -> hyperframe.frame.WindowUpdateFrame:
    frame = hyperframe.frame.WindowUpdateFrame(0)
    frame.window_increment = increment
    return frame


@final
class _ReadAhead:
    """Connection-level flow control that lets a lagging stream hold only its own window.

    grpclib acknowledges received DATA (both the stream's and the connection's window) only
    when the stream's reader takes it, so bytes a stalled stream leaves unread hold the
    connection's window too, and with equal windows one stalled stream stalls every stream of
    its connection. Here DATA is acknowledged at the connection level as it arrives, while at
    most ``budget`` bytes so acknowledged are still unread (each stream's own window bounds
    what it can hold); the stream level is acknowledged when it is read, as before. Replaces
    grpclib's ``Connection.ack`` (reads and releases) and sees every ``DataReceived``.
    """

    def __init__(self, connection: Any, budget: int) -> None:
        self._connection = connection
        self._h2: h2.connection.H2Connection = connection._connection  # noqa: SLF001
        self._window = self._h2._inbound_flow_control_window_manager  # noqa: SLF001
        self.budget = budget
        #: Bytes acknowledged at the connection level on arrival and not yet read.
        self.lent = 0

    def received(self, size: int) -> None:
        """``size`` flow-controlled bytes arrived (the caller flushes)."""
        if size and self.lent + size <= self.budget:
            self.lent += size
            increment = self._window.process_bytes(size)
            if increment:
                self._h2._prepare_for_sending([_window_update(increment)])  # noqa: SLF001

    def ack(self, stream_id: int, size: int) -> None:
        """``size`` bytes of stream ``stream_id`` were read (or dropped with the stream)."""
        if not size:
            return
        early = min(size, self.lent)
        self.lent -= early
        frames: list[hyperframe.frame.Frame] = []
        if size > early:
            increment = self._window.process_bytes(size - early)
            if increment:
                frames.append(_window_update(increment))
        stream = self._h2.streams.get(stream_id)
        if stream is not None and stream.open:
            frames.extend(stream.acknowledge_received_data(size))
        if frames:
            self._h2._prepare_for_sending(frames)  # noqa: SLF001
            if not self._connection.is_closing():
                self._connection.flush()


#: h2 events the guard looks at, besides DATA (which only the read-ahead counts).
_DATA_RECEIVED: Final = h2.events.DataReceived
_WATCHED: Final = (h2.events.StreamReset, h2.events.PingReceived)
#: RESOURCE_EXHAUSTED in a trailers-only refusal.
_EXHAUSTED: Final = str(int(StatusCode.RESOURCE_EXHAUSTED))


def _protocol_refusal(error: h2.exceptions.ProtocolError) -> Refusal:
    """The refusal h2 answered ``error`` with (it already queued the GOAWAY)."""
    text = str(error)
    if isinstance(error, h2.exceptions.DenialOfServiceError):
        reason = "header_list_too_large" if "header" in text.lower() else "enhance_your_calm"
        return Refusal(reason, text, ENHANCE_YOUR_CALM)
    if isinstance(error, h2.exceptions.TooManyStreamsError):
        return Refusal("max_streams_per_connection", text, PROTOCOL_ERROR)
    if "preamble" in text.lower() or "preface" in text.lower():
        return Refusal("bad_preface", text, PROTOCOL_ERROR)
    return Refusal("protocol_error", text, PROTOCOL_ERROR)


class _Wiring:
    """The bridge's hooks on one grpclib connection (server or client): every socket read
    goes through :meth:`data_received`, which feeds h2 as grpclib does, acknowledges DATA
    through :class:`_ReadAhead`, and on a server reports to the :class:`ConnectionGuard`
    and carries its verdicts out (:meth:`refuse`, :meth:`ping`, :meth:`abort`)."""

    def __init__(
        self,
        protocol: Any,
        limits: BoundaryLimits,
        guard: ConnectionGuard | None = None,
        state: ConnectionState | None = None,
    ) -> None:
        self.protocol = protocol
        self.limits = limits
        self.guard = guard
        self.state = state
        self.transport: Any = None
        self._socket_transport: Any = None
        self.read_ahead: _ReadAhead | None = None
        self._made = False
        connection_made = protocol.connection_made
        connection_lost = protocol.connection_lost

        def made(transport: Any) -> None:
            self.transport = transport
            # The socket's own transport (under TLS, the one below the TLS layer).
            ssl_protocol = getattr(transport, "_ssl_protocol", None)
            self._socket_transport = getattr(ssl_protocol, "_transport", transport)
            if not self._admit(transport):
                return
            connection_made(transport)
            self._made = True
            self._set_up()

        def lost(error: BaseException | None) -> None:
            if self.guard is not None and self.state is not None:
                self.guard.close(self.state)
            if self._made:
                connection_lost(error)
            self._unhook()

        protocol.connection_made = made
        protocol.connection_lost = lost

    def _unhook(self) -> None:
        """Take the hooks off the connection's objects once it is gone: they reference this
        wiring and it references them, and a reference cycle per connection would wait for
        the collector's oldest generation (rare in a hub: see ``settle_heap``)."""
        protocol = self.protocol
        for name in ("connection_made", "connection_lost", "data_received"):
            protocol.__dict__.pop(name, None)
        handler = getattr(protocol, "handler", None)
        if handler is not None:
            handler.__dict__.pop("accept", None)
        connection = getattr(protocol, "connection", None)
        if connection is not None:
            connection.__dict__.pop("ack", None)
        self.state = None  # the guard's state keeps its handle (the accept hook reads it)
        # asyncio's socket transport keeps a bound method of itself (its read callback): a
        # cycle per connection, of no use once the connection is lost.
        if self._socket_transport is not None:
            self._socket_transport.__dict__.pop("_read_ready_cb", None)

    def _admit(self, transport: Any) -> bool:
        """Open the guard's state of a connection that did not come through the accept hook
        (False: refused and dropped)."""
        guard = self.guard
        if guard is None or self.state is not None:
            return True
        opened = guard.open(_peer_host(transport.get_extra_info("peername")), trio.current_time())
        if isinstance(opened, Refusal):
            transport.abort()
            return False
        self.state = opened
        return True

    def _set_up(self) -> None:
        protocol = self.protocol
        connection = protocol.connection
        read_ahead = self.read_ahead = _ReadAhead(connection, self.limits.read_ahead_bytes)
        connection.ack = read_ahead.ack
        protocol.data_received = self.data_received
        if self.guard is None:
            return
        limits = self.limits
        h2_connection = connection._connection  # noqa: SLF001
        h2_connection.update_settings(
            {
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: limits.max_streams_per_connection,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: limits.max_header_list_bytes,
            }
        )
        # h2 applies its advertised limit only once the peer acknowledged the SETTINGS (until
        # then hpack's default, 64 KiB): enforce it from the first frame.
        h2_connection.decoder.max_header_list_size = limits.max_header_list_bytes
        connection.flush()
        _release_reset_streams(protocol.handler, self)
        assert self.state is not None
        self.state.handle = self

    def data_received(self, data: bytes) -> None:
        """grpclib's ``H2Protocol.data_received``, with the read-ahead and the guard."""
        protocol = self.protocol
        connection = protocol.connection
        state = self.state
        if state is not None:
            state.reads += 1
        try:
            events = connection.feed(data)
        except h2.exceptions.ProtocolError as error:
            log.debug("protocol error from %s: %s", self._peer(), error)
            failed = _protocol_refusal(error)
            if self.guard is not None:
                self.guard.count(failed)
            self.refuse(failed)
            return
        connection.flush()
        processor = protocol.processor
        read_ahead = self.read_ahead
        assert read_ahead is not None
        for event in events:
            kind = type(event)
            if kind is _DATA_RECEIVED:
                read_ahead.received(event.flow_controlled_length)
            elif state is not None and kind in _WATCHED:
                refusal = self._check(state, event)
                if refusal is not None:
                    self.refuse(refusal)
                    return
            processor.process(event)
        connection.flush()
        if (
            state is not None
            and self.transport.get_write_buffer_size() > self.limits.max_write_backlog
        ):
            # The peer sends but does not read what it is answered (PING or SETTINGS acks,
            # resets): drop it rather than queue without bound.
            backlog = Refusal("write_backlog", "the peer stopped reading", ENHANCE_YOUR_CALM)
            assert self.guard is not None
            self.guard.count(backlog)
            self.refuse(backlog, abort=True)

    def _check(self, state: ConnectionState, event: h2.events.Event) -> Refusal | None:
        guard = self.guard
        assert guard is not None
        if isinstance(event, h2.events.StreamReset):
            if event.remote_reset:
                return guard.stream_reset(state, trio.current_time())
            return None
        connection = self.protocol.connection
        progress = connection.data_sent + connection.streams_started
        return guard.ping_received(state, trio.current_time(), progress)

    def _peer(self) -> Any:
        return self.transport.get_extra_info("peername") if self.transport is not None else None

    def socket(self) -> Any:
        """The connection's socket (asyncio's wrapper; for tests and diagnostics)."""
        return self.transport.get_extra_info("socket") if self.transport is not None else None

    # -- the guard's verdicts -----------------------------------------------------------------

    def stream_requested(self) -> Refusal | None:
        """A request's HEADERS: the guard's verdict on opening that stream."""
        if self.guard is None or self.state is None:
            return None
        return self.guard.stream_requested(self.state, trio.current_time())

    def stream_closed(self) -> None:
        """A stream the guard let open is over (streams released after their connection was
        lost are nothing to the guard any more)."""
        if self.guard is not None and self.state is not None:
            self.guard.stream_closed(self.state, trio.current_time())

    def refuse_stream(self, stream: Any, refusal: Refusal) -> None:
        """Answer one request with a trailers-only RESOURCE_EXHAUSTED (then reset it, so its
        body stops) and leave the connection open."""
        h2_connection = self.protocol.connection._connection  # noqa: SLF001
        headers = [
            (":status", "200"),
            ("content-type", "application/grpc+proto"),
            ("grpc-status", _EXHAUSTED),
            ("grpc-message", grpclib.metadata.encode_grpc_message(refusal.message)),
        ]
        with contextlib.suppress(h2.exceptions.H2Error):
            h2_connection.send_headers(stream.id, headers, end_stream=True)
            h2_connection.reset_stream(stream.id, NO_ERROR)

    def refuse(self, refusal: Refusal, *, abort: bool = False) -> None:
        """GOAWAY with ``refusal``'s code and message, then close (``abort``: drop at once).
        The caller counted the refusal; a connection already closing is left to finish."""
        state = self.state
        if state is not None and self.guard is not None:
            if state.closing_since is not None and not abort:
                return
            self.guard.closing(state, trio.current_time())
        connection = self.protocol.connection
        if not connection.is_closing():
            h2_connection = connection._connection  # noqa: SLF001
            if h2_connection.state_machine.state is h2.connection.ConnectionState.CLOSED:
                # h2 refused a protocol error with a GOAWAY of its own, mostly without debug
                # data: send ours instead (the same code, and the message).
                h2_connection.clear_outbound_data_buffer()
            with contextlib.suppress(h2.exceptions.H2Error):
                h2_connection.close_connection(
                    error_code=refusal.code, additional_data=refusal.message.encode()[:1024]
                )
            connection.flush()
        if abort:
            self.abort()
        self.protocol.processor.close(f"connection refused: {refusal.message}")

    def ping(self) -> None:
        """Send a keepalive PING (the guard watches for any answer)."""
        connection = self.protocol.connection
        if not connection.is_closing():
            connection._connection.ping(b"bobravoz")  # noqa: SLF001
            connection.flush()

    def abort(self) -> None:
        """Drop the connection now (unflushed writes are discarded)."""
        if self.transport is not None:
            self.transport.abort()


def _release_reset_streams(handler: Any, wiring: _Wiring | None = None) -> None:
    """Release every stream once its handler task is done, even one cancelled before it ran;
    with ``wiring``, a stream the guard refuses is answered at once (no handler task) and
    every other one is counted open until it is released.

    grpclib releases a stream (forgets it and acknowledges its unread DATA, giving the
    connection's flow-control window back) in its request handler's ``finally``; when
    RST_STREAM arrives in the same read as HEADERS the task is cancelled before it starts, so
    that never runs: each such stream stays registered and its bytes stay unacknowledged
    until the connection dies (grpclib issue 217). This releases exactly once either way.
    """
    accept = handler.accept

    def accept_releasing(stream: Any, headers: Any, release_stream: Callable[[], Any]) -> None:
        if wiring is not None:
            refusal = wiring.stream_requested()
            if refusal is not None:
                wiring.refuse_stream(stream, refusal)
                release_stream()
                return
        released = False

        def release_once() -> None:
            nonlocal released
            if not released:
                released = True
                release_stream()
                if wiring is not None:
                    wiring.stream_closed()

        accept(stream, headers, release_once)
        task = handler._tasks.get(stream)  # noqa: SLF001
        if task is not None:
            task.add_done_callback(lambda _task: release_once())

    handler.accept = accept_releasing


def _patch_protocols(
    server: grpclib.server.Server, guard: ConnectionGuard, limits: BoundaryLimits
) -> tuple[Callable[[], Any], Callable[[ConnectionState | None], Any]]:
    """Wire every connection of ``server`` (see :class:`_Wiring`): return the protocol
    factory asyncio is given, and the builder the accept hook calls with the connection's
    guard state (opened before any TLS handshake)."""
    make_protocol = server._protocol_factory  # noqa: SLF001 - no public hook for either

    def build(state: ConnectionState | None) -> Any:
        protocol = make_protocol()
        _Wiring(protocol, limits, guard, state)
        return protocol

    def protocol_factory() -> Any:
        return build(None)

    server._protocol_factory = protocol_factory  # type: ignore[method-assign]  # noqa: SLF001
    return protocol_factory, build


#: Loop attributes: the accept hooks by protocol factory, the guards by listening socket.
_ACCEPT_HOOKS: Final = "_bobravoz_accept_hooks"
_LISTENERS: Final = "_bobravoz_listeners"
#: accept() errors that mean "out of resources", not "this connection failed".
_CAPACITY_ERRNOS: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
#: asyncio's default TLS handshake timeout (seconds), when the limits turn ours off.
_ASYNCIO_HANDSHAKE_TIMEOUT: Final = 60.0

_AcceptHook = Callable[..., Awaitable[None]]


def _accept_hooks(loop: Any) -> dict[Any, _AcceptHook]:
    """The loop's accept hooks (installed on first use): asyncio accepts each connection in
    ``_accept_connection2(protocol_factory, socket, extra, ...)``; a server whose factory has
    a hook gets the accepted socket first (before any TLS handshake)."""
    hooks: dict[Any, _AcceptHook] | None = getattr(loop, _ACCEPT_HOOKS, None)
    if hooks is None:
        hooks = {}
        original = loop._accept_connection2  # noqa: SLF001 - pinned by the bridge tests

        async def accept_connection(
            protocol_factory: Any, conn: Any, extra: Any, *args: Any, **kwargs: Any
        ) -> None:
            hook = hooks.get(protocol_factory) if hooks else None
            if hook is None:
                await original(protocol_factory, conn, extra, *args, **kwargs)
            else:
                await hook(original, conn, extra, *args, **kwargs)

        loop._accept_connection2 = accept_connection  # noqa: SLF001
        setattr(loop, _ACCEPT_HOOKS, hooks)
        setattr(loop, _LISTENERS, {})
    return hooks


def _refusal_bytes(refusal: Refusal) -> bytes:
    """A server preface and a GOAWAY carrying ``refusal`` (for a plaintext socket)."""
    connection = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    connection.initiate_connection()
    connection.close_connection(refusal.code, refusal.message.encode()[:1024])
    return connection.data_to_send()


def _guarded_accept(
    guard: ConnectionGuard, build: Callable[[ConnectionState | None], Any], limits: BoundaryLimits
) -> _AcceptHook:
    """The accept hook of one server: the guard admits the socket first (or it is closed at
    once, with a GOAWAY when plaintext), and the TLS handshake gets the handshake timeout."""

    async def accept(
        original: Callable[..., Awaitable[None]],
        conn: Any,
        extra: Any,
        sslcontext: Any = None,
        server: Any = None,
        ssl_handshake_timeout: Any = None,
        *args: Any,
    ) -> None:
        now = trio.current_time()
        opened = guard.open(_peer_host(extra.get("peername")), now)
        if isinstance(opened, Refusal):
            if sslcontext is None:
                with contextlib.suppress(OSError):
                    conn.send(_refusal_bytes(opened))
            conn.close()
            return
        state = opened
        timeout = limits.handshake_timeout or ssl_handshake_timeout or _ASYNCIO_HANDSHAKE_TIMEOUT
        try:
            await original(lambda: build(state), conn, extra, sslcontext, server, timeout, *args)
        finally:
            if state.handle is None:  # never set up: the TLS handshake failed or timed out
                guard.close(state)
                if sslcontext is not None:
                    late = trio.current_time() - now >= timeout
                    reason = "handshake_timeout" if late else "tls_handshake"
                    guard.count(Refusal(reason, "the TLS handshake did not complete"))

    return accept


def _survive_running_out_of_files(loop: Any) -> None:
    """Keep serving when ``accept()`` runs out of file descriptors (or buffers), or when one
    connection fails.

    asyncio reports both to the loop's exception handler (and retries the listener a second
    later, or closes the connection); trio-asyncio's default handler re-raises everything
    reported into the loop's nursery, which ended the whole process (exit status 1) when a
    flood of connections exhausted the open-files limit. This handler logs (accept failures
    at most once a second, and counted) instead; anything else still goes to the default
    handler.
    """
    last_logged = -1.0

    def handler(loop: Any, context: dict[str, Any]) -> None:
        nonlocal last_logged
        error = context.get("exception")
        listener = context.get("socket")
        if (
            isinstance(error, OSError)
            and error.errno in _CAPACITY_ERRNOS
            and listener is not None
            and "accept" in str(context.get("message", ""))
        ):
            guards: dict[int, ConnectionGuard] = getattr(loop, _LISTENERS, {})
            guard = guards.get(listener.fileno())
            if guard is not None:
                guard.count(Refusal("out_of_files", str(error)))
            now = time.monotonic()
            if now - last_logged >= 1.0:
                last_logged = now
                log.error("accept() failed (%s): new connections wait until it recovers", error)
            return
        if "transport" in context or "protocol" in context:
            # One connection failed (asyncio closes it): log it, never end the server for it.
            log.error("%s", context.get("message", "a connection failed"), exc_info=error)
            return
        loop.default_exception_handler(context)

    loop.set_exception_handler(handler)


async def _sweep(guard: ConnectionGuard) -> None:
    """Carry out what the guard finds due, every ``guard.sweep_interval`` seconds."""
    while True:
        await trio.sleep(guard.sweep_interval)
        for state, action in guard.sweep(trio.current_time()):
            wiring = state.handle
            if not isinstance(wiring, _Wiring):
                continue
            if action == "ping":
                wiring.ping()
            elif action == "abort":
                wiring.abort()
            else:
                assert isinstance(action, Refusal)
                wiring.refuse(action)


async def serve_grpc(
    endpoint: Endpoint,
    methods: Sequence[str],
    acceptor: StreamAcceptor,
    *,
    limits: BoundaryLimits | None = None,
    refusals: collections.Counter[str] | None = None,
    max_pending: int = 1024,
    on_accept_error: Callable[[ServerStream, Exception], None] | None = None,
    tls: ReloadingContext | None = None,
    task_status: trio.TaskStatus[GrpcServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the bidi ``methods`` on ``endpoint`` until cancelled.

    Each new RPC becomes a :class:`ServerStream` passed to ``acceptor`` from a trio task.
    ``task_status.started`` gets a :class:`GrpcServer` whose ``endpoint`` has the bound port
    (port 0 picks a free one). An ``acceptor`` that raises refuses that stream with INTERNAL
    (logged, and reported to ``on_accept_error``); the server keeps serving. Must run inside
    :func:`open_grpc_loop`. With ``tls`` (a server context) every connection is mTLS and each
    stream carries the client certificate's identity.

    Every connection is held to ``limits`` (:class:`~bobravoz.runtime.guard.BoundaryLimits`,
    its defaults when None) by a :class:`~bobravoz.runtime.guard.ConnectionGuard`; each
    refusal is counted in ``refusals`` by reason. Connections still open when the server
    stops get GOAWAY and are closed.
    """
    limits = limits or BoundaryLimits()
    guard = ConnectionGuard(
        limits,
        max_connections=connection_bound(limits.max_connections, open_files_limit()),
        refusals=refusals,
    )
    incoming, accepted = trio.open_memory_channel[ServerStream](max_pending)
    server = grpclib.server.Server(
        [_Service(methods, incoming, secure=tls is not None, limits=limits, guard=guard)],
        codec=ForwardingCodec(),
        # Keepalive is the guard's (grpclib's server pings at most every 5 minutes and closes
        # without GOAWAY); the connection window is well above the stream window (isolation).
        config=Configuration(
            _keepalive_time=None,
            http2_connection_window_size=limits.connection_window,
            http2_stream_window_size=limits.stream_window,
        ),
    )
    factory, build = _patch_protocols(server, guard, limits)
    loop = trio_asyncio.current_loop.get()
    hooks = _accept_hooks(loop)
    hooks[factory] = _guarded_accept(guard, build, limits)
    listeners: dict[int, ConnectionGuard] = getattr(loop, _LISTENERS)
    context = tls.context if tls is not None else None
    started = False
    try:
        if endpoint.unix_path is not None:
            prepare_unix_socket(endpoint.unix_path)
            await trio_asyncio.aio_as_trio(server.start)(
                path=endpoint.unix_path, ssl=context, backlog=limits.listen_backlog
            )
            bound = endpoint
        else:
            await trio_asyncio.aio_as_trio(server.start)(
                endpoint.host, endpoint.port, ssl=context, backlog=limits.listen_backlog
            )
        started = True
        listener = server._server  # noqa: SLF001 - grpclib exposes no bound address
        assert listener is not None
        sockets = listener.sockets  # type: ignore[attr-defined]
        for sock in sockets:
            listeners[sock.fileno()] = guard
        if endpoint.unix_path is None:
            bound = Endpoint(host=endpoint.host, port=int(sockets[0].getsockname()[1]))
        task_status.started(GrpcServer(bound, guard))
        async with trio.open_nursery() as nursery, accepted:
            nursery.start_soon(_sweep, guard)
            async for stream in accepted:
                try:
                    acceptor(stream)
                except Exception as error:
                    # One bad admission must never take the server down: refuse that stream.
                    log.exception(
                        "admitting a %s stream from %s failed", stream.method, stream.peer
                    )
                    if on_accept_error is not None:
                        on_accept_error(stream, error)
                    stream.finish(StatusCode.INTERNAL, f"admission failed: {type(error).__name__}")
    finally:
        hooks.pop(factory, None)
        for fd in [fd for fd, owner in listeners.items() if owner is guard]:
            del listeners[fd]
        incoming.close()
        if started:
            with trio.CancelScope(shield=True):
                server.close()
                shutdown = Refusal("shutdown", "the server is shutting down")
                for state in guard.states():
                    if isinstance(state.handle, _Wiring):
                        state.handle.refuse(shutdown)
                with trio.move_on_after(5):
                    await trio_asyncio.aio_as_trio(server.wait_closed)()


@final
class GrpcChannel:
    """A client connection to one endpoint; open streams on it with :meth:`open_stream`."""

    def __init__(
        self, channel: Channel, endpoint: Endpoint, *, peer_namespace: str | None = None
    ) -> None:
        self._channel = channel
        self.endpoint = endpoint
        self.peer_namespace = peer_namespace

    @contextlib.asynccontextmanager
    async def open_stream(
        self, method: str, metadata: Mapping[str, str] | None = None
    ) -> AsyncIterator[ClientStream]:
        """Open a bidi call; entering waits for the server's response headers.

        Raises :class:`RemoteStatusError` when the server refuses the call (e.g. a failed
        handshake) and ``trio.BrokenResourceError`` when it cannot be reached. Leaving the
        block half-closes and cancels the call.
        """
        ends = ClientStream(method=method)
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(self._run_call, ends, method, dict(metadata or {}))
                try:
                    yield ends
                finally:
                    ends._outbound.close(trio.ClosedResourceError("stream closed"))  # noqa: SLF001
                    nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            raise lone_exception(group) from None

    async def _run_call(
        self,
        ends: ClientStream,
        method: str,
        metadata: dict[str, str],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        ready = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._call, ends, method, metadata, ready)
            await ready.wait()
            task_status.started()

    async def _call(
        self, ends: ClientStream, method: str, metadata: dict[str, str], ready: trio.Event
    ) -> None:
        try:
            await trio_asyncio.aio_as_trio(_client_pumps)(
                self._channel, ends, method, metadata, ready, self.peer_namespace
            )
        except Exception as error:
            translated = _translate(error)
            ends._inbound.close(translated)  # noqa: SLF001
            ends._outbound.close(translated)  # noqa: SLF001
            if not ready.is_set():
                if isinstance(translated, RemoteStatusError):
                    raise translated from error
                raise trio.BrokenResourceError(
                    f"cannot open {method} on {self.endpoint}: {error}"
                ) from error


def _check_server_identity(stream: Any, namespace: str) -> None:
    """Refuse a server whose certificate names no SPIFFE ID of ``namespace``."""
    identity = peer_identity(stream.peer.cert() if stream.peer is not None else None)
    if identity is None or namespace not in identity.namespaces:
        found = identity.describe() if identity is not None else "no certificate"
        raise PermissionError(
            f"the server's certificate ({found}) is not of namespace {namespace!r}"
        )


async def _client_pumps(
    channel: Channel,
    ends: ClientStream,
    method: str,
    metadata: dict[str, str],
    ready: trio.Event,
    peer_namespace: str | None,
) -> None:
    inbound = ends._inbound  # noqa: SLF001
    outbound = ends._outbound  # noqa: SLF001
    async with channel.request(
        method,
        grpclib.const.Cardinality.STREAM_STREAM,
        RawMessage,
        RawMessage,
        metadata=metadata,
    ) as stream:
        await stream.send_request()
        if peer_namespace is not None:
            _check_server_identity(stream, peer_namespace)
        await stream.recv_initial_metadata()
        ends.initial_metadata = _metadata_dict(stream.initial_metadata or {})
        ready.set()

        async def send_pump() -> None:
            while True:
                if outbound.items and not outbound.halted:
                    await _write_client(stream, _take_coalesced(outbound), ends)
                    continue
                if outbound.closed:
                    if outbound.error is None:
                        await stream.end()
                    return
                await _wait_writing_directly(stream, ends, direct=True)

        async with asyncio.TaskGroup() as group:
            receiver = group.create_task(_receive_into(stream, inbound, trailers=True))
            try:
                await send_pump()
                await receiver
            except Exception as error:
                inbound.close(_translate(error))
                raise
            finally:
                receiver.cancel()
                await stream.cancel()


#: What clients hold their connections to: the windows and the read-ahead (no guard).
_CLIENT_LIMITS: Final = BoundaryLimits()


@contextlib.asynccontextmanager
async def open_grpc_channel(
    endpoint: Endpoint,
    *,
    tls: ReloadingContext | ssl.SSLContext | None = None,
    server_name: str | None = None,
    peer_namespace: str | None = None,
    limits: BoundaryLimits | None = None,
) -> AsyncIterator[GrpcChannel]:
    """Open a client connection to ``endpoint`` (TCP ``host:port`` or ``unix://path``).

    ``limits`` gives the connection's receive windows and read-ahead (the defaults'
    otherwise; nothing else of it applies to a client).

    With ``tls`` (a client context; an ``ssl.SSLContext`` as it is, e.g. server-auth only)
    the connection is TLS; the server's certificate is
    checked against ``server_name`` (default: the dialled host; ``localhost`` for a unix
    socket) when the context checks host names. With ``peer_namespace`` a stream opens only
    when the server's certificate carries a SPIFFE ID of that namespace (peer-to-peer hops,
    where the peer is known by its identity rather than a host name).
    """
    config = Configuration(
        ssl_target_name_override=(server_name or ("localhost" if endpoint.unix_path else None))
        if tls is not None
        else None,
        http2_connection_window_size=(limits or _CLIENT_LIMITS).connection_window,
        http2_stream_window_size=(limits or _CLIENT_LIMITS).stream_window,
    )
    context = tls.context if isinstance(tls, ReloadingContext) else tls
    if endpoint.unix_path is not None:
        channel = Channel(
            path=endpoint.unix_path, codec=ForwardingCodec(), ssl=context, config=config
        )
    else:
        channel = Channel(
            endpoint.host, endpoint.port, codec=ForwardingCodec(), ssl=context, config=config
        )
    make_protocol = channel._protocol_factory  # noqa: SLF001 - no public hook

    def protocol_factory() -> Any:
        protocol = make_protocol()
        _Wiring(protocol, limits or _CLIENT_LIMITS)  # read-ahead: a stalled stream holds its window
        return protocol

    channel._protocol_factory = protocol_factory  # type: ignore[method-assign]  # noqa: SLF001
    try:
        yield GrpcChannel(channel, endpoint, peer_namespace=peer_namespace)
    finally:
        protocol = channel._protocol  # noqa: SLF001 - grpclib keeps the connection here
        connection = getattr(protocol, "connection", None)
        transport = getattr(connection, "_transport", None)
        channel.close()
        if transport is not None and tls is not None:
            # A TLS transport's close() waits for the peer's close_notify before it lets the
            # socket go, in a callback the closing asyncio loop may never run: release the
            # socket now (the streams are over; nothing is left to say).
            transport.abort()


def _skip_idle_synchronize(loop: Any) -> None:
    """After each socket read or write callback, trio-asyncio's I/O task awaits
    ``loop.synchronize()``: it queues a handle and waits for the loop's task to run
    everything queued so far, two task switches per readiness event. When no handle was
    queued since the last synchronisation there is nothing to wait for: this returns at once
    then (the I/O task's next wait for the socket is the checkpoint). Handles are counted as
    they are queued (a handle sent to the waiting loop task never shows in the queue's
    statistics). Measured: about a fifth of the hub's CPU with 200 streams at 2,000 packets/s
    in all, where each packet is its own read.
    """
    synchronize = loop.synchronize
    queue_handle = loop._queue_handle  # noqa: SLF001 - trio-asyncio 0.16, pinned by a test
    queued = 0

    def counting_queue_handle(handle: Any) -> Any:
        nonlocal queued
        queued += 1
        return queue_handle(handle)

    async def synchronize_if_queued() -> None:
        nonlocal queued
        if queued:
            await synchronize()
            queued = 0

    loop._queue_handle = counting_queue_handle  # noqa: SLF001
    loop.synchronize = synchronize_if_queued


@contextlib.asynccontextmanager
async def open_grpc_loop() -> AsyncIterator[None]:
    """Host the asyncio loop grpclib needs inside the current trio run."""
    async with trio_asyncio.open_loop() as loop:
        _skip_idle_synchronize(loop)
        _survive_running_out_of_files(loop)
        yield


def run_with_grpc(main: Callable[[], Awaitable[object]]) -> None:
    """``trio.run`` ``main`` with the asyncio loop for grpclib open around it."""

    async def wrapper() -> None:
        async with open_grpc_loop():
            await main()

    trio.run(wrapper)


__all__ = [
    "DEFAULT_BATCH",
    "ClientStream",
    "ForwardingCodec",
    "GrpcChannel",
    "GrpcServer",
    "MessageTooLarge",
    "RawMessage",
    "ServerStream",
    "open_grpc_channel",
    "open_grpc_loop",
    "run_with_grpc",
    "serve_grpc",
]
