"""Integration: a connector process between a test client (acting as the engram) and a hub."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import trio
from procs import CLI, metric, open_cluster, scrape, wait_for_metric

from bobravoz.protocol.gen.transport.v1 import (
    BinaryFrame,
    ControlAction,
    ControlRequest,
    ControlResponse,
    DataRequest,
)
from bobravoz.runtime.endpoints import parse_endpoint
from bobravoz.runtime.grpc_bridge import ClientStream, open_grpc_channel, open_grpc_loop
from bobravoz.runtime.status import RemoteStatusError, StatusCode

pytestmark = pytest.mark.integration

STORY = """
metadata: {name: pair, namespace: default}
spec:
  pattern: realtime
  steps:
    - {name: producer, ref: {name: source}}
    - {name: consumer, ref: {name: sink}, needs: [producer]}
"""
CONTROL = "/transport.v1.TransportConnectorService/Control"
DATA = "/transport.v1.TransportConnectorService/Data"
PROTOCOL = {"bubu-transport-protocol": "1.0.0"}


async def next_control(control: ClientStream) -> ControlResponse:
    with trio.fail_after(20):
        return ControlResponse.parse((await control.receive_batch(1))[0])


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_control_ready_heartbeat_and_rejected_packet(tmp_path: Path) -> None:
    (tmp_path / "story.yaml").write_text(STORY)
    async with open_cluster(tmp_path) as cluster:
        hub = await cluster.hub(tmp_path / "story.yaml")
        connector = await cluster.connector(hub, "producer")
        endpoint = parse_endpoint(connector.find("ready")["listen"])  # type: ignore[index]
        async with open_grpc_loop(), open_grpc_channel(endpoint) as channel:
            with pytest.raises(RemoteStatusError) as refused:
                async with channel.open_stream(DATA, {}):
                    pass
            assert refused.value.code == StatusCode.FAILED_PRECONDITION
            async with channel.open_stream(CONTROL, PROTOCOL) as control:
                ready = await next_control(control)
                assert ready.action == ControlAction.CONNECTOR_READY
                assert ready.metadata["startup.capabilities"] == "none"
                await control.send(bytes(ControlRequest(action=ControlAction.HEARTBEAT)))
                ack = await next_control(control)
                assert ack.action == ControlAction.ACK
                assert ack.metadata == {
                    "received": "heartbeat",
                    "handled": "true",
                    "status": "alive",
                }
                async with channel.open_stream(DATA, PROTOCOL) as data:
                    bad = DataRequest(binary=BinaryFrame(payload=b"x", mime_type="m" * 300))
                    await data.send(bytes(bad))
                    error = await next_control(control)
                    assert error.action == ControlAction.ERROR
                    assert error.error is not None
                    assert error.error.code == StatusCode.INVALID_ARGUMENT
                    assert error.error.details["field"] == "binary.mime_type"
                    assert "binary.mime_type" in error.error.message
                    await data.send(bytes(DataRequest(binary=BinaryFrame(payload=b"ok"))))
                    address = hub.find("ready")["metrics"]
                    await wait_for_metric(
                        address, "bobravoz_packets_in_total", 1, binding="default/run-1/producer"
                    )
        samples = await trio.to_thread.run_sync(scrape, connector.find("ready")["metrics"])
        assert metric(samples, "bobravoz_packets_rejected_total", reason="too_long") == 1


async def test_connector_reconnects_when_the_hub_comes_back(tmp_path: Path) -> None:
    (tmp_path / "story.yaml").write_text(STORY)
    port = free_port()
    hub_argv = [
        *CLI,
        "hub",
        "--listen",
        f"127.0.0.1:{port}",
        "--story",
        str(tmp_path / "story.yaml"),
        "--metrics",
        "127.0.0.1:0",
    ]
    async with open_cluster(tmp_path) as cluster:
        first_hub = await cluster.start("hub-1", hub_argv)
        connector = await cluster.connector(first_hub, "producer")
        endpoint = parse_endpoint(connector.find("ready")["listen"])  # type: ignore[index]
        async with (
            open_grpc_loop(),
            open_grpc_channel(endpoint) as channel,
            channel.open_stream(CONTROL, PROTOCOL) as control,
        ):
            assert (await next_control(control)).action == ControlAction.CONNECTOR_READY
            first_hub.process.terminate()
            await first_hub.process.wait()
            draining = await next_control(control)
            assert draining.action == ControlAction.HANDOFF_DRAINING
            second_hub = await cluster.start("hub-2", hub_argv)
            cutover = await next_control(control)
            assert cutover.action == ControlAction.HANDOFF_CUTOVER
            assert cutover.metadata["reason"] == "hub_reconnected"
            async with channel.open_stream(DATA, PROTOCOL) as data:
                await data.send(bytes(DataRequest(binary=BinaryFrame(payload=b"again"))))
                address = second_hub.find("ready")["metrics"]
                await wait_for_metric(
                    address, "bobravoz_packets_in_total", 1, binding="default/run-1/producer"
                )
        samples = await trio.to_thread.run_sync(scrape, connector.find("ready")["metrics"])
        assert metric(samples, "bobravoz_upstream_reconnects_total") == 1


async def test_connector_stops_when_the_hub_refuses_its_step(tmp_path: Path) -> None:
    (tmp_path / "story.yaml").write_text(STORY)
    async with open_cluster(tmp_path) as cluster:
        hub = await cluster.hub(tmp_path / "story.yaml")
        connector = await cluster.connector(hub, "no-such-step")
        with trio.fail_after(20):
            status = await connector.process.wait()
        assert status == 3
        log = (tmp_path / "connector-no-such-step.log").read_text()
        assert "NOT_FOUND" in log
        assert "no-such-step" in log


async def test_peer_to_peer_link_bypasses_the_hub(tmp_path: Path) -> None:
    (tmp_path / "story.yaml").write_text(STORY)
    async with open_cluster(tmp_path) as cluster:
        hub = await cluster.hub(tmp_path / "story.yaml")
        downstream = await cluster.connector(hub, "consumer", listen="127.0.0.1:0")
        upstream = await cluster.connector(
            hub,
            "producer",
            upstream=downstream.find("ready")["listen"],  # type: ignore[index]
        )
        sink = await cluster.engram(downstream, "consumer", "sink", {})
        source = await cluster.engram(upstream, "producer", "source", {"count": 120, "rate": 1000})
        sent = await source.wait_for("summary", 30)
        summary = await sink.wait_for("summary", 30)
        assert summary["received"] == sent["sent"] == 120
        assert summary["out_of_order"] == 0
        samples = await trio.to_thread.run_sync(scrape, hub.find("ready")["metrics"])
        assert metric(samples, "bobravoz_packets_in_total", binding="default/run-1/producer") == 0
        # Every packet the source handed over (its end marker included) came over the peer link.
        peer = await trio.to_thread.run_sync(scrape, downstream.find("ready")["metrics"])
        link = metric(peer, "bobravoz_packets_in_total", binding="default/run-1/producer->p2p")
        assert link == sent["emitted"]
