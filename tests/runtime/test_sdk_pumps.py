"""The engram SDK's Data pumps against a real in-process gRPC server.

Scope: :func:`bobravoz.sdk.engram._pump_out`, :func:`~bobravoz.sdk.engram._pump_in`,
:func:`~bobravoz.sdk.engram._settle_data` and (for one connection's failure path)
:func:`~bobravoz.sdk.engram._run_pumps`, with the state they share across connections
(:class:`~bobravoz.sdk.engram._Session`: the handler's inbox channel, its outbox with
``unsent``, ``received``). The connector is played by a tiny acceptor on ``serve_grpc`` (Data
and Control methods) over loopback TCP (port 0) inside :func:`open_grpc_loop`; each test drives
it by hand.

Covered: ``_pump_out`` cancelled while the Data stream's bridge is full (flow control) sends
nothing twice and loses nothing across a reconnect; ``_pump_in`` cancelled while the
handler's inbox is full keeps what it received and delivers it first on the next run; packets
still in the Data stream's bridge when the connector ends the call reach the handler after the
reconnect; the data heartbeat (the ``uncounted`` marker) is never counted in ``written`` nor
put back into ``unsent``; packets emitted before and during a connection keep their order, an
``emit`` cancelled while it waits for room takes nothing, and the read callback that hands
arrivals to the inbox keeps order and loses nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import trio
import trio.testing

from bobravoz.protocol.constants import CONTROL_METHOD, DATA_METHOD, HEARTBEAT_KEY
from bobravoz.protocol.gen.transport.v1 import BinaryFrame, DataRequest, DataResponse
from bobravoz.runtime.endpoints import Endpoint
from bobravoz.runtime.groups import lone_exception
from bobravoz.runtime.grpc_bridge import (
    ClientStream,
    GrpcChannel,
    GrpcServer,
    ServerStream,
    open_grpc_channel,
    open_grpc_loop,
    serve_grpc,
)
from bobravoz.runtime.handshake import PROTOCOL_HEADER, PROTOCOL_VERSION
from bobravoz.runtime.status import StatusCode
from bobravoz.sdk.engram import (
    EngramSettings,
    _pump_in,
    _pump_out,
    _run_pumps,
    _Session,
    _settle_data,
)
from bobravoz.sdk.losses import UNHANDLED, UNSENT
from bobravoz.sdk.packet import Packet, encode_packet

PROTOCOL = {PROTOCOL_HEADER: PROTOCOL_VERSION}
#: Packet payload size: big enough that HTTP/2 flow control (4 MiB windows) stalls a writer
#: whose peer does not read after about a thousand packets.
PAYLOAD = 8 * 1024


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class FakeConnector:
    """The connector's side: every accepted stream arrives on ``streams``, by method."""

    endpoint: Endpoint
    channel: GrpcChannel
    streams: dict[str, trio.MemoryReceiveChannel[ServerStream]]

    @contextlib.asynccontextmanager
    async def open(self, method: str) -> AsyncIterator[tuple[ClientStream, ServerStream]]:
        """A call as the SDK opens it: (engram end, connector end)."""
        async with self.channel.open_stream(method, PROTOCOL) as client:
            yield client, await self.streams[method].receive()

    def data_stream(
        self,
    ) -> contextlib.AbstractAsyncContextManager[tuple[ClientStream, ServerStream]]:
        return self.open(DATA_METHOD)


async def start_connector_server(
    nursery: trio.Nursery,
) -> tuple[GrpcServer, dict[str, trio.MemoryReceiveChannel[ServerStream]]]:
    """A server for the Data and Control methods in ``nursery`` (inside a gRPC loop): every
    stream it accepts arrives on the channel of its method."""
    methods = (DATA_METHOD, CONTROL_METHOD)
    channels = {method: trio.open_memory_channel[ServerStream](math.inf) for method in methods}

    def acceptor(stream: ServerStream) -> None:
        stream.accept()
        channels[stream.method][0].send_nowait(stream)

    server: GrpcServer = await nursery.start(
        serve_grpc, Endpoint(host="127.0.0.1", port=0), methods, acceptor
    )
    return server, {method: receiving for method, (_, receiving) in channels.items()}


@contextlib.asynccontextmanager
async def fake_connector() -> AsyncIterator[FakeConnector]:
    async with open_grpc_loop(), trio.open_nursery() as nursery:
        server, streams = await start_connector_server(nursery)
        async with open_grpc_channel(server.endpoint) as channel:
            yield FakeConnector(server.endpoint, channel, streams)
        nursery.cancel_scope.cancel()


def session_for(connector: FakeConnector, **settings: Any) -> _Session:
    return _Session(EngramSettings(connector=connector.endpoint, **settings))


def packet(index: int, size: int = PAYLOAD) -> Packet:
    return Packet(binary=index.to_bytes(4, "big") + bytes(size), metadata={"seq": str(index)})


def response(index: int) -> bytes:
    """What the connector sends the engram (``DataResponse`` bytes)."""
    return bytes(DataResponse(binary=BinaryFrame(payload=b"p"), metadata={"seq": str(index)}))


def heartbeat_response() -> bytes:
    return bytes(DataResponse(metadata={HEARTBEAT_KEY: "true"}))


def seq(packet: Packet) -> int:
    return int(packet.metadata["seq"])


async def receive_all(stream: ServerStream | ClientStream) -> list[bytes]:
    got: list[bytes] = []
    while True:
        try:
            got.extend(await stream.receive_batch())
        except trio.EndOfChannel:
            return got


async def wait_until(predicate: Callable[[], bool]) -> None:
    """Wait for an observable condition, re-checking each time everything is idle."""
    while not predicate():
        await trio.testing.wait_all_tasks_blocked()


class Task:
    """A pump in a task of its own that the test can cancel."""

    def __init__(self) -> None:
        self.scope = trio.CancelScope()
        self.returned = trio.Event()

    async def run(self, pump: Callable[..., Awaitable[object]], *args: object) -> None:
        with self.scope:
            await pump(*args)
            self.returned.set()


# --------------------------------------------------------------------------------------------
# (a) _pump_out cancelled while the bridge is full
# --------------------------------------------------------------------------------------------


async def test_pump_out_cancelled_with_a_full_bridge_sends_each_packet_once_after_reconnect() -> (
    None
):
    emitted = [packet(index) for index in range(2500)]
    encoded = [encode_packet(item) for item in emitted]
    with trio.fail_after(30):
        async with fake_connector() as connector, trio.open_nursery() as nursery:
            session = session_for(connector, data_heartbeat=3600.0)

            async def handler() -> None:
                for item in emitted:
                    await session.outbox.send(item)
                session.outbox.close()

            nursery.start_soon(handler)
            async with connector.data_stream() as (data, server):
                pump = Task()
                nursery.start_soon(pump.run, _pump_out, data, session)
                # The connector does not read: flow control stops the bridge's writer, the
                # bridge's pipe fills, and _pump_out waits to queue its next batch.
                await trio.testing.wait_all_tasks_blocked()
                assert data.outbound_depth() > 0
                assert session.unsent, "the pump should hold a batch it could not queue"
                waiting = list(session.unsent)
                pump.scope.cancel()
                await trio.testing.wait_all_tasks_blocked()
                assert not pump.returned.is_set()
                assert list(session.unsent) == waiting  # cancelled: nothing taken, nothing lost
                backlog = data.outbound_depth()
                _settle_data(data, session)  # the stream is over for the SDK
                assert data.outbound_depth() == 0
                assert len(session.unsent) == backlog + len(waiting)
                # The connector now reads what the first stream did send (the write that was
                # in flight completes; the halted stream then half-closes).
                first = await receive_all(server)
            assert first == encoded[: len(first)]
            assert data.written == len(first)
            assert list(session.unsent) == encoded[len(first) : len(first) + len(session.unsent)]

            # Reconnect: the same session's pump on a second stream, with a reading connector.
            async with connector.data_stream() as (data, server):
                second: list[bytes] = []

                async def connector_reads() -> None:
                    second.extend(await receive_all(server))

                nursery.start_soon(connector_reads)
                await _pump_out(data, session)  # returns once the handler's output is queued
                assert not session.unsent
                data.close_send()
                await wait_until(lambda: len(first) + len(second) >= len(encoded))
                await trio.testing.wait_all_tasks_blocked()
            assert data.written == len(second)
    assert first + second == encoded  # each packet exactly once, in order


# --------------------------------------------------------------------------------------------
# (b) _pump_in cancelled while the handler's inbox is full
# --------------------------------------------------------------------------------------------


async def test_pump_in_cancelled_with_a_full_inbox_keeps_what_it_received_for_the_next_run() -> (
    None
):
    buffer = 4
    first_batch = [response(index) for index in range(40)]
    second_batch = [response(index) for index in range(40, 50)]
    with trio.fail_after(20):
        async with fake_connector() as connector, trio.open_nursery() as nursery:
            session = session_for(connector, channel_buffer=buffer)
            async with connector.data_stream() as (data, server):
                await server.send_batch(first_batch)
                server.finish()
                await trio.testing.wait_all_tasks_blocked()  # all of it reached the engram
                pump = Task()
                nursery.start_soon(pump.run, _pump_in, data, session)
                # The handler does not read: its inbox fills, the rest waits in `received`.
                await wait_until(lambda: len(session.received) == len(first_batch) - buffer)
                await trio.testing.wait_all_tasks_blocked()
                assert session.inbox_send.statistics().current_buffer_used == buffer
                assert not pump.returned.is_set()
                pump.scope.cancel()
            await trio.testing.wait_all_tasks_blocked()
            assert pump.scope.cancelled_caught
            # Nothing taken from the stream was dropped by the cancellation.
            assert [seq(item) for item in session.received] == list(range(buffer, 40))
            assert session.inbox_send.statistics().current_buffer_used == buffer

            # The next connection: the handler reads again; what was received comes first.
            handled: list[Packet] = []

            async def handler() -> None:
                async for item in session.context().packets():
                    handled.append(item)

            nursery.start_soon(handler)
            async with connector.data_stream() as (data, server):
                await server.send_batch([second_batch[0], heartbeat_response(), *second_batch[1:]])
                server.finish()
                await _pump_in(data, session)  # returns at the end of the stream
            await wait_until(lambda: len(handled) >= 50)
            await trio.testing.wait_all_tasks_blocked()
            session.inbox_send.close()
    assert [seq(item) for item in handled] == list(range(50))  # no loss, no duplicate
    assert not any(item.is_heartbeat for item in handled)
    assert not session.received


async def test_packets_still_in_the_bridge_when_the_connector_ends_the_call_are_not_lost() -> None:
    """The path ``_run_connection`` takes: the handler is slow (its inbox is full) and more
    packets than one ``receive_batch`` arrived, so some still wait in the Data stream's bridge
    when the connector ends the call (e.g. it is restarting). ``_pump_out`` notices at its
    next heartbeat, ``_run_pumps`` fails, ``_settle_data`` runs and the stream is dropped.
    The connector wrote those packets (it will not send them again), so the engram must
    still hand every one of them to the handler, in order, after it reconnects."""
    buffer = 4
    first_batch = [response(index) for index in range(300)]  # more than DEFAULT_BATCH (256)
    second_batch = [response(index) for index in range(300, 310)]
    with trio.fail_after(20):
        async with fake_connector() as connector, trio.open_nursery() as nursery:
            session = session_for(
                connector, channel_buffer=buffer, data_heartbeat=0.05, control_heartbeat=3600.0
            )
            failures: list[BaseException] = []
            ended = trio.Event()
            async with (
                connector.open(CONTROL_METHOD) as (control, _control_end),
                connector.data_stream() as (data, server),
            ):
                await server.send_batch(first_batch)
                await trio.testing.wait_all_tasks_blocked()  # all of it reached the engram

                async def pumps() -> None:
                    try:
                        await _run_pumps(data, control, session)
                    except Exception as error:  # noqa: BLE001 - examined below
                        failures.append(lone_exception(error))
                    finally:
                        ended.set()

                nursery.start_soon(pumps)
                await wait_until(lambda: len(session.received) > 0)
                await trio.testing.wait_all_tasks_blocked()
                assert session.inbox_send.statistics().current_buffer_used == buffer
                taken = buffer + len(session.received)
                assert taken < len(first_batch)  # the rest is still in the bridge
                server.finish(StatusCode.UNAVAILABLE, "the connector is restarting")
                await ended.wait()
                _settle_data(data, session)  # as _run_connection does before dropping it
            assert len(failures) == 1
            assert isinstance(failures[0], trio.BrokenResourceError)

            # The next connection; the handler reads again.
            handled: list[Packet] = []

            async def handler() -> None:
                async for item in session.context().packets():
                    handled.append(item)

            nursery.start_soon(handler)
            async with connector.data_stream() as (data, server):
                await server.send_batch(second_batch)
                server.finish()
                await _pump_in(data, session)
            await trio.testing.wait_all_tasks_blocked()
            session.inbox_send.close()
    got = [seq(item) for item in handled]
    missing = sorted(set(range(310)) - set(got))
    assert got == list(range(310)), (
        f"{len(missing)} packets the connector wrote never reached the handler: "
        f"{missing[:3]}...{missing[-3:]}"
    )


# --------------------------------------------------------------------------------------------
# (c) the data heartbeat is not counted
# --------------------------------------------------------------------------------------------


async def test_data_heartbeats_are_not_counted_in_written() -> None:
    heartbeats_wanted = 3
    emitted = [packet(index, 64) for index in range(5)]
    encoded = [encode_packet(item) for item in emitted]
    with trio.fail_after(20):
        async with fake_connector() as connector, trio.open_nursery() as nursery:
            session = session_for(connector, data_heartbeat=0.02)
            async with connector.data_stream() as (data, server):
                got: list[bytes] = []
                beats = trio.Event()

                def is_heartbeat(raw: bytes) -> bool:
                    return DataRequest.parse(raw).metadata.get(HEARTBEAT_KEY) == "true"

                async def connector_reads() -> None:
                    while True:
                        try:
                            got.extend(await server.receive_batch())
                        except trio.EndOfChannel:
                            return
                        if sum(map(is_heartbeat, got)) >= heartbeats_wanted:
                            beats.set()

                nursery.start_soon(connector_reads)
                pump = Task()
                nursery.start_soon(pump.run, _pump_out, data, session)
                await beats.wait()  # idle: only heartbeats so far
                assert data.written == 0
                assert data.written_bytes == 0
                for item in emitted:
                    await session.outbox.send(item)
                session.outbox.close()
                await pump.returned.wait()
                data.close_send()
                await wait_until(lambda: len([raw for raw in got if not is_heartbeat(raw)]) == 5)
                await trio.testing.wait_all_tasks_blocked()
            heartbeats = [raw for raw in got if is_heartbeat(raw)]
            assert len(heartbeats) >= heartbeats_wanted
            assert [raw for raw in got if not is_heartbeat(raw)] == encoded
            # Only the packets count, however many heartbeats went out.
            assert data.written == len(encoded)
            assert data.written_bytes == sum(map(len, encoded))


async def test_settling_a_stream_puts_its_packets_back_but_never_the_heartbeat() -> None:
    with trio.fail_after(20):
        async with fake_connector() as connector:
            session = session_for(connector)
            older = encode_packet(packet(9, 8))
            session.unsent.append(older)
            first, second = encode_packet(packet(1, 8)), encode_packet(packet(2, 8))
            heartbeat = encode_packet(Packet(metadata={HEARTBEAT_KEY: "true"}))
            async with connector.data_stream() as (data, _server):
                data.uncounted = heartbeat
                # Queued and settled before the bridge's writer runs: nothing was written.
                for message in (heartbeat, first, heartbeat, second):
                    data.send_nowait(message)
                _settle_data(data, session)
                assert data.outbound_depth() == 0
            assert data.written == 0
    assert list(session.unsent) == [first, second, older]


# --------------------------------------------------------------------------------------------
# (e) the handler starts once the transport is ready
# --------------------------------------------------------------------------------------------


async def test_the_handler_starts_only_once_the_first_connection_is_ready() -> None:
    """A source's first packets must not age in the SDK while the engram connects: the
    handler runs after the connector said ready and the Data stream is open."""
    from bobravoz.protocol.gen.transport.v1 import ControlAction, ControlResponse
    from bobravoz.sdk.engram import StreamContext, serve_engram

    started: list[float] = []

    async def handler(stream: StreamContext) -> None:
        started.append(trio.current_time())
        await stream.emit(packet(0))

    with trio.fail_after(30):
        async with fake_connector() as connector, trio.open_nursery() as nursery:
            settings = EngramSettings(connector=connector.endpoint, message_timeout=20.0)
            nursery.start_soon(serve_engram, handler, settings)
            control = await connector.streams[CONTROL_METHOD].receive()
            await trio.testing.wait_all_tasks_blocked()
            assert started == []  # connected, not ready: the handler waits
            ready = ControlResponse(action=ControlAction.CONNECTOR_READY)
            await control.send(bytes(ready))
            data = await connector.streams[DATA_METHOD].receive()
            got = await data.receive_batch()
            assert len(started) == 1
            assert got == [encode_packet(packet(0))]
            nursery.cancel_scope.cancel()


async def test_an_engram_stopped_with_packets_unsent_reports_each_one_lost(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The connector goes away after the first packet; what the handler emits while the
    engram tries to reconnect waits unsent, and when the engram is stopped it reports each of
    those packets lost as ``unsent``: with what the connector got, every packet emitted."""
    from bobravoz.protocol.gen.transport.v1 import ControlAction, ControlResponse
    from bobravoz.sdk.engram import StreamContext, serve_engram

    emitted = 0
    connector_gone = trio.Event()

    async def handler(stream: StreamContext) -> None:
        nonlocal emitted
        await stream.emit(packet(0, 16))
        emitted += 1
        await connector_gone.wait()
        for index in range(1, 6):
            await stream.emit(packet(index, 16))
            emitted += 1
        await trio.sleep_forever()

    with trio.fail_after(30):
        async with open_grpc_loop(), trio.open_nursery() as engram:
            async with trio.open_nursery() as connector:
                server, streams = await start_connector_server(connector)
                settings = EngramSettings(
                    connector=server.endpoint, message_timeout=20.0, channel_buffer=16
                )
                engram.start_soon(serve_engram, handler, settings)
                control = await streams[CONTROL_METHOD].receive()
                await control.send(bytes(ControlResponse(action=ControlAction.CONNECTOR_READY)))
                data = await streams[DATA_METHOD].receive()
                got = await data.receive_batch()
                connector.cancel_scope.cancel()  # the connector goes away
            connector_gone.set()
            await wait_until(lambda: emitted == 6)
            engram.cancel_scope.cancel()
    assert got == [encode_packet(packet(0, 16))]
    report = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line]
    (losses,) = [line for line in report if line["event"] == "losses"]
    assert losses["reasons"] == {UNSENT: 5}
    assert losses["lost"] + len(got) == emitted


async def test_a_connection_breaking_while_the_engram_is_stopped_is_not_a_failure(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Everything stopped at once (``bobravoz up --duration``, a node drain): the engram's
    connection breaks while it is being cancelled. Seen with real processes as an exception
    group escaping ``trio.run`` and a traceback; here the connection is played by a stand-in
    that breaks exactly then. Stopping wins (logged); the same error while not stopping is
    still raised."""
    import bobravoz.sdk.engram as engram_module
    from bobravoz.sdk.engram import StreamContext, serve_engram

    async def breaks_when_cancelled(session: _Session) -> None:
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            raise trio.BrokenResourceError("receive: the peer went away") from None

    async def handler(stream: StreamContext) -> None:
        await trio.sleep_forever()

    monkeypatch.setattr(engram_module, "_connect_forever", breaks_when_cancelled)
    caplog.set_level(logging.INFO, logger="bobravoz.sdk.engram")
    settings = EngramSettings(connector=Endpoint(host="127.0.0.1", port=1))
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve_engram, handler, settings)
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
    assert "the connection ended while the engram was stopping" in caplog.text

    async def breaks(session: _Session) -> None:
        raise trio.BrokenResourceError("receive: the peer went away")

    monkeypatch.setattr(engram_module, "_connect_forever", breaks)
    with pytest.raises(BaseExceptionGroup) as caught:
        await serve_engram(handler, settings)
    assert isinstance(lone_exception(caught.value), trio.BrokenResourceError)


async def ready_data_stream(
    streams: dict[str, trio.MemoryReceiveChannel[ServerStream]],
) -> ServerStream:
    """As the connector: say ``CONNECTOR_READY`` on the engram's Control stream, then take
    its Data stream."""
    from bobravoz.protocol.gen.transport.v1 import ControlAction, ControlResponse

    control = await streams[CONTROL_METHOD].receive()
    await control.send(bytes(ControlResponse(action=ControlAction.CONNECTOR_READY)))
    return await streams[DATA_METHOD].receive()


def losses_reported(capsys: pytest.CaptureFixture[str]) -> dict[str, int]:
    """The reasons of the one ``losses`` line the engram printed."""
    report = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line]
    (losses,) = [line for line in report if line["event"] == "losses"]
    return dict(losses["reasons"])


async def _connector_until_stop(
    streams: dict[str, trio.MemoryReceiveChannel[ServerStream]],
    stop: trio.Event,
    stop_after: int,
) -> list[bytes]:
    """Play the connector of a graceful stop: say ready, take the Data stream, set ``stop``
    once ``stop_after`` packets arrived, and end the call when the engram half-closes;
    everything it got, in order."""
    data = await ready_data_stream(streams)
    got: list[bytes] = []
    while True:
        try:
            got.extend(await data.receive_batch())
        except trio.EndOfChannel:
            break  # the engram half-closed: its handler's output is all written
        if len(got) >= stop_after:
            stop.set()
    data.finish()
    return got


@dataclasses.dataclass
class StoppableEngram:
    """An engram under test (``serve_engram`` with a ``stop`` event) and its connector side."""

    streams: dict[str, trio.MemoryReceiveChannel[ServerStream]]
    settings: EngramSettings
    stop: trio.Event
    returned: trio.Event


@contextlib.asynccontextmanager
async def stoppable_engram(handler: Any, **settings: Any) -> AsyncIterator[StoppableEngram]:
    """Serve ``handler`` against an in-process connector server (within 30 s in all);
    leaving the block waits until ``serve_engram`` has returned."""
    from bobravoz.sdk.engram import serve_engram

    with trio.fail_after(30):
        async with open_grpc_loop(), trio.open_nursery() as nursery:
            server, streams = await start_connector_server(nursery)
            engram = StoppableEngram(
                streams,
                EngramSettings(connector=server.endpoint, **settings),
                trio.Event(),
                trio.Event(),
            )

            async def serve() -> None:
                await serve_engram(handler, engram.settings, stop=engram.stop)
                engram.returned.set()

            nursery.start_soon(serve)
            yield engram
            await engram.returned.wait()
            nursery.cancel_scope.cancel()


async def test_a_stop_request_lets_a_source_end_its_stream_and_loses_nothing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """SIGTERM's first stage: the handler sees ``stop_requested``, stops producing, emits
    its end marker and returns; every packet it emitted, the marker last, reaches the
    connector, and the engram ends by itself (no losses line). Before, a stop cancelled the
    handler and everything at once: no marker, and what was queued was dropped."""
    from bobravoz.sdk.engram import StreamContext

    emitted: list[Packet] = []

    async def source(stream: StreamContext) -> None:
        index = 0
        while not stream.stop_requested:
            emitted.append(packet(index, 16))
            await stream.emit(emitted[-1])
            index += 1
            await trio.sleep(0.001)
        emitted.append(Packet(metadata={"seq": "end"}))
        await stream.emit(emitted[-1])

    async with stoppable_engram(source, message_timeout=20.0) as engram:
        got = await _connector_until_stop(engram.streams, engram.stop, stop_after=5)
    assert len(emitted) > 5
    assert got == [encode_packet(item) for item in emitted]
    assert "losses" not in capsys.readouterr().out


async def test_a_handler_that_ignores_the_stop_request_is_cancelled_after_the_grace() -> None:
    """A handler still running ``stop_grace`` after the request is cancelled; what it had
    emitted is written all the same and the engram ends: serve_engram returns."""
    from bobravoz.sdk.engram import StreamContext

    async def stubborn(stream: StreamContext) -> None:
        for index in range(8):
            await stream.emit(packet(index, 16))
        await trio.sleep_forever()

    async with stoppable_engram(stubborn, message_timeout=20.0, stop_grace=0.2) as engram:
        got = await _connector_until_stop(engram.streams, engram.stop, stop_after=8)
    assert got == [encode_packet(packet(index, 16)) for index in range(8)]


async def test_what_a_handler_cancelled_at_the_end_of_its_grace_never_took_is_counted(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A handler past its stop grace is cancelled by the SDK, not done by its own choice:
    the packets it had received and not yet taken are reported as ``unhandled``."""
    from bobravoz.sdk.engram import StreamContext

    taken: list[Packet] = []

    async def slow(stream: StreamContext) -> None:
        async with contextlib.aclosing(stream.packets()) as packets:
            async for item in packets:
                taken.append(item)
                await trio.sleep_forever()  # busy with the first one until cancelled

    async with stoppable_engram(slow, message_timeout=20.0, stop_grace=0.2) as engram:
        data = await ready_data_stream(engram.streams)
        await data.send_batch([response(index) for index in range(5)])
        await wait_until(lambda: len(taken) == 1)
        await trio.testing.wait_all_tasks_blocked()  # the other four wait in the inbox
        engram.stop.set()
        assert await receive_all(data) == []  # the engram half-closes, having sent nothing
        data.finish()
    assert losses_reported(capsys) == {UNHANDLED: 4}


async def test_an_engram_that_cannot_finish_writing_is_stopped_and_counts_what_it_held(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Past the grace and the message timeout (here the connector never reads), the engram
    stops anyway and reports what it never wrote as ``unsent``."""
    from bobravoz.sdk.engram import StreamContext

    emitted = 0

    async def source(stream: StreamContext) -> None:
        nonlocal emitted
        while not stream.stop_requested:
            await stream.emit(packet(emitted))  # 8 KiB: flow control stalls the writer
            emitted += 1

    async with stoppable_engram(source, message_timeout=0.5, stop_grace=0.2) as engram:
        await ready_data_stream(engram.streams)  # and never read
        await wait_until(lambda: emitted > engram.settings.channel_buffer)
        engram.stop.set()
    reasons = losses_reported(capsys)
    assert set(reasons) == {UNSENT}
    assert 0 < reasons[UNSENT] <= emitted


# --------------------------------------------------------------------------------------------
# (f) emit and the read callback
# --------------------------------------------------------------------------------------------


async def test_packets_emitted_before_and_during_a_connection_arrive_once_in_order() -> None:
    """Packets the handler emitted before the connection (waiting in ``unsent``) are sent
    first; the ones it emits while the pump runs follow, and the connector gets every one
    once, in order; only packets count in ``written``."""
    early = [packet(index, 16) for index in range(3)]
    late = [packet(index, 16) for index in range(3, 200)]
    encoded = [encode_packet(item) for item in early + late]
    with trio.fail_after(20):
        async with fake_connector() as connector, trio.open_nursery() as nursery:
            session = session_for(connector, channel_buffer=4, data_heartbeat=3600.0)
            for item in early:
                await session.outbox.send(item)  # no connection yet: they wait unsent
            assert len(session.unsent) == len(early)
            async with connector.data_stream() as (data, server):
                got: list[bytes] = []

                async def connector_reads() -> None:
                    got.extend(await receive_all(server))

                nursery.start_soon(connector_reads)
                pump = Task()
                nursery.start_soon(pump.run, _pump_out, data, session)
                for index, item in enumerate(late):
                    await session.outbox.send(item)
                    if index % 7 == 0:
                        await trio.lowlevel.checkpoint()  # the pump's turn now and then
                session.outbox.close()
                await pump.returned.wait()
                assert not session.unsent
                assert session.outbox.queued == len(encoded)
                data.close_send()
                await wait_until(lambda: len(got) >= len(encoded))
                await trio.testing.wait_all_tasks_blocked()
            assert data.written == len(encoded)
    assert got == encoded


async def test_emit_cancelled_while_waiting_for_room_takes_nothing() -> None:
    with trio.fail_after(20):
        async with fake_connector() as connector:
            session = session_for(connector, channel_buffer=2)
            first, second, third = (packet(index, 8) for index in range(3))
            await session.outbox.send(first)
            await session.outbox.send(second)  # no connection: unsent is now full
            with trio.move_on_after(0.05) as waiting:
                await session.outbox.send(third)
            assert waiting.cancelled_caught
    assert list(session.unsent) == [encode_packet(first), encode_packet(second)]


async def test_packets_arriving_while_the_pump_waits_reach_the_handler_in_order() -> None:
    """The read callback hands what arrives to the handler's inbox; once the inbox is full
    the rest waits in the bridge (and ``received``) for the pump. A handler that reads
    slowly, then fast, gets every packet once and in order, heartbeats left out."""
    buffer = 4
    total = 120
    with trio.fail_after(20):
        async with fake_connector() as connector, trio.open_nursery() as nursery:
            session = session_for(connector, channel_buffer=buffer)
            async with connector.data_stream() as (data, server):
                pump = Task()
                nursery.start_soon(pump.run, _pump_in, data, session)
                await trio.testing.wait_all_tasks_blocked()  # the pump waits, idle
                await server.send_batch([response(0), heartbeat_response(), response(1)])
                await wait_until(lambda: session.inbox_send.statistics().current_buffer_used == 2)
                assert not session.received
                assert data.inbound_depth() == 0
                # More than the inbox takes, in several writes, while the handler is away.
                for start in range(2, 60, 7):
                    await server.send_batch(
                        [response(index) for index in range(start, min(start + 7, 60))]
                    )
                    await trio.testing.wait_all_tasks_blocked()
                assert session.inbox_send.statistics().current_buffer_used == buffer
                handled: list[Packet] = []

                async def handler() -> None:
                    async for item in session.context().packets():
                        handled.append(item)
                        if len(handled) % 5 == 0:
                            await trio.lowlevel.checkpoint()  # a slow reader now and then

                nursery.start_soon(handler)
                for start in range(60, total, 3):
                    await server.send_batch(
                        [response(index) for index in range(start, min(start + 3, total))]
                    )
                server.finish()
                await pump.returned.wait()
                await wait_until(lambda: len(handled) >= total)
                session.inbox_send.close()
    assert [seq(item) for item in handled] == list(range(total))
    assert not session.received
