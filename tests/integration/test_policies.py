"""Integration: declared drop policies are counted, and idle streams get hub heartbeats."""

from __future__ import annotations

from pathlib import Path

import pytest
from procs import metric, open_cluster, wait_for_metric

pytestmark = pytest.mark.integration

#: The buffer the Story declares in front of the sink: at most this many packets, and the
#: oldest are dropped to make room.
MAX_MESSAGES = 50
LOSSY = f"""
metadata: {{name: lossy, namespace: default}}
spec:
  pattern: realtime
  transports:
    - name: t
      transportRef: bobravoz-grpc
      streaming:
        backpressure: {{buffer: {{maxMessages: {MAX_MESSAGES}, dropPolicy: drop_oldest}}}}
  steps:
    - {{name: source, ref: {{name: source}}, transport: t}}
    - {{name: sink, ref: {{name: sink}}, needs: [source], transport: t}}
"""


async def test_drop_oldest_keeps_the_newest_and_counts_the_rest(tmp_path: Path) -> None:
    (tmp_path / "story.yaml").write_text(LOSSY)
    async with open_cluster(tmp_path) as cluster:
        hub = await cluster.hub(tmp_path / "story.yaml")
        connector = await cluster.connector(hub, "source")
        source = await cluster.engram(connector, "source", "source", {"count": 150, "rate": 5000})
        sent = await source.wait_for("summary", 30)
        # No sink is connected: the buffer fills to its declared capacity, and every packet
        # beyond it pushes out the oldest one, counted as a drop_oldest drop.
        assert sent["emitted"] > MAX_MESSAGES
        address = hub.find("ready")["metrics"]
        samples = await wait_for_metric(
            address,
            "bobravoz_packets_dropped_total",
            sent["emitted"] - MAX_MESSAGES,
            reason="drop_oldest",
        )
        assert metric(samples, "bobravoz_buffer_depth", binding="default/run-1/sink") == (
            MAX_MESSAGES
        )
        assert metric(samples, "bobravoz_packets_dropped_total") == sent["emitted"] - MAX_MESSAGES
        assert metric(samples, "bobravoz_packets_lost_total") == 0
        late = await cluster.connector(hub, "sink")
        sink = await cluster.engram(late, "sink", "sink", {})
        summary = await sink.wait_for("summary", 30)
        # The sink gets exactly what the buffer kept: the newest MAX_MESSAGES packets, in order,
        # the source's end marker last.
        assert summary["eos"] == 1
        assert summary["received"] + summary["eos"] == MAX_MESSAGES
        assert summary["sequences"] == {
            "source": [sent["sent"] - summary["received"] + 1, sent["sent"]]
        }
        assert summary["out_of_order"] == 1  # only the first one kept: it follows the dropped gap


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
