"""Integration: hostile peers against a real hub process, measured from outside.

Scope: ``bobravoz hub`` started as a process (``procs.open_cluster``) and attacked over
loopback TCP with bare sockets and bare ``h2`` clients: running out of file descriptors,
thousands of idle connections, rounds of HEADERS+RST_STREAM floods, a message declared
200 MiB, a peer that floods control frames and never reads. Each case checks the hub's
answer, its ``bobravoz_boundary_refusals_total`` count, that it keeps serving a well-behaved
producer and consumer, and its resident memory (VmRSS from /proc, printed; run with ``-s``).
Other processes announce nothing, so their metrics and /proc are polled (bounded waits).
"""

from __future__ import annotations

import contextlib
import resource
import struct
from collections.abc import AsyncIterator
from pathlib import Path

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import hyperframe.frame
import pytest
import trio
from procs import CLI, POLL_INTERVAL, Cluster, Proc, metric, open_cluster, scrape

from bobravoz.protocol.constants import PROCESS_METHOD
from bobravoz.protocol.gen.transport.v1 import BinaryFrame, DataPacket, ProcessRequest
from bobravoz.protocol.packets import split_process_message
from bobravoz.runtime.endpoints import Endpoint, parse_endpoint
from bobravoz.runtime.grpc_bridge import open_grpc_channel, open_grpc_loop
from bobravoz.runtime.handshake import BindingIdentity

pytestmark = pytest.mark.integration

STORY = """
apiVersion: bubustack.io/v1alpha1
kind: Story
metadata: {name: hostile, namespace: default}
spec:
  pattern: realtime
  steps:
    - {name: producer, ref: {name: source}}
    - {name: consumer, ref: {name: sink}, needs: [producer]}
"""
MIB = 1024 * 1024
REFUSALS = "bobravoz_boundary_refusals_total"


def who(storyrun: str, step: str) -> BindingIdentity:
    return BindingIdentity(storyrun=storyrun, namespace="default", step=step, generation=1)


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


def endpoint_of(hub: Proc) -> Endpoint:
    return parse_endpoint(hub.find("ready")["listen"])  # type: ignore[index]


async def refusals(hub: Proc, reason: str) -> float:
    """The hub's refusal count for ``reason`` (0 while its metrics server cannot answer: a hub
    out of file descriptors accepts nothing for a moment)."""
    address = hub.find("ready")["metrics"]  # type: ignore[index]
    try:
        samples = await trio.to_thread.run_sync(scrape, address)
    except OSError:
        return 0.0
    return metric(samples, REFUSALS, reason=reason)


async def wait_refusals(hub: Proc, reason: str, at_least: float, limit: float = 20.0) -> float:
    with trio.fail_after(limit):
        while True:
            count = await refusals(hub, reason)
            if count >= at_least:
                return count
            await trio.sleep(POLL_INTERVAL)


async def start_hub(cluster: Cluster, tmp_path: Path, env: dict[str, str] | None = None) -> Proc:
    story = tmp_path / "story.yaml"
    story.write_text(STORY)
    return await cluster.hub(story, env)


async def roundtrip(hub: Proc, storyrun: str, count: int = 20) -> None:
    """A producer sends ``count`` packets and a consumer receives every one (the hub serves)."""
    with trio.fail_after(20):
        async with (
            open_grpc_loop(),
            open_grpc_channel(endpoint_of(hub)) as channel,
            channel.open_stream(PROCESS_METHOD, who(storyrun, "consumer").headers()) as consumer,
            channel.open_stream(PROCESS_METHOD, who(storyrun, "producer").headers()) as producer,
        ):
            sent = [f"{storyrun}-{i}".encode() for i in range(count)]
            await producer.send_batch(
                [
                    bytes(ProcessRequest(packet=DataPacket(binary=BinaryFrame(payload=p))))
                    for p in sent
                ]
            )
            received: list[bytes] = []
            while len(received) < count:
                for message in await consumer.receive_batch():
                    found, _flow = split_process_message(message)
                    assert found is not None
                    received.append(DataPacket.parse(found).binary.payload)
            assert received == sent


async def connect(endpoint: Endpoint) -> trio.SocketStream:
    """A TCP connection to ``endpoint`` (a numeric address: no resolver thread per call)."""
    sock = trio.socket.socket()
    try:
        await sock.connect((endpoint.host, endpoint.port))
    except BaseException:
        sock.close()
        raise
    return trio.SocketStream(sock)


async def read_until_closed(sock: trio.SocketStream, limit: float = 20.0) -> bytes:
    received = b""
    with trio.fail_after(limit):
        while True:
            try:
                chunk = await sock.receive_some(65536)
            except trio.BrokenResourceError:
                return received
            if not chunk:
                return received
            received += chunk


def goaway_of(data: bytes) -> hyperframe.frame.GoAwayFrame:
    found = None
    while len(data) >= 9:
        frame, length = hyperframe.frame.Frame.parse_frame_header(memoryview(data[:9]))
        frame.parse_body(memoryview(data[9 : 9 + length]))
        if isinstance(frame, hyperframe.frame.GoAwayFrame):
            found = frame
        data = data[9 + length :]
    assert found is not None, "no GOAWAY"
    return found


@contextlib.asynccontextmanager
async def h2_client(
    endpoint: Endpoint,
) -> AsyncIterator[tuple[trio.SocketStream, h2.connection.H2Connection]]:
    sock = await connect(endpoint)
    connection = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    connection.initiate_connection()
    async with sock:
        await sock.send_all(connection.data_to_send())
        yield sock, connection


def request_headers(endpoint: Endpoint, identity: BindingIdentity) -> list[tuple[str, str]]:
    return [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", PROCESS_METHOD),
        (":authority", f"{endpoint.host}:{endpoint.port}"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
        *identity.headers().items(),
    ]


# -- file descriptors and connections --------------------------------------------------------


async def test_connections_past_the_bound_are_refused_below_the_open_files_limit(
    tmp_path: Path,
) -> None:
    """With ``ulimit -n 256`` the hub holds at most 192 connections (an eighth and at least
    64 descriptors stay spare): of the 335 the issue measured, 192 get in and 143 are refused
    with GOAWAY at once; the hub never exits, and serves again once connections go."""
    story = tmp_path / "story.yaml"
    story.write_text(STORY)
    command = " ".join(
        [*CLI, "hub", "--listen", "127.0.0.1:0", "--story", str(story), "--metrics", "127.0.0.1:0"]
    )
    async with open_cluster(tmp_path) as cluster:
        # No first-request timeout frees a slot while the 335 connect (a loaded machine).
        hub = await cluster.start(
            "hub",
            ["sh", "-c", f"ulimit -n 256 && exec {command}"],
            {"BOBRAVOZ_HUB_HANDSHAKE_TIMEOUT": "5m"},
        )
        endpoint = endpoint_of(hub)
        before = rss_mib(hub.process.pid)
        async with contextlib.AsyncExitStack() as stack:
            socks = [await stack.enter_async_context(await connect(endpoint)) for _ in range(335)]
            assert await wait_refusals(hub, "max_connections", 143) == 143
            held = socks[:192]
            for sock in socks[192:]:
                goaway = goaway_of(await read_until_closed(sock))
                assert goaway.additional_data == b"the server holds 192 connections, its limit"
        assert hub.process.returncode is None
        assert len(held) == 192
        await roundtrip(hub, "after-335")
        after = rss_mib(hub.process.pid)
        print(f"\nhub RSS, 335 connections at ulimit -n 256: {before:.1f} -> {after:.1f} MiB")


async def test_accept_running_out_of_files_is_survived(tmp_path: Path) -> None:
    """The open-files limit lowered under a running hub (below its connection bound): accept()
    fails with EMFILE. The hub counts it, waits, and serves again once descriptors free up
    (before, trio-asyncio re-raised asyncio's report and the hub exited with status 1)."""
    async with open_cluster(tmp_path) as cluster:
        hub = await start_hub(cluster, tmp_path, {"BOBRAVOZ_HUB_HANDSHAKE_TIMEOUT": "2s"})
        endpoint = endpoint_of(hub)
        resource.prlimit(hub.process.pid, resource.RLIMIT_NOFILE, (96, 96))
        async with contextlib.AsyncExitStack() as stack:
            for _ in range(150):
                await stack.enter_async_context(await connect(endpoint))
            await wait_refusals(hub, "out_of_files", 1)
            await wait_refusals(hub, "handshake_timeout", 150, limit=40)
        assert hub.process.returncode is None
        await roundtrip(hub, "after-emfile")


async def test_waves_of_idle_connections_are_closed_and_memory_stays_flat(
    tmp_path: Path,
) -> None:
    """Waves of 3,000 connections that never send a request: each is closed with GOAWAY at
    the first-request timeout. Python keeps the memory it once used (the high-water mark of
    the first waves), but once warm a wave adds nothing: no reference cycle per connection
    waits for the collector (the bridge takes its hooks off a lost connection)."""
    async with open_cluster(tmp_path) as cluster:
        # Every connection comes from 127.0.0.1: no separate bound per address here.
        env = {"BOBRAVOZ_HUB_HANDSHAKE_TIMEOUT": "3s", "BOBRAVOZ_HUB_MAX_CONNECTIONS_PER_PEER": "0"}
        hub = await start_hub(cluster, tmp_path, env)
        endpoint = endpoint_of(hub)
        pid = hub.process.pid
        rss = [rss_mib(pid)]
        for wave in (1, 2, 3):
            async with contextlib.AsyncExitStack() as stack:
                socks = [
                    await stack.enter_async_context(await connect(endpoint)) for _ in range(3000)
                ]
                rss.append(rss_mib(pid))
                await wait_refusals(hub, "handshake_timeout", 3000 * wave, limit=60)
                for sock in socks:  # every one was closed by the hub (GOAWAY, then EOF)
                    data = await read_until_closed(sock, 5)
                    assert goaway_of(data).additional_data == b"no request within 3 s of connecting"
            rss.append(rss_mib(pid))
        await roundtrip(hub, "after-idle")
        print(
            "\nhub RSS, 3 waves of 3,000 idle connections (start; open, closed per wave): "
            + ", ".join(f"{r:.1f}" for r in rss)
            + " MiB"
        )
        # After a warm-up wave (the allocator's high-water mark), later waves add little: a
        # leak of the size this guards against (tens of MiB per wave) fails the bound by the
        # third wave, while allocator noise under a busy machine (up to ~12 %) does not.
        assert max(rss[5:]) <= rss[2] * 1.20, rss


# -- floods --------------------------------------------------------------------------------------


async def reset_flood(
    endpoint: Endpoint, pairs: int
) -> tuple[int, h2.events.ConnectionTerminated | None]:
    """HEADERS+RST_STREAM pairs in writes of 500 until ``pairs`` or the hub's GOAWAY."""
    sent = 0
    goaway: h2.events.ConnectionTerminated | None = None
    async with h2_client(endpoint) as (sock, connection):
        headers = request_headers(endpoint, who("flood", "consumer"))

        reader_done = trio.Event()

        async def read() -> None:
            nonlocal goaway
            try:
                while True:
                    try:
                        data = await sock.receive_some(65536)
                    except trio.BrokenResourceError:
                        return
                    if not data:
                        return
                    with contextlib.suppress(h2.exceptions.ProtocolError):
                        for event in connection.receive_data(data):
                            if isinstance(event, h2.events.ConnectionTerminated):
                                goaway = event
            finally:
                reader_done.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read)
            with contextlib.suppress(trio.BrokenResourceError, h2.exceptions.ProtocolError):
                while sent < pairs and goaway is None:
                    for _ in range(500):
                        stream_id = connection.get_next_available_stream_id()
                        connection.send_headers(stream_id, headers)
                        connection.reset_stream(stream_id, h2.errors.ErrorCodes.CANCEL)
                        sent += 1
                    await sock.send_all(connection.data_to_send())
            with trio.fail_after(10):
                await reader_done.wait()
            nursery.cancel_scope.cancel()
    return sent, goaway


async def test_rounds_of_rapid_resets_get_goaway_and_the_hub_rss_stays_flat(tmp_path: Path) -> None:
    """Rounds of up to 50,000 HEADERS+RST_STREAM pairs, each on a new connection, each cut
    short by GOAWAY(ENHANCE_YOUR_CALM) at the reset budget. grpclib forgets closed
    connections' handlers every tenth connection (each round opens two: the flood and a
    roundtrip), so the RSS settles within five rounds and stays flat after."""
    rounds = 16
    warm = 6
    async with open_cluster(tmp_path) as cluster:
        hub = await start_hub(cluster, tmp_path)
        endpoint = endpoint_of(hub)
        pid = hub.process.pid
        rss = [rss_mib(pid)]
        for round_ in range(rounds):
            sent, goaway = await reset_flood(endpoint, 50_000)
            assert goaway is not None, f"no GOAWAY after {sent} pairs"
            assert goaway.error_code == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
            await wait_refusals(hub, "rapid_reset", round_ + 1)
            await roundtrip(hub, f"between-{round_}", 5)
            rss.append(rss_mib(pid))
        print(
            f"\nhub RSS over {rounds} rounds of up to 50,000 HEADERS+RST pairs: "
            + ", ".join(f"{r:.1f}" for r in rss)
            + " MiB"
        )
        assert max(rss[warm:]) <= rss[warm] * 1.05, rss


async def test_a_message_declared_200_mib_is_refused_without_being_buffered(tmp_path: Path) -> None:
    async with open_cluster(tmp_path) as cluster:
        hub = await start_hub(cluster, tmp_path)
        endpoint = endpoint_of(hub)
        pid = hub.process.pid
        await roundtrip(hub, "warm")
        before = rss_mib(pid)
        peak = before
        status: dict[str, str] = {}
        async with h2_client(endpoint) as (sock, connection):
            stream_id = connection.get_next_available_stream_id()
            connection.send_headers(stream_id, request_headers(endpoint, who("big", "producer")))
            connection.send_data(stream_id, struct.pack(">?I", False, 200 * MIB))
            await sock.send_all(connection.data_to_send())
            sent = 0
            chunk = bytes(16 * 1024)
            with trio.fail_after(30):
                while not status:
                    with contextlib.suppress(h2.exceptions.H2Error):
                        while sent < 8 * MIB and connection.local_flow_control_window(
                            stream_id
                        ) >= len(chunk):
                            connection.send_data(stream_id, chunk)
                            sent += len(chunk)
                    with contextlib.suppress(trio.BrokenResourceError):
                        await sock.send_all(connection.data_to_send())
                    data = await sock.receive_some(65536)
                    assert data, "the hub closed the connection"
                    for event in connection.receive_data(data):
                        if isinstance(event, h2.events.DataReceived):
                            connection.acknowledge_received_data(
                                event.flow_controlled_length, event.stream_id
                            )
                        if isinstance(
                            event, h2.events.ResponseReceived | h2.events.TrailersReceived
                        ):
                            values = dict((k.decode(), v.decode()) for k, v in event.headers)
                            if "grpc-status" in values:
                                status = values
                    peak = max(peak, rss_mib(pid))
        assert status["grpc-status"] == "8"  # RESOURCE_EXHAUSTED
        assert "209715200-byte message" in status["grpc-message"]
        assert "10485760-byte limit" in status["grpc-message"]
        assert await wait_refusals(hub, "max_recv_bytes", 1) == 1
        await roundtrip(hub, "after-big")
        print(
            f"\nhub RSS, a 200 MiB-declared message ({sent / MIB:.0f} MiB of it sent): "
            f"{before:.1f} -> peak {peak:.1f} MiB"
        )
        assert peak - before < 16
