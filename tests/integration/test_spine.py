"""Integration: hub, connectors and example engrams as separate processes over real sockets."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import trio
from procs import Cluster, metric, open_cluster, scrape, wait_for_metric

pytestmark = pytest.mark.integration

STORY = """
apiVersion: bubustack.io/v1alpha1
kind: Story
metadata:
  name: spine
  namespace: default
  annotations:
    bobravoz.bubustack.io/transport: grpc
spec:
  pattern: realtime
  steps:
    - name: source
      ref: {name: source}
    - name: transform
      ref: {name: transform}
      needs: [source]
    - name: sink
      ref: {name: sink}
      needs: [transform]
"""

FANOUT = """
apiVersion: bubustack.io/v1alpha1
kind: Story
metadata:
  name: fanout
  namespace: default
spec:
  pattern: realtime
  steps:
    - name: source
      ref: {name: source}
    - name: sink-a
      ref: {name: sink}
      needs: [source]
    - name: sink-b
      ref: {name: sink}
      needs: [source]
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


async def wait_summary(proc_name: str, cluster: Cluster, limit: float = 40.0) -> dict:
    proc = next(p for p in cluster.procs if p.name == proc_name)
    return await proc.wait_for("summary", limit)


async def test_source_transform_sink_in_order(tmp_path: Path) -> None:
    async with open_cluster(tmp_path) as cluster:
        hub = await cluster.hub(write(tmp_path, "story.yaml", STORY))
        connectors = {s: await cluster.connector(hub, s) for s in ("source", "transform", "sink")}
        await cluster.engram(connectors["sink"], "sink", "sink", {})
        await cluster.engram(connectors["transform"], "transform", "transform", {})
        await cluster.engram(
            connectors["source"], "source", "source", {"count": 300, "rate": 1000, "size": 256}
        )
        sink = await wait_summary("engram-sink", cluster)
        assert sink["received"] == 300
        assert sink["out_of_order"] == 0
        samples = await trio.to_thread.run_sync(scrape, hub.find("ready")["metrics"])
        assert metric(samples, "bobravoz_packets_in_total", binding="default/run-1/source") == 301
        assert metric(samples, "bobravoz_packets_out_total", binding="default/run-1/sink") == 301
        assert metric(samples, "bobravoz_packets_dropped_total") == 0


async def test_fan_out_reaches_both_downstream_steps(tmp_path: Path) -> None:
    async with open_cluster(tmp_path) as cluster:
        hub = await cluster.hub(write(tmp_path, "story.yaml", FANOUT))
        connectors = {s: await cluster.connector(hub, s) for s in ("source", "sink-a", "sink-b")}
        await cluster.engram(connectors["sink-a"], "sink-a", "sink", {})
        await cluster.engram(connectors["sink-b"], "sink-b", "sink", {})
        await cluster.engram(connectors["source"], "source", "source", {"count": 200, "rate": 1000})
        for name in ("engram-sink-a", "engram-sink-b"):
            summary = await wait_summary(name, cluster)
            assert summary["received"] == 200
            assert summary["out_of_order"] == 0


async def test_late_downstream_gets_what_was_buffered(tmp_path: Path) -> None:
    async with open_cluster(tmp_path) as cluster:
        hub = await cluster.hub(write(tmp_path, "story.yaml", FANOUT))
        source_connector = await cluster.connector(hub, "source")
        source = await cluster.engram(
            source_connector, "source", "source", {"count": 150, "rate": 2000}
        )
        await source.wait_for("summary", 30)
        address = hub.find("ready")["metrics"]
        await wait_for_metric(address, "bobravoz_buffer_depth", 151, binding="default/run-1/sink-a")
        late = await cluster.connector(hub, "sink-a")
        await cluster.engram(late, "sink-a", "sink", {})
        summary = await wait_summary("engram-sink-a", cluster)
        assert summary["received"] == 150
        assert summary["out_of_order"] == 0


async def test_killed_engram_is_visible_and_others_keep_flowing(tmp_path: Path) -> None:
    async with open_cluster(tmp_path) as cluster:
        hub = await cluster.hub(write(tmp_path, "story.yaml", FANOUT))
        connectors = {s: await cluster.connector(hub, s) for s in ("source", "sink-a", "sink-b")}
        victim = await cluster.engram(connectors["sink-a"], "sink-a", "sink", {})
        await cluster.engram(connectors["sink-b"], "sink-b", "sink", {})
        await cluster.engram(connectors["source"], "source", "source", {"count": 400, "rate": 200})
        await victim.wait_for("progress", 20)
        victim.process.send_signal(signal.SIGKILL)
        await victim.process.wait()
        summary = await wait_summary("engram-sink-b", cluster)
        assert summary["received"] == 400
        address = connectors["sink-a"].find("ready")["metrics"]
        samples = await trio.to_thread.run_sync(scrape, address)
        assert metric(samples, "bobravoz_open_streams", component="connector") == 0
        assert metric(samples, "bobravoz_buffer_depth", binding="default/run-1/sink-a:inbox") > 0
