"""Integration: hub, connectors and example engrams as separate processes over real sockets."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import trio
import yaml
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


def paths(story: str, source: str, sink: str) -> int:
    """Paths from step ``source`` to step ``sink`` in the Story's graph (the fan-out count)."""
    needs = {step["name"]: step.get("needs", []) for step in yaml.safe_load(story)["spec"]["steps"]}
    if sink == source:
        return 1
    return sum(paths(story, source, upstream) for upstream in needs[sink])


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
        source = await wait_summary("engram-source", cluster)
        sink = await wait_summary("engram-sink", cluster)
        assert sink["received"] == source["sent"] == 300
        assert sink["out_of_order"] == 0
        # The hub takes in every packet the source handed over and writes each to the sink's
        # stream once per path from source to sink (one: source -> transform -> sink).
        emitted = source["emitted"]
        samples = await wait_for_metric(
            hub.find("ready")["metrics"],
            "bobravoz_packets_out_total",
            emitted * paths(STORY, "source", "sink"),
            binding="default/run-1/sink",
        )
        assert metric(samples, "bobravoz_packets_in_total", binding="default/run-1/source") == (
            emitted
        )
        assert metric(samples, "bobravoz_packets_dropped_total") == 0
        assert metric(samples, "bobravoz_packets_lost_total") == 0


async def test_fan_out_reaches_both_downstream_steps(tmp_path: Path) -> None:
    async with open_cluster(tmp_path) as cluster:
        hub = await cluster.hub(write(tmp_path, "story.yaml", FANOUT))
        connectors = {s: await cluster.connector(hub, s) for s in ("source", "sink-a", "sink-b")}
        await cluster.engram(connectors["sink-a"], "sink-a", "sink", {})
        await cluster.engram(connectors["sink-b"], "sink-b", "sink", {})
        await cluster.engram(connectors["source"], "source", "source", {"count": 200, "rate": 1000})
        source = await wait_summary("engram-source", cluster)
        for sink in ("sink-a", "sink-b"):
            fan_out = paths(FANOUT, "source", sink)
            summary = await wait_summary(f"engram-{sink}", cluster)
            assert summary["received"] == source["sent"] * fan_out
            assert summary["out_of_order"] == 0
            await wait_for_metric(
                hub.find("ready")["metrics"],
                "bobravoz_packets_out_total",
                source["emitted"] * fan_out,
                binding=f"default/run-1/{sink}",
            )


async def test_late_downstream_gets_what_was_buffered(tmp_path: Path) -> None:
    async with open_cluster(tmp_path) as cluster:
        hub = await cluster.hub(write(tmp_path, "story.yaml", FANOUT))
        source_connector = await cluster.connector(hub, "source")
        source = await cluster.engram(
            source_connector, "source", "source", {"count": 150, "rate": 2000}
        )
        sent = await source.wait_for("summary", 30)
        address = hub.find("ready")["metrics"]
        # Everything the source handed over waits in sink-a's buffer (the Story declares no
        # drop policy, and the default capacity is larger).
        await wait_for_metric(
            address, "bobravoz_buffer_depth", sent["emitted"], binding="default/run-1/sink-a"
        )
        late = await cluster.connector(hub, "sink-a")
        await cluster.engram(late, "sink-a", "sink", {})
        summary = await wait_summary("engram-sink-a", cluster)
        assert summary["received"] == sent["sent"] == 150
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
