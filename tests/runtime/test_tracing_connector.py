"""The connector's two hops with tracing off and on.

Off (the default): packets move as bytes with only their top-level tags changed, a
``traceparent`` they carry included, and none is added. On: a packet carrying a sampled
``traceparent`` gets a ``connector.send`` (engram to hub) or ``connector.deliver`` (hub to
engram) span, the child of that traceparent, and goes on pointing at that span; everything
else in it is unchanged.

Engram to hub runs over a real in-process Data stream (``ConnectorService`` served by
``serve_grpc``); hub to engram drives :meth:`HubLink.deliver_from` with a scripted stream.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

import trio
import trio.testing
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from bobravoz.connector.config import load_config
from bobravoz.connector.hub_link import HubLink
from bobravoz.connector.service import METHODS, ConnectorService
from bobravoz.protocol.constants import DATA_METHOD
from bobravoz.protocol.gen.transport.v1 import BinaryFrame, DataPacket, DataRequest, DataResponse
from bobravoz.protocol.packets import wrap_process_message
from bobravoz.protocol.scan import DATA_PACKET_LAYOUT, DATA_REQUEST_LAYOUT, retag, retag_table
from bobravoz.runtime.grpc_bridge import open_grpc_channel, open_grpc_loop, serve_grpc
from bobravoz.runtime.handshake import PROTOCOL_HEADER, PROTOCOL_VERSION
from bobravoz.runtime.metrics import TransportMetrics
from bobravoz.runtime.supervisor import Restart, open_supervisor
from bobravoz.runtime.tracing import (
    DISABLED,
    TRACEPARENT_KEY,
    Tracing,
    configure_tracing,
    extract_parent,
)

PARENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN = "00f067aa0ba902b7"
SAMPLED = f"00-{PARENT_TRACE}-{PARENT_SPAN}-01"
TO_PACKET = retag_table(DATA_REQUEST_LAYOUT, DATA_PACKET_LAYOUT)
TO_RESPONSE = retag_table(DATA_PACKET_LAYOUT, DATA_REQUEST_LAYOUT)

ENV = {
    "BUBU_HUB_ENDPOINT": "127.0.0.1:1",  # never dialled: the tests read the link's channels
    "BUBU_STORYRUN_ID": "run-1",
    "BUBU_POD_NAMESPACE": "default",
    "BUBU_STEP_NAME": "producer",
    "BUBU_CONNECTOR_GENERATION": "1",
    "BUBU_GRPC_LOCAL_ENDPOINT": "127.0.0.1:0",
    "BUBU_GRPC_MESSAGE_TIMEOUT": "600s",
}


def engram_packets() -> list[bytes]:
    """What an engram sends: one packet with a sampled traceparent, one without."""
    return [
        bytes(
            DataRequest(
                metadata={"seq": "1", TRACEPARENT_KEY: SAMPLED},
                binary=BinaryFrame(payload=b"\x00one", mime_type="application/octet-stream"),
            )
        ),
        bytes(DataRequest(metadata={"seq": "2"}, binary=BinaryFrame(payload=b"two"))),
    ]


def hub_packets() -> list[bytes]:
    """What a hub sends (``DataPacket`` layout), the same two kinds."""
    return [
        bytes(
            DataPacket(
                metadata={"seq": "1", TRACEPARENT_KEY: SAMPLED},
                binary=BinaryFrame(payload=b"\x00one", mime_type="application/octet-stream"),
            )
        ),
        bytes(DataPacket(metadata={"seq": "2"}, binary=BinaryFrame(payload=b"two"))),
    ]


def span_ids(span: ReadableSpan) -> tuple[str, str]:
    context = span.get_span_context()
    assert context is not None
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"


@contextlib.asynccontextmanager
async def traced(on: bool) -> AsyncIterator[tuple[Tracing, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    tracing = configure_tracing("bobravoz-connector", {}, exporter=exporter) if on else DISABLED
    try:
        yield tracing, exporter
    finally:
        tracing.shutdown()


async def send_through_connector(tracing: Tracing, packets: list[bytes]) -> list[bytes]:
    """Send ``packets`` on a real Data stream; what the connector queued for the hub."""
    config = load_config(ENV)
    metrics = TransportMetrics(CollectorRegistry(), component="connector")
    async with (
        open_grpc_loop(),
        open_supervisor("connector", on_failure=metrics.failure_hook("connector")) as supervisor,
    ):
        link = HubLink(config, metrics, tracing=tracing)
        service = ConnectorService(link, metrics, supervisor)
        server = await supervisor.start_child_ready(
            "local-server", serve_grpc, config.listen, METHODS, service.accept,
            restart=Restart.TEMPORARY,
        )  # fmt: skip
        async with (
            open_grpc_channel(server.endpoint) as channel,
            channel.open_stream(DATA_METHOD, {PROTOCOL_HEADER: PROTOCOL_VERSION}) as data,
        ):
            await data.send_batch(packets)
            with trio.fail_after(10):
                while link.outbox.depth < len(packets):
                    await trio.testing.wait_all_tasks_blocked()
            queued = [link.outbox.receive_nowait() for _ in packets]
        supervisor.cancel()
    return queued


class ScriptedStream:
    """The parts of a Process stream ``deliver_from`` reads: one batch, then the end."""

    def __init__(self, messages: list[bytes]) -> None:
        self.batches = [messages]
        self.sink: Callable[[list[Any]], int] | None = None

    async def receive_batch(self) -> list[bytes]:
        if not self.batches:
            raise trio.EndOfChannel
        return self.batches.pop(0)

    def unreceive(self, messages: list[bytes]) -> None:
        self.batches.insert(0, messages)

    def withdraw_inbound(self) -> list[bytes]:
        return []


async def deliver_through_connector(tracing: Tracing, packets: list[bytes]) -> list[bytes]:
    """Hand ``packets`` to the link as the hub would; what it queued for the engram."""
    config = load_config(ENV)
    metrics = TransportMetrics(CollectorRegistry(), component="connector")
    link = HubLink(config, metrics, tracing=tracing)
    stream = ScriptedStream([wrap_process_message(packet) for packet in packets])
    await link.deliver_from(cast(Any, stream), link.counters)
    return [link.inbox.receive_nowait() for _ in packets]


async def test_with_tracing_off_engram_packets_reach_the_hub_link_unchanged() -> None:
    packets = engram_packets()
    async with traced(False) as (tracing, _):
        queued = await send_through_connector(tracing, packets)
    # Byte for byte: only the top-level tags were translated; no traceparent was added.
    assert queued == [retag(raw, 0, len(raw), TO_PACKET) for raw in packets]
    assert TRACEPARENT_KEY not in DataPacket().parse(queued[1]).metadata


async def test_with_tracing_off_hub_packets_reach_the_engram_unchanged() -> None:
    packets = hub_packets()
    async with traced(False) as (tracing, _):
        delivered = await deliver_through_connector(tracing, packets)
    assert delivered == [retag(raw, 0, len(raw), TO_RESPONSE) for raw in packets]
    assert TRACEPARENT_KEY not in DataResponse().parse(delivered[1]).metadata


async def test_with_tracing_on_the_send_hop_is_a_span_and_the_packet_points_at_it() -> None:
    packets = engram_packets()
    async with traced(True) as (tracing, exporter):
        queued = await send_through_connector(tracing, packets)
        (span,) = exporter.get_finished_spans()
    assert span.name == "connector.send"
    assert span.parent is not None
    assert f"{span.parent.span_id:016x}" == PARENT_SPAN
    assert span.attributes is not None
    assert span.attributes["step"] == "producer"
    traced_packet = DataPacket().parse(queued[0])
    sent = DataRequest().parse(packets[0])
    assert extract_parent(tracing, traced_packet.metadata) == span_ids(span)
    assert traced_packet.binary == sent.binary
    assert {k: v for k, v in traced_packet.metadata.items() if k != TRACEPARENT_KEY} == {"seq": "1"}
    # The packet without a trace context took the byte path: unchanged, no span.
    assert queued[1] == retag(packets[1], 0, len(packets[1]), TO_PACKET)


async def test_with_tracing_on_the_deliver_hop_is_a_span_and_the_packet_points_at_it() -> None:
    packets = hub_packets()
    async with traced(True) as (tracing, exporter):
        delivered = await deliver_through_connector(tracing, packets)
        (span,) = exporter.get_finished_spans()
    assert span.name == "connector.deliver"
    assert span.parent is not None
    assert f"{span.parent.span_id:016x}" == PARENT_SPAN
    response = DataResponse().parse(delivered[0])
    assert extract_parent(tracing, response.metadata) == span_ids(span)
    assert response.binary == DataPacket().parse(packets[0]).binary
    assert delivered[1] == retag(packets[1], 0, len(packets[1]), TO_RESPONSE)
