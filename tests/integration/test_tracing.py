"""Integration: one packet's path is one OpenTelemetry trace across processes.

The hub, one connector per step and the example engrams run as separate processes exporting
over OTLP/HTTP (the standard ``OTEL_*`` variables) to a :class:`TraceReceiver` in this test,
which decodes the export with the official OpenTelemetry protobuf definitions. The test waits
until some packet's hops have arrived and checks they form one trace whose parentage follows
the packet: ``sdk.emit`` (source engram) → ``connector.send`` (source's connector) →
[``hub.route`` (hub)] → ``connector.deliver`` (transform's connector) → ``sdk.handle``
(transform engram).
"""

from __future__ import annotations

import itertools
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
import trio
from procs import ENGRAMS, REPO, open_cluster

from bobravoz.sdk.trace_view import ReceivedSpan, TraceReceiver, group_traces

pytestmark = pytest.mark.integration

#: Seconds to wait for the spans of one packet's path.
WAIT = 30.0

STORY = """
apiVersion: bubustack.io/v1alpha1
kind: Story
metadata:
  name: traced
  namespace: default
spec:
  pattern: realtime
  transports:
    - name: grpc-hub
      transportRef: bobravoz-grpc
      streaming:
        routing: {mode: hub}
        observability:
          tracing: {enabled: true, samplePolicy: POLICY, sampleRate: 100}
  steps:
    - name: source
      ref: {name: source}
      transport: grpc-hub
      with: {count: 20, rate: 100, size: 64}
    - name: transform
      ref: {name: transform}
      needs: [UPSTREAM]
      transport: grpc-hub
    - name: sink
      ref: {name: sink}
      needs: [transform]
      transport: grpc-hub
"""


#: A ``sleep`` step between source and transform: its wait is a hop of the trace.
PAUSE = """
    - name: pause
      type: sleep
      needs: [source]
      transport: grpc-hub
      with: {duration: 20ms}
"""


def story(tmp_path: Path, policy: str = "always", *, pause: bool = False) -> Path:
    path = tmp_path / "story.yaml"
    text = STORY.replace("POLICY", policy).replace("UPSTREAM", "pause" if pause else "source")
    if pause:
        text = text.replace(
            "    - name: transform\n", PAUSE.lstrip("\n") + "    - name: transform\n"
        )
    path.write_text(text)
    return path


def children(spans: Sequence[ReceivedSpan], parent: ReceivedSpan, name: str) -> list[ReceivedSpan]:
    return [span for span in spans if span.name == name and span.parent_id == parent.span_id]


def packet_path(trace: Sequence[ReceivedSpan]) -> list[ReceivedSpan] | None:
    """The hops of the first packet in ``trace`` that went from the source engram to the
    transform engram, parent to child, or None while some hop has not arrived."""
    for emit in trace:
        if emit.name != "sdk.emit" or emit.step != "source" or emit.parent_id:
            continue
        for send in children(trace, emit, "connector.send"):
            # The hub's span (or its sleep's) is the one the next connector continues.
            for hub in children(trace, send, "hub.route"):
                for last in children(trace, hub, "hub.primitive.sleep") or [hub]:
                    for deliver in children(trace, last, "connector.deliver"):
                        for handle in children(trace, deliver, "sdk.handle"):
                            hops = [hub] if last is hub else [hub, last]
                            return [emit, send, *hops, deliver, handle]
    return None


def first_packet_path(spans: Sequence[ReceivedSpan]) -> list[ReceivedSpan] | None:
    for trace in group_traces(spans).values():
        path = packet_path(trace)
        if path is not None:
            return path
    return None


def describe(spans: Sequence[ReceivedSpan]) -> str:
    lines = [f"{len(spans)} spans received; the first traces:"]
    for trace_id, trace in list(group_traces(spans).items())[:3]:
        lines.append(f"trace {trace_id}")
        lines.extend(
            f"  {s.name} {s.service}[{s.step}] id={s.span_id} parent={s.parent_id or '-'}"
            for s in trace
        )
    return "\n".join(lines)


@pytest.mark.parametrize("pause", [False, True], ids=["route", "route-and-sleep"])
async def test_one_packet_is_one_trace_across_processes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pause: bool
) -> None:
    receiver = TraceReceiver()
    async with trio.open_nursery() as nursery:
        endpoint = await nursery.start(receiver.serve)
        # Every child inherits these: the standard variables, nothing bobravoz-specific.
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
        monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
        for name in (
            "OTEL_SERVICE_NAME",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "OTEL_SDK_DISABLED",
        ):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
        async with open_cluster(tmp_path) as cluster:
            hub = await cluster.hub(story(tmp_path, pause=pause))
            connectors = {
                s: await cluster.connector(hub, s) for s in ("source", "transform", "sink")
            }
            await cluster.engram(connectors["sink"], "sink", "sink", {})
            await cluster.engram(connectors["transform"], "transform", "transform", {})
            await cluster.engram(
                connectors["source"], "source", "source", {"count": 20, "rate": 100, "size": 64}
            )
            with trio.move_on_after(WAIT):
                await receiver.wait_until(lambda spans: first_packet_path(spans) is not None)
        nursery.cancel_scope.cancel()
    path = first_packet_path(receiver.spans)
    assert path is not None, describe(receiver.spans)
    names = [span.name for span in path]
    hub_hops = ["hub.route", "hub.primitive.sleep"] if pause else ["hub.route"]
    assert names == ["sdk.emit", "connector.send", *hub_hops, "connector.deliver", "sdk.handle"]
    # One trace ...
    assert len({span.trace_id for span in path}) == 1
    # ... whose spans each continue the previous hop (the root has no parent) ...
    assert path[0].parent_id == ""
    for parent, child in itertools.pairwise(path):
        assert child.parent_id == parent.span_id, (parent, child)
        assert child.start_ns >= parent.start_ns  # caused by it, on one machine's clock
    # ... recorded by at least three processes, each hop by the one that handled it.
    assert len({span.service for span in path}) >= 3
    assert [(span.service, span.step) for span in path if not span.name.startswith("hub.")] == [
        ("bobravoz-engram-source", "source"),
        ("bobravoz-connector", "source"),
        ("bobravoz-connector", "transform"),
        ("bobravoz-engram-transform", "transform"),
    ]
    for span in path:
        if span.name.startswith("hub."):
            assert span.service == "bobravoz-hub"


def run_up(story_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "bobravoz.sdk.cli",
            "up",
            str(story_path),
            "--trace",
            "--quiet",
            "--duration",
            "60",
            "--engrams-dir",
            str(ENGRAMS),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        check=False,
    )


async def test_up_trace_prints_the_slowest_packets_waterfall(tmp_path: Path) -> None:
    done = await trio.to_thread.run_sync(run_up, story(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if "slowest packet's trace" in line)
    header, *rows = lines[start + 1 :]
    assert header.startswith("trace ")
    by_name = {row.split()[0]: row for row in rows}
    # The source's packet through the transform to the sink: every hop of both legs.
    for name in ("sdk.emit", "connector.send", "connector.deliver", "sdk.handle"):
        assert name in by_name, done.stdout
    # Children are indented under their parents, and every row has a bar and a duration.
    indents = [len(row) - len(row.lstrip()) for row in rows]
    assert indents[0] == 0
    assert indents[1] > indents[0]
    assert all("|" in row and row.endswith(" ms") for row in rows)


async def test_up_trace_follows_the_storys_sampling(tmp_path: Path) -> None:
    done = await trio.to_thread.run_sync(run_up, story(tmp_path, policy="never"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no spans were received" in done.stdout
