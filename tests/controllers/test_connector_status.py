"""A connector reports Ready, heartbeats and negotiated codecs on its TransportBinding's status
(through the stand-in API server), and Ready=False when its hub link goes down."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio
from kubefake import FakeKube, serve_fake_kube
from procs import eventually, open_cluster

from bobravoz.protocol.gen.transport.v1 import BinaryFrame, DataRequest
from bobravoz.runtime.binding_envelope import BindingEnvelope, BindingInfo, encode_binding
from bobravoz.runtime.endpoints import parse_endpoint
from bobravoz.runtime.grpc_bridge import open_grpc_channel, open_grpc_loop

BINDINGS = "transport.bubustack.io/v1alpha1/transportbindings"
STORY = """
metadata: {name: pair, namespace: default}
spec:
  pattern: realtime
  steps:
    - {name: producer, ref: {name: source}}
    - {name: consumer, ref: {name: sink}, needs: [producer]}
"""


def status(fake: FakeKube) -> dict[str, Any]:
    found = fake.get(BINDINGS, "default", "run-1-producer-transport") or {}
    return dict(found.get("status", {}))


async def test_connector_reports_ready_heartbeats_and_codecs(tmp_path: Path) -> None:
    (tmp_path / "story.yaml").write_text(STORY)
    fake = FakeKube()
    fake.put(
        BINDINGS,
        {
            "metadata": {"name": "run-1-producer-transport", "namespace": "default"},
            "spec": {
                "transportRef": "t",
                "driver": "bobravoz-grpc",
                "stepName": "producer",
                "engramName": "run-1-producer",
                "binary": {"direction": "bidirectional"},
            },
        },
    )
    envelope = BindingEnvelope(
        name="run-1-producer-transport",
        namespace="default",
        info=BindingInfo(endpoint="127.0.0.1:50051"),
    )
    async with trio.open_nursery() as nursery:
        host = await nursery.start(serve_fake_kube, fake)
        async with open_cluster(tmp_path) as cluster:
            hub = await cluster.hub(tmp_path / "story.yaml")
            connector = await cluster.connector(
                hub,
                "producer",
                env={
                    "BOBRAVOZ_KUBE_API": host,
                    "BUBU_TRANSPORT_BINDING": encode_binding(envelope),
                    "BUBU_TRANSPORT_HEARTBEAT_INTERVAL": "200ms",
                },
            )
            await eventually(
                lambda: status(fake).get("conditions", [{}])[0].get("status") == "True"
            )
            assert status(fake)["conditions"][0]["reason"] == "TransportReady"
            endpoint = parse_endpoint(connector.find("ready")["listen"])  # type: ignore[index]
            async with (
                open_grpc_loop(),
                open_grpc_channel(endpoint) as channel,
                channel.open_stream(
                    "/transport.v1.TransportConnectorService/Data",
                    {"bubu-transport-protocol": "1.0.0"},
                ) as data,
            ):
                await data.send(
                    bytes(
                        DataRequest(binary=BinaryFrame(payload=b"{}", mime_type="application/json"))
                    )
                )
                await eventually(lambda: status(fake).get("negotiatedBinary") == "application/json")
            beat = status(fake)["conditions"][0]["lastTransitionTime"]
            await eventually(  # the heartbeat refreshes the Ready condition's time
                lambda: status(fake)["conditions"][0]["lastTransitionTime"] != beat, limit=5
            )
            hub.process.terminate()
            await hub.process.wait()
            await eventually(lambda: status(fake)["conditions"][0]["status"] == "False")
            assert "down" in status(fake)["conditions"][0]["message"]
        nursery.cancel_scope.cancel()
