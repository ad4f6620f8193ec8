"""The channel/stream pumps: nothing is lost or duplicated when they are cancelled or stopped.

Scope: :mod:`bobravoz.runtime.pump` (``channel_to_stream``, ``settle_stream``,
``stream_to_channel``, ``StreamLedger``, ``ResumePoint``), driven both through the real gRPC
bridge (in process, loopback TCP) and through a small fake stream implementing the pump's
``OutboundStream`` protocol, whose writer the test moves by hand.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import logging
import math
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
import trio
import trio.testing

from bobravoz.runtime.channel import BoundedChannel, ChannelLimits, DropPolicy
from bobravoz.runtime.endpoints import Endpoint
from bobravoz.runtime.grpc_bridge import (
    ClientStream,
    GrpcServer,
    ServerStream,
    open_grpc_channel,
    open_grpc_loop,
    serve_grpc,
    write_behind,
)
from bobravoz.runtime.pump import (
    ResumePoint,
    StreamLedger,
    channel_to_stream,
    settle_stream,
    stream_to_channel,
)

METHOD = "/t.S/M"
BIG = 16 * 1024

# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def bridged_call() -> AsyncIterator[tuple[ClientStream, ServerStream]]:
    """One bidi call over loopback TCP: (client end, accepted server end)."""
    outbox, accepted = trio.open_memory_channel[ServerStream](math.inf)

    def acceptor(stream: ServerStream) -> None:
        stream.accept()
        outbox.send_nowait(stream)

    async with open_grpc_loop(), trio.open_nursery() as nursery:
        server: GrpcServer = await nursery.start(
            functools.partial(serve_grpc, Endpoint(host="127.0.0.1", port=0), [METHOD], acceptor)
        )
        async with (
            open_grpc_channel(server.endpoint) as channel,
            channel.open_stream(METHOD, {}) as client,
        ):
            yield client, await accepted.receive()
        nursery.cancel_scope.cancel()


async def receive_all(stream: ServerStream | ClientStream) -> list[Any]:
    got: list[Any] = []
    while True:
        try:
            got.extend(await stream.receive_batch())
        except trio.EndOfChannel:
            return got


def make_channel(
    policy: DropPolicy = DropPolicy.BLOCK, *, messages: int = 10_000, size: int = 1 << 30
) -> BoundedChannel[bytes]:
    return BoundedChannel(
        ChannelLimits(max_messages=messages, max_bytes=size, policy=policy), name="pump"
    )


def drain(channel: BoundedChannel[bytes]) -> list[bytes]:
    items: list[bytes] = []
    while channel.depth:
        items.append(channel.receive_nowait())
    return items


def numbered(start: int, count: int, size: int = 8) -> list[bytes]:
    return [index.to_bytes(4, "big") + bytes(size - 4) for index in range(start, start + count)]


class FakeOutbound:
    """An ``OutboundStream`` like the bridge's: all-or-nothing, cancel-atomic sends into a
    bounded queue, a writer the test drives (take for writing, complete the write), and
    ``withdraw`` returning the queued, untaken messages."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.queued: list[Any] = []
        self.writing: list[Any] = []
        self.wire: list[Any] = []
        self.written = 0
        self.written_bytes = 0
        self.closed = False
        self._room = trio.lowlevel.ParkingLot()
        self._queued = trio.lowlevel.ParkingLot()

    async def send(self, message: Any) -> None:
        await self.send_batch([message])

    async def send_batch(self, messages: Sequence[Any]) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            if self.closed:
                raise trio.ClosedResourceError("withdrawn")
            if not self.queued or len(self.queued) + len(messages) <= self.capacity:
                break
            await self._room.park()
        self.queued.extend(messages)
        self._queued.unpark_all()
        await trio.lowlevel.cancel_shielded_checkpoint()

    def offer_run_nowait(self, messages: list[Any]) -> int:
        if self.closed:
            return 0
        taken = messages[: max(0, self.capacity - len(self.queued))]
        self.queued.extend(taken)
        self._queued.unpark_all()
        return len(taken)

    async def wait_queued(self, count: int) -> None:
        """Wait until ``count`` messages are queued."""
        while len(self.queued) < count:
            await self._queued.park()

    def take_for_write(self, count: int) -> None:
        self.writing.extend(self.queued[:count])
        del self.queued[:count]
        self._room.unpark_all()

    def complete_write(self) -> None:
        self.wire.extend(self.writing)
        self.written += len(self.writing)
        self.written_bytes += sum(map(len, self.writing))
        self.writing = []

    def halt(self) -> None:
        self.closed = True
        self._room.unpark_all()

    def withdraw(self) -> list[Any]:
        self.halt()
        backlog, self.queued = self.queued, []
        return backlog


class Pump:
    """``channel_to_stream`` in a task of its own that the test can cancel."""

    def __init__(self) -> None:
        self.scope = trio.CancelScope()
        self.returned = trio.Event()

    async def run(self, *args: Any, **kwargs: Any) -> None:
        with self.scope:
            await channel_to_stream(*args, **kwargs)
            self.returned.set()


# --------------------------------------------------------------------------------------------
# channel_to_stream + settle_stream with a fake stream (exact, step by step)
# --------------------------------------------------------------------------------------------


async def test_cancelling_channel_to_stream_mid_batch_gives_the_batch_back() -> None:
    channel = make_channel()
    stream = FakeOutbound(capacity=3)
    ledger = StreamLedger(stream)
    first, second = numbered(0, 3), numbered(3, 4)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            pump = Pump()
            nursery.start_soon(pump.run, channel, stream, ledger)
            for item in first:
                channel.send_nowait(item, len(item))
            await trio.testing.wait_all_tasks_blocked()
            assert stream.queued == first  # handed on and committed
            assert channel.in_flight == 0
            for item in second:
                channel.send_nowait(item, len(item))
            await trio.testing.wait_all_tasks_blocked()
            assert channel.in_flight == 4  # leased, waiting for room in the stream
            stream.take_for_write(2)  # room for 1, not for the batch of 4: still waiting
            await trio.testing.wait_all_tasks_blocked()
            assert channel.in_flight == 4
            pump.scope.cancel()
        assert not pump.returned.is_set()
    assert channel.in_flight == 0
    assert stream.queued == first[2:]  # nothing of the cancelled batch reached the stream
    later = numbered(7, 1)[0]
    channel.send_nowait(later, len(later))
    stream.complete_write()
    settle_stream(channel, ledger)
    assert ledger.unwritten() == 0  # the stream is over; nothing was lost
    # Written, then everything else back at the channel's front, in order.
    assert stream.wire == first[:2]
    assert drain(channel) == [*first[2:], *second, later]


@pytest.mark.parametrize("last_write", ["queued", "lost in a write"])
async def test_ledger_counts_every_handed_packet(last_write: str) -> None:
    """``handed == written + withdrawn + unwritten``; ``unwritten`` (final once the stream is
    over) is what was taken for a socket write that never completed."""
    channel = make_channel()
    stream = FakeOutbound(capacity=100)
    ledger = StreamLedger(stream)
    items = numbered(0, 3)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            pump = Pump()
            nursery.start_soon(pump.run, channel, stream, ledger)
            for item in items:
                channel.send_nowait(item, len(item))
            await trio.testing.wait_all_tasks_blocked()
            assert ledger.handed == 3
            pump.scope.cancel()
    stream.take_for_write(2)
    stream.complete_write()
    if last_write == "lost in a write":
        stream.take_for_write(1)  # taken by the writer; the connection dies before it lands
    assert ledger.in_bridge() == 1
    withdrawn_before = stream.queued[:]
    assert settle_stream(channel, ledger) == len(withdrawn_before)
    unwritten = ledger.unwritten()
    assert ledger.handed == stream.written + len(withdrawn_before) + unwritten
    assert unwritten == (1 if last_write == "lost in a write" else 0)
    assert drain(channel) == withdrawn_before


async def test_heartbeats_are_not_handed_and_decode_skips_them_on_settle(
    autojump_clock: trio.abc.Clock,
) -> None:
    channel = make_channel()
    stream = FakeOutbound(capacity=100)
    ledger = StreamLedger(stream)
    heartbeat = b"\x00hb"
    after_batches: list[int] = []
    with trio.fail_after(100):
        async with trio.open_nursery() as nursery:
            pump = Pump()
            nursery.start_soon(
                functools.partial(
                    pump.run,
                    channel,
                    stream,
                    ledger,
                    encode=lambda item: b"E" + item,
                    idle=(5.0, heartbeat),
                    after_batch=lambda: after_batches.append(len(stream.queued)),
                )
            )
            started = trio.current_time()
            await stream.wait_queued(1)
            assert trio.current_time() - started == pytest.approx(5.0)  # one idle period
            await stream.wait_queued(2)
            assert trio.current_time() - started == pytest.approx(10.0)
            assert stream.queued == [heartbeat, heartbeat]
            channel.send_nowait(b"a", 1)
            channel.send_nowait(b"b", 1)
            await trio.testing.wait_all_tasks_blocked()
            assert stream.queued == [heartbeat, heartbeat, b"Ea", b"Eb"]
            # the pump waited on an empty channel: each item was handed to the stream at once
            assert after_batches == [3, 4]
            assert ledger.handed == 2
            pump.scope.cancel()
    stream.take_for_write(1)
    stream.complete_write()

    def unwrap(message: bytes) -> bytes | None:
        return None if message == heartbeat else message[1:]

    settle_stream(channel, ledger, decode=unwrap)
    assert drain(channel) == [b"a", b"b"]  # heartbeats are not channel items


async def test_channel_to_stream_returns_when_the_stream_is_halted() -> None:
    channel = make_channel()
    stream = FakeOutbound(capacity=2)
    ledger = StreamLedger(stream)
    items = numbered(0, 5)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            pump = Pump()
            channel.send_nowait(items[0], 8)
            channel.send_nowait(items[1], 8)
            nursery.start_soon(pump.run, channel, stream, ledger)
            await trio.testing.wait_all_tasks_blocked()
            for item in items[2:]:
                channel.send_nowait(item, 8)
            await trio.testing.wait_all_tasks_blocked()
            assert channel.in_flight == 3
            stream.halt()  # the stream is superseded while the pump waits for room
            await pump.returned.wait()
    assert channel.in_flight == 0
    assert drain(channel) == items[2:]  # the lease came back
    for item in items[2:]:
        channel.send_nowait(item, 8)
    settle_stream(channel, ledger)  # then the stream's backlog goes in front of it
    assert drain(channel) == items


# --------------------------------------------------------------------------------------------
# channel_to_stream + settle_stream through the real bridge
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Stopped:
    sent: list[bytes]
    received: list[bytes]
    handed: int  # what the pump really handed to the stream (counted from the channel)
    withdrawn: int
    unwritten: int
    ledger: StreamLedger


async def stop_a_stalled_pump(stop: str) -> Stopped:
    """Feed a server stream whose client does not read until the pump holds a lease it
    cannot hand on, stop the pump (cancel it, or halt the stream under it), end the call and
    settle the ledger."""
    channel = make_channel()
    sent = numbered(0, 2000, BIG)
    for item in sent:
        channel.send_nowait(item, len(item))
    async with bridged_call() as (client, server):
        client.close_send()
        ledger = StreamLedger(server)
        async with trio.open_nursery() as nursery:
            pump = Pump()
            nursery.start_soon(pump.run, channel, server, ledger)
            await trio.testing.wait_all_tasks_blocked()
            assert channel.in_flight > 0  # a leased batch waits for room in the bridge
            if stop == "cancel":
                pump.scope.cancel()
            else:
                server.halt()
        if stop == "halt":
            assert pump.returned.is_set()  # a halted stream ends the pump by itself
        assert channel.in_flight == 0
        handed = len(sent) - channel.depth
        server.halt()
        received = await receive_all(client)  # the call is over: written is final
        depth = channel.depth
        settle_stream(channel, ledger)
        unwritten = ledger.unwritten()
        withdrawn = channel.depth - depth
    assert received == sent[: len(received)]
    assert ledger.stream.written == len(received)
    # Everything not written is back at the front of the channel, in order.
    assert received + drain(channel) == sent
    return Stopped(sent, received, handed, withdrawn, unwritten, ledger)


@pytest.mark.parametrize("stop", ["cancel", "halt"])
async def test_stopping_channel_to_stream_over_the_bridge_loses_nothing(stop: str) -> None:
    with trio.fail_after(10):
        await stop_a_stalled_pump(stop)


async def test_channel_to_stream_delivers_a_large_backlog_to_a_reading_peer() -> None:
    """2000 messages of 16 KiB through the pump to a client that reads everything: all must
    arrive. (Batches of 256 wait for room in the bridge's 512-message pipe; the writer takes
    256 KiB = 16 messages at a time, so the pipe drains without ever being full again.)"""
    channel = make_channel()
    sent = numbered(0, 2000, BIG)
    for item in sent:
        channel.send_nowait(item, len(item))
    got: list[bytes] = []
    with trio.fail_after(10):
        async with bridged_call() as (client, server):
            client.close_send()
            ledger = StreamLedger(server)
            async with trio.open_nursery() as nursery:
                pump = Pump()
                nursery.start_soon(pump.run, channel, server, ledger)

                async def reader() -> None:
                    got.extend(await receive_all(client))

                nursery.start_soon(reader)
                # Idle for a while with everything delivered, or stuck.
                await trio.testing.wait_all_tasks_blocked(cushion=0.05)
                state = (server.written, server.outbound_depth(), channel.in_flight, channel.depth)
                pump.scope.cancel()
                server.finish()
    assert (channel.depth, channel.in_flight) == (0, 0), (
        f"the pump stopped feeding the stream: (written, pipe, leased, queued)={state}"
    )
    assert got == sent


async def test_ledger_identity_over_the_bridge() -> None:
    with trio.fail_after(10):
        stopped = await stop_a_stalled_pump("cancel")
    assert stopped.handed == len(stopped.received) + stopped.withdrawn  # nothing lost in between
    assert stopped.unwritten == 0
    assert stopped.ledger.handed == stopped.handed, "the ledger must count what was handed"
    assert stopped.ledger.handed == (
        stopped.ledger.stream.written + stopped.withdrawn + stopped.unwritten
    )


# --------------------------------------------------------------------------------------------
# stream_to_channel
# --------------------------------------------------------------------------------------------


class ResumablePump:
    """``stream_to_channel`` in a task of its own that the test can cancel."""

    def __init__(self) -> None:
        self.scope = trio.CancelScope()
        self.returned = trio.Event()

    async def run(self, *args: Any) -> None:
        with self.scope:
            await stream_to_channel(*args)
            self.returned.set()


class CountingTransform:
    def __init__(self) -> None:
        self.calls: collections.Counter[bytes] = collections.Counter()
        self.total = 0

    def __call__(self, message: Any) -> bytes | None:
        self.calls[bytes(message)] += 1
        self.total += 1
        return b"T" + bytes(message)


async def test_stream_to_channel_cancelled_and_resumed_delivers_each_message_once() -> None:
    messages = numbered(0, 40)
    transform = CountingTransform()
    channel = make_channel(messages=7)
    resume = ResumePoint()  # kept across the restarts, as the caller does
    delivered: list[bytes] = []
    rounds = 0
    with trio.fail_after(10):
        async with bridged_call() as (client, server):
            await client.send_batch(messages)
            client.close_send()
            while True:
                rounds += 1
                async with trio.open_nursery() as nursery:
                    pump = ResumablePump()
                    nursery.start_soon(pump.run, server, channel, transform, resume)
                    await trio.testing.wait_all_tasks_blocked()
                    if not pump.returned.is_set():
                        pump.scope.cancel()
                if pump.returned.is_set():
                    break
                # It waited for room with one message transformed and not accepted yet ...
                assert channel.depth == 7
                assert resume.message is not None
                # ... and the untaken messages went back to the stream, that one first.
                position = len(delivered) + channel.depth
                front = await server.receive_batch()
                assert front[0] is resume.message
                assert front == messages[position : position + len(front)]
                server.unreceive(front)
                # Make room for a few (none every third round: it must wait again without
                # transforming the waiting message a second time).
                for _ in range(0 if rounds % 3 == 0 else 1 + rounds % 5):
                    delivered.append(channel.receive_nowait())
            delivered.extend(drain(channel))
    assert rounds > 5
    assert delivered == [b"T" + message for message in messages]
    assert transform.total == len(messages), transform.calls.most_common(3)
    assert set(transform.calls.values()) == {1}


async def test_stream_to_channel_unreceives_when_the_channel_closes() -> None:
    messages = numbered(0, 6)
    channel = make_channel(messages=2)
    transform = CountingTransform()
    resume = ResumePoint()
    with trio.fail_after(10):
        async with bridged_call() as (client, server):
            await client.send_batch(messages)
            async with trio.open_nursery() as nursery:
                failure: list[BaseException] = []

                async def run() -> None:
                    try:
                        await stream_to_channel(server, channel, transform, resume)
                    except trio.ClosedResourceError as error:
                        failure.append(error)

                nursery.start_soon(run)
                await trio.testing.wait_all_tasks_blocked()
                channel.close()
            assert len(failure) == 1
            assert drain(channel) == [b"T" + message for message in messages[:2]]
            client.close_send()
            rest = await receive_all(server)
            assert rest == messages[2:]
            assert rest[0] is resume.message


async def test_stream_to_channel_transforms_equal_messages_separately() -> None:
    """Two empty messages are two messages. The bridge hands both over as the same ``b""``
    object (CPython's empty-bytes singleton), so an identity-based resume point must not
    mistake the second for the first: ``transform`` (which counts rejections) runs for each."""
    transform = CountingTransform()
    channel = make_channel()
    with trio.fail_after(10):
        async with bridged_call() as (client, server):
            await client.send_batch([b"", b"", b"x"])
            client.close_send()
            await stream_to_channel(server, channel, transform, ResumePoint())
    assert drain(channel) == [b"T", b"T", b"Tx"]
    assert transform.total == 3


# --------------------------------------------------------------------------------------------
# the few-wake-ups paths: items handed straight to an idle consumer, messages taken in the read
# callback, writes deferred to the end of a pass (order kept, each counted once, and the
# buffered path whenever something is ahead or waiting)
# --------------------------------------------------------------------------------------------


async def receive_count(stream: Any, count: int) -> list[Any]:
    got: list[Any] = []
    while len(got) < count:
        got.extend(await stream.receive_batch())
    return got


async def test_an_item_for_an_idle_consumer_goes_straight_to_its_stream() -> None:
    channel = make_channel()
    with trio.fail_after(10):
        async with bridged_call() as (client, server), trio.open_nursery() as nursery:
            ledger = StreamLedger(server)
            nursery.start_soon(functools.partial(channel_to_stream, channel, server, ledger))
            await trio.testing.wait_all_tasks_blocked()
            assert channel.handoff is not None
            for item in numbered(0, 3):
                channel.send_nowait(item, len(item))
            # handed over synchronously: never buffered, counted offered and taken once
            stats = channel.statistics()
            assert (stats.depth, stats.offered, stats.received, ledger.handed) == (0, 3, 3, 3)
            assert await receive_count(client, 3) == numbered(0, 3)
            nursery.cancel_scope.cancel()
    assert channel.handoff is None  # the pump took its hand-off back when it stopped


async def test_nothing_overtakes_buffered_or_leased_items() -> None:
    channel = make_channel()
    for item in numbered(0, 2):
        channel.send_nowait(item, len(item))  # buffered before any consumer
    with trio.fail_after(10):
        async with bridged_call() as (client, server), trio.open_nursery() as nursery:
            ledger = StreamLedger(server)
            with await channel.lease() as lease:  # a lease in flight: items are ahead
                nursery.start_soon(functools.partial(channel_to_stream, channel, server, ledger))
                await trio.testing.wait_all_tasks_blocked()
                late = numbered(2, 1)[0]
                channel.send_nowait(late, len(late))
                assert channel.depth == 1  # buffered behind the lease, not handed over
                assert lease.items == numbered(0, 2)
            # the uncommitted lease went back to the front; all arrive in order
            assert await receive_count(client, 3) == numbered(0, 3)
            nursery.cancel_scope.cancel()


async def test_a_full_block_channel_with_waiting_senders_keeps_fifo() -> None:
    channel = make_channel(DropPolicy.BLOCK, messages=1)
    first, second, third = numbered(0, 3)
    channel.send_nowait(first, len(first))
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(channel.send, second, len(second))
            await trio.testing.wait_all_tasks_blocked()
            channel.handoff = lambda items: pytest.fail("a waiting sender was overtaken")
            with pytest.raises(trio.WouldBlock):
                channel.send_nowait(third, len(third))
            channel.handoff = None
            assert channel.receive_nowait() == first
    assert drain(channel) == [second]


async def test_the_read_callback_hands_messages_on_while_the_pump_is_idle() -> None:
    channel = make_channel()
    seen: list[int] = []
    with trio.fail_after(10):
        async with bridged_call() as (client, server), trio.open_nursery() as nursery:
            nursery.start_soon(
                stream_to_channel, server, channel, lambda m: b"T" + m, ResumePoint()
            )
            await trio.testing.wait_all_tasks_blocked()
            take = server.sink
            assert take is not None

            def spy(messages: list[bytes]) -> int:
                taken = take(messages)
                seen.append(taken)
                return taken

            server.sink = spy
            messages = numbered(0, 50)
            await client.send_batch(messages)
            while channel.depth < 50:
                await trio.testing.wait_all_tasks_blocked()
            assert sum(seen) == 50  # every one was taken in the read callback
            assert drain(channel) == [b"T" + m for m in messages]
            nursery.cancel_scope.cancel()


async def test_the_read_callback_stops_at_a_full_buffer_and_the_pump_resumes_there() -> None:
    channel = make_channel(DropPolicy.BLOCK, messages=5)
    calls: list[bytes] = []

    def transform(message: bytes) -> bytes:
        calls.append(message)
        return b"T" + message

    messages = numbered(0, 12)
    with trio.fail_after(10):
        async with bridged_call() as (client, server), trio.open_nursery() as nursery:
            nursery.start_soon(stream_to_channel, server, channel, transform, ResumePoint())
            await trio.testing.wait_all_tasks_blocked()
            await client.send_batch(messages)
            got: list[bytes] = []
            while len(got) < len(messages):
                await trio.testing.wait_all_tasks_blocked()
                got.extend(drain(channel))
            assert got == [b"T" + m for m in messages]
            assert calls == messages  # each transformed (and counted) exactly once
            nursery.cancel_scope.cancel()


async def test_a_read_callback_that_raises_is_logged_switched_off_and_loses_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    messages = numbered(0, 5)
    with trio.fail_after(10):
        async with bridged_call() as (client, server):

            def broken(batch: list[bytes]) -> int:
                raise RuntimeError("bug in a read callback")

            server.sink = broken
            with caplog.at_level(logging.ERROR, logger="bobravoz.runtime.grpc_bridge"):
                await client.send_batch(messages)
                assert await receive_count(server, 5) == messages
            assert server.sink is None
            assert "read callback failed" in caplog.text


async def test_offers_inside_a_pass_are_written_once_it_ends() -> None:
    with trio.fail_after(10):
        async with bridged_call() as (client, server):
            await trio.testing.wait_all_tasks_blocked()  # the send pump waits, idle
            batch = numbered(0, 20)
            with write_behind():
                for message in batch:
                    assert server.offer_nowait(message)
                assert server.written == 0  # deferred to the end of the pass
            assert server.written == 20  # written synchronously when it ended
            assert await receive_count(client, 20) == batch
            single = numbered(20, 1)[0]
            assert server.offer_nowait(single)
            assert server.written == 21  # outside a pass: written at once
            assert await receive_count(client, 1) == [single]


async def test_items_handed_over_count_as_activity_for_the_idle_heartbeat(
    autojump_clock: trio.abc.Clock,
) -> None:
    """A stream fed by hand-off is not idle: no heartbeat while items keep going by, one
    after a whole quiet period."""
    channel = make_channel()
    stream = FakeOutbound(capacity=1000)
    ledger = StreamLedger(stream)
    heartbeat = b"\x00hb"
    with trio.fail_after(100):
        async with trio.open_nursery() as nursery:
            pump = Pump()
            nursery.start_soon(
                functools.partial(pump.run, channel, stream, ledger, idle=(5.0, heartbeat))
            )
            await trio.testing.wait_all_tasks_blocked()
            for item in numbered(0, 12):
                channel.send_nowait(item, len(item))  # handed over at once
                await trio.sleep(1.0)  # 12 s of traffic, never 5 s quiet
            assert heartbeat not in stream.queued
            await stream.wait_queued(13)  # then a quiet period: one heartbeat
            assert stream.queued[-1] == heartbeat
            pump.scope.cancel()


async def test_a_failing_write_behind_flush_is_logged_and_never_raises_into_the_pass(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with trio.fail_after(10):
        async with bridged_call() as (_client, server):
            await trio.testing.wait_all_tasks_blocked()  # the send pump waits, idle

            def broken(messages: list[Any]) -> bool:
                raise RuntimeError("the transport refused the write")

            server._write_now = broken  # noqa: SLF001 - what the idle pump installs
            with (
                caplog.at_level(logging.ERROR, logger="bobravoz.runtime.grpc_bridge"),
                write_behind(),
            ):
                assert server.offer_run_nowait(numbered(0, 3)) == 3
            assert "write-behind flush failed" in caplog.text
            from bobravoz.runtime import grpc_bridge

            assert grpc_bridge._BEHIND.depth == 0  # noqa: SLF001 - no pass left open
            assert not grpc_bridge._BEHIND.streams  # noqa: SLF001
