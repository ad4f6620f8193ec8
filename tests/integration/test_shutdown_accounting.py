"""Integration: a hub asked to stop drains for its grace period, then counts and logs every
packet it could not deliver (the measured case: 600 packets buffered for a step that never
connected were gone with no count and no log line)."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Any

import pytest
import trio
from procs import Cluster, Proc, open_cluster, scrape, sigterm_twice, wait_for_metric

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
PRODUCER = BindingIdentity(storyrun="run-1", namespace="default", step="producer", generation=1)


async def start_hub(cluster: Cluster, scratch: Path, grace: str) -> tuple[Proc, dict[str, Any]]:
    """A hub for :data:`STORY` with shutdown grace ``grace``, and its readiness line."""
    (scratch / "story.yaml").write_text(STORY)
    hub = await cluster.hub(scratch / "story.yaml", {"BOBRAVOZ_HUB_SHUTDOWN_GRACE": grace})
    ready = hub.find("ready")
    assert ready is not None
    return hub, ready


async def test_sigterm_counts_and_logs_what_it_could_not_deliver(tmp_path: Path) -> None:
    async with open_cluster(tmp_path) as cluster:
        hub, ready = await start_hub(cluster, tmp_path, "200ms")
        packet = bytes(ProcessRequest(packet=DataPacket(binary=BinaryFrame(payload=b"x" * 64))))
        async with (
            open_grpc_loop(),
            open_grpc_channel(parse_endpoint(ready["listen"])) as channel,
            channel.open_stream(PROCESS_METHOD, PRODUCER.headers()) as stream,
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


async def test_a_second_sigterm_stops_a_draining_hub_at_once_and_counts_what_it_held(
    tmp_path: Path,
) -> None:
    # The measured case: the second signal raised KeyboardInterrupt inside a task, which
    # left trio.run as an exception group: tracebacks and exit 1.
    async with open_cluster(tmp_path) as cluster:
        hub, ready = await start_hub(cluster, tmp_path, "60s")
        # A consumer process that is connected and then stopped (SIGSTOP): what the hub holds
        # for it keeps the drain waiting for the whole grace period.
        consumer = await cluster.start(
            "consumer",
            [
                sys.executable,
                "-m",
                "loadtests.bench_client",
                "consume",
                "--target",
                ready["listen"],
                "--storyrun",
                "run-1",
                "--count",
                "1000000",
            ],
        )
        consumer.process.send_signal(signal.SIGSTOP)
        packet = bytes(ProcessRequest(packet=DataPacket(binary=BinaryFrame(payload=b"x" * 1024))))
        async with (
            open_grpc_loop(),
            open_grpc_channel(parse_endpoint(ready["listen"])) as channel,
            channel.open_stream(PROCESS_METHOD, PRODUCER.headers()) as stream,
            trio.open_nursery() as sending,
        ):
            sending.start_soon(stream.send_batch, [packet] * 20_000)
            await wait_for_metric(
                ready["metrics"],
                "bobravoz_buffer_depth",
                1,
                at_least=True,
                binding="default/run-1/consumer",
            )
            log = await sigterm_twice(hub, tmp_path / "hub.log", "draining before shutdown")
            sending.cancel_scope.cancel()
    assert "packets undelivered (counted lost: shutdown)" in log, log[-2000:]
