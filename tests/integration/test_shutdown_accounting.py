"""Integration: a hub asked to stop drains for its grace period, then counts and logs every
packet it could not deliver (the measured case: 600 packets buffered for a step that never
connected were gone with no count and no log line)."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import trio
from procs import open_cluster, scrape, wait_for_metric

from bobravoz.protocol.constants import PROCESS_METHOD
from bobravoz.protocol.gen.transport.v1 import BinaryFrame, DataPacket, ProcessRequest
from bobravoz.runtime.endpoints import parse_endpoint
from bobravoz.runtime.grpc_bridge import open_grpc_channel, open_grpc_loop
from bobravoz.runtime.handshake import BindingIdentity

pytestmark = pytest.mark.integration

STORY = """
apiVersion: bubustack.io/v1alpha1
kind: Story
metadata: {name: drain, namespace: default}
spec:
  pattern: realtime
  steps:
    - {name: producer, ref: {name: source}}
    - {name: consumer, ref: {name: sink}, needs: [producer]}
"""


async def test_sigterm_counts_and_logs_what_it_could_not_deliver(tmp_path: Path) -> None:
    (tmp_path / "story.yaml").write_text(STORY)
    producer = BindingIdentity(storyrun="run-1", namespace="default", step="producer", generation=1)
    async with open_cluster(tmp_path) as cluster:
        hub = await cluster.hub(tmp_path / "story.yaml", {"BOBRAVOZ_HUB_SHUTDOWN_GRACE": "200ms"})
        ready = hub.find("ready")
        assert ready is not None
        packet = bytes(ProcessRequest(packet=DataPacket(binary=BinaryFrame(payload=b"x" * 64))))
        async with (
            open_grpc_loop(),
            open_grpc_channel(parse_endpoint(ready["listen"])) as channel,
            channel.open_stream(PROCESS_METHOD, producer.headers()) as stream,
        ):
            await stream.send_batch([packet] * 600)
            await wait_for_metric(
                ready["metrics"], "bobravoz_buffer_depth", 600, binding="default/run-1/consumer"
            )
            samples = await trio.to_thread.run_sync(scrape, ready["metrics"])
            assert not any(name == "bobravoz_packets_lost_total" for name, _ in samples)
            hub.process.send_signal(signal.SIGTERM)
            with trio.fail_after(15):
                assert await hub.process.wait() == 0
    log = (tmp_path / "hub.log").read_text()
    assert "600 packets undelivered" in log, log[-2000:]
