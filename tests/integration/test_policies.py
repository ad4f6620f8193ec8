"""Integration: declared drop policies are counted, and idle streams get hub heartbeats."""

from __future__ import annotations

from pathlib import Path

import pytest
from procs import metric, open_cluster, wait_for_metric

pytestmark = pytest.mark.integration

LOSSY = """
metadata: {name: lossy, namespace: default}
spec:
  pattern: realtime
  transports:
    - name: t
      transportRef: bobravoz-grpc
      streaming:
        backpressure: {buffer: {maxMessages: 50, dropPolicy: drop_oldest}}
  steps:
    - {name: source, ref: {name: source}, transport: t}
    - {name: sink, ref: {name: sink}, needs: [source], transport: t}
"""


async def test_drop_oldest_keeps_the_newest_and_counts_the_rest(tmp_path: Path) -> None:
    (tmp_path / "story.yaml").write_text(LOSSY)
    async with open_cluster(tmp_path) as cluster:
        hub = await cluster.hub(tmp_path / "story.yaml")
        connector = await cluster.connector(hub, "source")
        source = await cluster.engram(connector, "source", "source", {"count": 150, "rate": 5000})
        await source.wait_for("summary", 30)
        address = hub.find("ready")["metrics"]
        samples = await wait_for_metric(
            address, "bobravoz_packets_dropped_total", 101, reason="drop_oldest"
        )  # 150 packets + the end-of-stream marker, 50 kept
        assert metric(samples, "bobravoz_buffer_depth", binding="default/run-1/sink") == 50
        late = await cluster.connector(hub, "sink")
        sink = await cluster.engram(late, "sink", "sink", {"idle_timeout": 3})
        summary = await sink.wait_for("summary", 30)
        assert summary["received"] == 49  # the 50 newest, minus the end-of-stream marker
        assert summary["out_of_order"] == 1  # the first one kept follows the dropped gap


async def test_idle_streams_receive_hub_heartbeats(tmp_path: Path) -> None:
    (tmp_path / "story.yaml").write_text(LOSSY)
    async with open_cluster(tmp_path) as cluster:
        hub = await cluster.hub(
            tmp_path / "story.yaml", env={"BUBU_HUB_HEARTBEAT_INTERVAL": "100ms"}
        )
        connector = await cluster.connector(hub, "sink")
        samples = await wait_for_metric(
            connector.find("ready")["metrics"],
            "bobravoz_heartbeats_in_total",
            3,
            at_least=True,
            binding="default/run-1/sink",
        )
        assert metric(samples, "bobravoz_packets_in_total", binding="default/run-1/sink") == 0
