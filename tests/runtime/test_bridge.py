"""The trio/asyncio gRPC bridge over real sockets, in process.

Scope: :mod:`bobravoz.runtime.grpc_bridge` served with :func:`serve_grpc` and called with
:func:`open_grpc_channel` over loopback TCP (port 0) and a unix socket, inside
:func:`open_grpc_loop` (grpclib on asyncio hosted by trio-asyncio): ordering and batching both
ways, cancel-atomic ``send_batch``, ``halt``/``withdraw`` of the unwritten backlog, the
``written`` counters and the ``uncounted`` marker, ``receive_batch`` as a checkpoint,
``unreceive``/``withdraw_inbound``, status propagation, a failing acceptor, and the HTTP/2
stream limit. The bridge reaches into grpclib's and h2's private attributes, so this file is
also the guard that fails when an upgrade of either breaks it.
"""

from __future__ import annotations

import contextlib
import functools
import math
import socket
import stat
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest
import trio
import trio.testing

from bobravoz.runtime.endpoints import Endpoint
from bobravoz.runtime.grpc_bridge import (
    DEFAULT_PIPE_CAPACITY,
    ClientStream,
    GrpcChannel,
    GrpcServer,
    ServerStream,
    open_grpc_channel,
    open_grpc_loop,
    serve_grpc,
)
from bobravoz.runtime.guard import BoundaryLimits
from bobravoz.runtime.status import RemoteStatusError, StatusCode

METHOD = "/t.S/M"
TCP = Endpoint(host="127.0.0.1", port=0)
#: Big enough that HTTP/2 flow control stalls the writer after a few hundred messages.
BIG = 16 * 1024


@dataclass
class Bridge:
    server: GrpcServer
    channel: GrpcChannel
    accepted: trio.MemoryReceiveChannel[ServerStream]
    accept_errors: list[tuple[ServerStream, Exception]]


def accept_all(
    outbox: trio.MemorySendChannel[ServerStream],
) -> Callable[[ServerStream], None]:
    def acceptor(stream: ServerStream) -> None:
        stream.accept()
        outbox.send_nowait(stream)

    return acceptor


@contextlib.asynccontextmanager
async def serving(
    endpoint: Endpoint = TCP,
    *,
    acceptor: Callable[[trio.MemorySendChannel[ServerStream]], Callable[[ServerStream], None]]
    | None = None,
    **options: Any,
) -> AsyncIterator[Bridge]:
    """A server on ``endpoint`` whose accepted streams arrive on ``Bridge.accepted``, and a
    client connection to it (all inside a trio-asyncio loop)."""
    outbox, accepted = trio.open_memory_channel[ServerStream](math.inf)
    errors: list[tuple[ServerStream, Exception]] = []
    make = acceptor or accept_all
    async with open_grpc_loop(), trio.open_nursery() as nursery:
        server: GrpcServer = await nursery.start(
            functools.partial(
                serve_grpc,
                endpoint,
                [METHOD],
                make(outbox),
                on_accept_error=lambda stream, error: errors.append((stream, error)),
                **options,
            )
        )
        async with open_grpc_channel(server.endpoint) as channel:
            yield Bridge(server, channel, accepted, errors)
        nursery.cancel_scope.cancel()


@contextlib.asynccontextmanager
async def call(
    bridge: Bridge, metadata: dict[str, str] | None = None
) -> AsyncIterator[tuple[ClientStream, ServerStream]]:
    async with bridge.channel.open_stream(METHOD, metadata or {}) as client:
        server = await bridge.accepted.receive()
        yield client, server


def numbered(start: int, count: int, size: int = 8) -> list[bytes]:
    return [index.to_bytes(4, "big") + bytes(size - 4) for index in range(start, start + count)]


async def receive_all(stream: ServerStream | ClientStream) -> tuple[list[Any], int]:
    """Everything until the clean end of the stream, and how many calls it took."""
    got: list[Any] = []
    calls = 0
    while True:
        try:
            batch = await stream.receive_batch()
        except trio.EndOfChannel:
            return got, calls
        calls += 1
        got.extend(batch)


async def receive_into(stream: ServerStream | ClientStream, got: list[Any]) -> None:
    """Receive into ``got`` until ``receive_batch`` raises (the end, or an error)."""
    while True:
        got.extend(await stream.receive_batch())


async def receive_exactly(stream: ServerStream | ClientStream, count: int) -> list[Any]:
    got: list[Any] = []
    while len(got) < count:
        got.extend(await stream.receive_batch())
    assert len(got) == count
    return got


async def fill_until_stalled(stream: ServerStream | ClientStream) -> list[bytes]:
    """Queue big messages until the peer (which does not read) lets HTTP/2 flow control stop
    the writer and the bridge's outbound pipe stays full; return what was queued."""
    sent: list[bytes] = []
    while True:
        message = numbered(len(sent), 1, BIG)[0]
        try:
            stream.send_nowait(message)
        except trio.WouldBlock:
            await trio.testing.wait_all_tasks_blocked()
            if stream.outbound_depth() == DEFAULT_PIPE_CAPACITY:
                return sent
        else:
            sent.append(message)


def sender_and_receiver(
    direction: str, client: ClientStream, server: ServerStream
) -> tuple[ServerStream | ClientStream, ServerStream | ClientStream]:
    return (server, client) if direction == "server" else (client, server)


def end_sending(stream: ServerStream | ClientStream) -> None:
    if isinstance(stream, ServerStream):
        stream.finish()
    else:
        stream.close_send()


# --------------------------------------------------------------------------------------------


@pytest.fixture(params=["tcp", "unix"])
def endpoint(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Endpoint:
    if request.param == "tcp":
        return TCP
    path = tmp_path_factory.mktemp("sock") / "s.sock"
    assert len(str(path)) < 100  # sun_path limit
    return Endpoint(unix_path=str(path))


async def test_messages_arrive_in_order_both_ways_in_batches(endpoint: Endpoint) -> None:
    with trio.fail_after(10):
        async with serving(endpoint) as bridge, call(bridge, {"x-who": "test"}) as (client, server):
            assert server.method == METHOD
            assert server.metadata.get("x-who") == "test"
            if endpoint.unix_path is None:
                assert bridge.server.endpoint.port != 0
            else:
                assert bridge.server.endpoint == endpoint
            # At most one pipe's worth per direction, so no batch ever waits for room (that
            # path is covered by test_send_batch_waiting_for_room_wakes_when_the_pipe_drains).
            upstream = numbered(0, 500)
            for start in range(0, 500, 100):
                await client.send_batch(upstream[start : start + 100])
            client.close_send()
            got, calls = await receive_all(server)
            assert got == upstream
            assert calls < len(upstream)  # several messages per call

            downstream = numbered(5000, 510)
            for start in range(0, 510, 170):
                await server.send_batch(downstream[start : start + 170])
            server.finish()
            got, calls = await receive_all(client)
            assert got == downstream
            assert calls < len(downstream)
            assert server.written == len(downstream)
            assert server.written_bytes == sum(map(len, downstream))
            assert client.written == len(upstream)
            assert client.written_bytes == sum(map(len, upstream))
            await server.wait_done()


@pytest.mark.parametrize("direction", ["server", "client"])
async def test_cancelled_send_batch_waiting_for_room_queues_nothing(direction: str) -> None:
    with trio.fail_after(10):
        async with serving() as bridge, call(bridge) as (client, server):
            sender, receiver = sender_and_receiver(direction, client, server)
            if direction == "server":
                client.close_send()
            queued = await fill_until_stalled(sender)
            assert sender.outbound_depth() == DEFAULT_PIPE_CAPACITY
            cancelled = [b"cancelled-%d" % index for index in range(5)]
            finished = trio.Event()
            async with trio.open_nursery() as nursery:
                scope = trio.CancelScope()

                async def blocked() -> None:
                    with scope:
                        await sender.send_batch(cancelled)
                    finished.set()

                nursery.start_soon(blocked)
                await trio.testing.wait_all_tasks_blocked()
                assert not finished.is_set()  # waiting for room
                scope.cancel()
            assert scope.cancelled_caught
            assert sender.outbound_depth() == DEFAULT_PIPE_CAPACITY
            end_sending(sender)
            got, _ = await receive_all(receiver)
            assert got == queued  # every queued message, none of the cancelled batch
            assert sender.written == len(queued)


async def test_send_batch_waiting_for_room_wakes_when_the_pipe_drains() -> None:
    """A batch that does not fit next to the queued messages waits; once the writer drained
    the pipe it must be queued. Deterministic: nothing yields between filling the pipe and
    parking in ``send_batch``, so the writer only runs once the sender waits."""
    with trio.fail_after(10):
        async with serving() as bridge, call(bridge) as (client, server):
            client.close_send()
            first = numbered(0, 500)
            second = numbered(500, 100)
            got: list[bytes] = []
            async with trio.open_nursery() as nursery:
                scope = trio.CancelScope()

                async def watchdog() -> None:
                    while len(got) < len(first):
                        got.extend(await client.receive_batch())
                    await trio.testing.wait_all_tasks_blocked()
                    scope.cancel()  # still waiting although the pipe is empty: stuck for good

                nursery.start_soon(watchdog)
                await trio.testing.wait_all_tasks_blocked()
                for message in first:
                    server.send_nowait(message)
                with scope:
                    await server.send_batch(second)  # 500 + 100 > 512: waits for room
            assert not scope.cancelled_caught, (
                f"send_batch never woke although the pipe drained "
                f"(written={server.written}, outbound_depth={server.outbound_depth()})"
            )
            server.finish()
            rest, _ = await receive_all(client)
            assert got + rest == first + second


@pytest.mark.parametrize("direction", ["server", "client"])
async def test_halt_then_withdraw_returns_exactly_the_unwritten_messages(direction: str) -> None:
    with trio.fail_after(10):
        async with serving() as bridge, call(bridge) as (client, server):
            sender, receiver = sender_and_receiver(direction, client, server)
            if direction == "server":
                client.close_send()
            queued = await fill_until_stalled(sender)
            blocked_error: list[BaseException] = []
            async with trio.open_nursery() as nursery:

                async def blocked() -> None:
                    try:
                        await sender.send_batch([b"late-1", b"late-2"])
                    except trio.ClosedResourceError as error:
                        blocked_error.append(error)

                nursery.start_soon(blocked)
                await trio.testing.wait_all_tasks_blocked()
                sender.halt()
            assert len(blocked_error) == 1  # a sender waiting for room is told, queues nothing
            backlog = sender.withdraw()
            assert len(backlog) == DEFAULT_PIPE_CAPACITY
            assert backlog == queued[len(queued) - len(backlog) :]  # the newest, in order
            assert sender.outbound_depth() == 0
            assert sender.withdraw() == []
            with pytest.raises(trio.ClosedResourceError):
                await sender.send(b"after-halt")
            with pytest.raises(trio.ClosedResourceError):
                sender.send_nowait(b"after-halt")
            with pytest.raises(trio.ClosedResourceError):
                await sender.send_batch([b"after-halt"])
            got, _ = await receive_all(receiver)
            # The peer gets exactly what was queued before the backlog: nothing after the halt.
            assert got == queued[: len(queued) - len(backlog)]
            assert sender.written == len(got)
            assert sender.written_bytes == sum(map(len, got))


async def test_halt_without_a_stall_writes_nothing_more() -> None:
    with trio.fail_after(10):
        async with serving() as bridge, call(bridge) as (client, server):
            client.close_send()
            before = numbered(0, 3)
            await server.send_batch(before)
            assert await receive_exactly(client, 3) == before
            # Queued and halted before the writer ran: all of it comes back, none is written.
            after = numbered(3, 4)
            for message in after:
                server.send_nowait(message)
            server.halt()
            assert server.withdraw() == after
            got, _ = await receive_all(client)
            assert got == []
            assert server.written == 3


@pytest.mark.parametrize("direction", ["server", "client"])
async def test_written_counts_what_the_peer_received_except_the_uncounted_marker(
    direction: str,
) -> None:
    with trio.fail_after(10):
        async with serving() as bridge, call(bridge) as (client, server):
            sender, receiver = sender_and_receiver(direction, client, server)
            if direction == "server":
                client.close_send()
            heartbeat = b"\x00heartbeat"
            sender.uncounted = heartbeat
            # The marker is compared by identity: an equal copy is data and is counted.
            lookalike = bytes(bytearray(heartbeat))
            assert lookalike is not heartbeat
            data = [*numbered(0, 50, 100), lookalike]
            await sender.send_batch([heartbeat, *data[:25]])
            await sender.send(heartbeat)
            await sender.send_batch(data[25:])
            await sender.send(heartbeat)
            end_sending(sender)
            got, _ = await receive_all(receiver)
            assert got == [heartbeat, *data[:25], heartbeat, *data[25:], heartbeat]
            assert sender.written == len(data)
            assert sender.written_bytes == sum(map(len, data))
            assert receiver.written == 0


async def test_receive_batch_is_a_checkpoint_even_with_data_ready() -> None:
    with trio.fail_after(10):
        async with serving() as bridge, call(bridge) as (client, server):
            messages = numbered(0, 5)
            await client.send_batch(messages)
            ready = await receive_exactly(server, 5)
            server.unreceive(ready)

            with trio.testing.assert_checkpoints():
                batch = await server.receive_batch()
            assert batch == messages
            server.unreceive(batch)

            with trio.CancelScope() as scope:
                scope.cancel()
                await server.receive_batch()
                pytest.fail("receive_batch did not raise Cancelled")
            assert scope.cancelled_caught

            # A loop over ready data is cancellable by a deadline: it yields every time.
            rounds = 0
            with trio.move_on_after(0.05) as deadline:
                for rounds in range(1, 1_000_000):  # noqa: B007 - counted for the message
                    server.unreceive(await server.receive_batch())
            assert deadline.cancelled_caught, f"{rounds} rounds without yielding"

            # Nothing was lost by the cancellations.
            assert await server.receive_batch() == messages


async def test_unreceive_puts_messages_back_in_front_of_newer_ones() -> None:
    with trio.fail_after(10):
        async with serving() as bridge, call(bridge) as (client, server):
            messages = numbered(0, 8)
            await client.send_batch(messages[:5])
            taken = await receive_exactly(server, 5)
            server.unreceive(taken[2:])
            await client.send_batch(messages[5:])
            client.close_send()
            got, _ = await receive_all(server)
            assert got == messages[2:]


async def test_withdraw_inbound_discards_what_was_not_taken() -> None:
    with trio.fail_after(10):
        async with serving() as bridge, call(bridge) as (client, server):
            await client.send_batch(numbered(0, 6))
            server.unreceive(await receive_exactly(server, 6))
            assert len(server.withdraw_inbound()) == 6
            assert server.withdraw_inbound() == []
            later = numbered(6, 2)
            await client.send_batch(later)
            client.close_send()
            got, _ = await receive_all(server)
            assert got == later


async def test_error_status_reaches_a_client_that_is_still_sending() -> None:
    with trio.fail_after(10):
        async with serving() as bridge, call(bridge) as (client, server):
            await client.send_batch(numbered(0, 3))
            await receive_exactly(server, 3)
            server.finish(StatusCode.PERMISSION_DENIED, "not yours")
            with pytest.raises(RemoteStatusError) as caught:
                await receive_all(client)
            assert caught.value.code is StatusCode.PERMISSION_DENIED
            assert caught.value.message == "not yours"


async def test_ok_finish_ends_a_client_that_has_not_half_closed_cleanly() -> None:
    """``finish()`` with OK is a clean end of the call: the client, still able to send, must
    see ``EndOfChannel`` after the last message, not a broken stream."""
    with trio.fail_after(10):
        async with serving() as bridge, call(bridge) as (client, server):
            messages = numbered(0, 3)
            await server.send_batch(messages)
            server.finish()
            got: list[bytes] = []
            with pytest.raises(trio.EndOfChannel):
                await receive_into(client, got)
            assert got == messages


async def test_a_failing_acceptor_refuses_that_call_with_internal_and_keeps_serving() -> None:
    def picky(
        outbox: trio.MemorySendChannel[ServerStream],
    ) -> Callable[[ServerStream], None]:
        def acceptor(stream: ServerStream) -> None:
            if stream.metadata.get("x-fail"):
                raise RuntimeError("admission exploded")
            stream.accept()
            outbox.send_nowait(stream)

        return acceptor

    with trio.fail_after(10):
        async with serving(acceptor=picky) as bridge:
            with pytest.raises(RemoteStatusError) as caught:
                async with bridge.channel.open_stream(METHOD, {"x-fail": "1"}):
                    pytest.fail("a refused call was opened")
            assert caught.value.code is StatusCode.INTERNAL
            assert "RuntimeError" in caught.value.message
            assert len(bridge.accept_errors) == 1
            refused, error = bridge.accept_errors[0]
            assert refused.metadata.get("x-fail") == "1"
            assert isinstance(error, RuntimeError)

            async with call(bridge) as (client, server):
                await client.send_batch([b"ping"])
                assert await receive_exactly(server, 1) == [b"ping"]
                await server.send(b"pong")
                assert await receive_exactly(client, 1) == [b"pong"]
            assert len(bridge.accept_errors) == 1


async def test_more_concurrent_streams_than_the_h2_default_when_configured() -> None:
    streams = 130  # h2's default MAX_CONCURRENT_STREAMS is 100
    with trio.fail_after(10):
        async with serving(limits=BoundaryLimits(max_streams_per_connection=200)) as bridge:
            async with call(bridge) as (client, server):  # the connection exists first
                await client.send(b"hello")
                assert await receive_exactly(server, 1) == [b"hello"]
            opened = 0
            all_open = trio.Event()
            release = trio.Event()

            async def one() -> None:
                nonlocal opened
                async with bridge.channel.open_stream(METHOD, {}):
                    opened += 1
                    if opened == streams:
                        all_open.set()
                    await release.wait()

            async with trio.open_nursery() as nursery:
                for _ in range(streams):
                    nursery.start_soon(one)
                await all_open.wait()
                release.set()
            assert opened == streams


async def test_a_stale_unix_socket_is_replaced(tmp_path_factory: pytest.TempPathFactory) -> None:
    path = tmp_path_factory.mktemp("stale") / "s.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stale:
        stale.bind(str(path))  # left behind by a server that died
    assert stat.S_ISSOCK(path.stat().st_mode)
    with trio.fail_after(10):
        async with (
            serving(Endpoint(unix_path=str(path))) as bridge,
            call(bridge) as (client, server),
        ):
            await client.send(b"over unix")
            assert await receive_exactly(server, 1) == [b"over unix"]


async def test_the_loop_synchronizes_only_when_callbacks_are_queued() -> None:
    """trio-asyncio's I/O task awaits ``synchronize()`` after each socket callback; the bridge
    makes that free when nothing is queued, and it still runs what is queued otherwise (the
    private queue used is trio-asyncio 0.16's)."""
    import trio_asyncio

    async with open_grpc_loop():
        loop = trio_asyncio.current_loop.get()
        ran: list[str] = []
        loop.call_soon(ran.append, "queued")
        await loop.synchronize()
        assert ran == ["queued"]  # waited for the queued callback
        with trio.testing.assert_no_checkpoints():
            await loop.synchronize()  # nothing queued: returns at once
