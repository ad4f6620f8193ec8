"""Integration: SIGTERM/SIGINT shut processes down cleanly, and `bobravoz up` leaves nothing
behind when interrupted."""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path
from typing import Any

import pytest
import trio
from procs import CLI, REPO, eventually, open_cluster, sigterm_twice

pytestmark = pytest.mark.integration

STORY = REPO / "examples" / "stories" / "pipeline.yaml"
#: ``bobravoz up``'s live progress line: ``[  3.0s] sink=120 transform=131 source=140``.
PROGRESS = re.compile(r"\[\s*\d+\.\ds\] (?:[\w-]+=\d+ )*sink=(\d+)")


def children_of(pid: int) -> set[int]:
    """Every live descendant of ``pid`` (from /proc)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":
            parents[int(entry)] = int(fields[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier}
        found |= frontier
    return found


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("kind", ["hub", "connector"])
async def test_sigterm_exits_cleanly(tmp_path: Path, kind: str) -> None:
    async with open_cluster(tmp_path) as cluster:
        hub = await cluster.hub(STORY)
        target = hub if kind == "hub" else await cluster.connector(hub, "source")
        target.process.send_signal(signal.SIGTERM)
        with trio.fail_after(10):
            assert await target.process.wait() == 0


def sink_progress(log: Path) -> int:
    """The largest ``sink=N`` on ``bobravoz up``'s live progress line (in its stderr log)."""
    found = PROGRESS.findall(log.read_text(errors="replace")) if log.exists() else []
    return max((int(count) for count in found), default=0)


async def test_interrupted_up_stops_every_process(tmp_path: Path) -> None:
    # Ctrl-C ends the streaming as --duration does: the sources stop first and the rest
    # finish behind them, so the summary's counts are complete; nothing is left running.
    async with open_cluster(tmp_path) as cluster:
        runner = await cluster.start(
            "up", [*CLI, "up", str(STORY), "--duration", "60"], ready=False
        )
        # The runner reports progress only on its terminal (stderr, logged to up.log) and its
        # children's state is in /proc: both are polled, bounded, no event announces them.
        # Interrupt once all seven processes (hub, 3 connectors, 3 engrams) run and packets
        # reach the sink: mid-stream, not during start-up.
        await eventually(lambda: len(children_of(runner.process.pid)) >= 7, limit=30)
        started = children_of(runner.process.pid)
        await eventually(lambda: sink_progress(tmp_path / "up.log") > 0, limit=30)
        runner.process.send_signal(signal.SIGINT)
        with trio.fail_after(20):
            assert await runner.process.wait() == 130
        assert not [pid for pid in started if alive(pid)]
    lines = runner.text
    sent = int(next(line for line in lines if line.startswith("sent ")).split()[1])
    assert 0 < sent < 2000
    assert f"delivered  {sent} (expected {sent})" in lines
    assert any(line.startswith("stopped    Ctrl-C asked the sources to stop") for line in lines)


#: A sink that waits for two sources' end markers behind one source: it never finishes.
UNFINISHABLE = """
apiVersion: bubustack.io/v1alpha1
kind: Story
metadata: {name: unfinishable, namespace: default}
spec:
  pattern: realtime
  steps:
    - {name: source, ref: {name: source}, with: {count: 1000000, rate: 200}}
    - {name: sink, ref: {name: sink}, needs: [source], with: {sources: 2}}
"""


async def test_a_second_interrupt_stops_a_run_that_cannot_drain_at_once(tmp_path: Path) -> None:
    (tmp_path / "unfinishable.yaml").write_text(UNFINISHABLE)
    argv = [*CLI, "up", str(tmp_path / "unfinishable.yaml"), "--duration", "60"]
    async with open_cluster(tmp_path) as cluster:
        runner = await cluster.start(
            "up", [*argv, "--engrams-dir", str(REPO / "examples" / "engrams")], ready=False
        )
        await eventually(lambda: len(children_of(runner.process.pid)) >= 5, limit=30)
        started = children_of(runner.process.pid)
        await eventually(lambda: sink_progress(tmp_path / "up.log") > 0, limit=30)
        runner.process.send_signal(signal.SIGINT)
        # The first stage: the source stops and exits; the sink waits for a second marker.
        await eventually(lambda: len(children_of(runner.process.pid)) == 4, limit=15)
        runner.process.send_signal(signal.SIGINT)
        with trio.fail_after(10):  # not the 15 s the runner gives a drain
            assert await runner.process.wait() == 130
        assert not [pid for pid in started if alive(pid)]
    assert "interrupted: every process was stopped; counts are partial" in runner.text


async def test_duration_asks_the_sources_to_stop_and_every_engram_finishes(tmp_path: Path) -> None:
    # Before, --duration stopped every process at once: sent and delivered were the last
    # progress reports ("cut ... partial"), and what was in flight was neither delivered nor
    # in the summary. Now the sources stop and end their streams, the rest drain behind them.
    up = await trio.run_process(
        [*CLI, "up", str(STORY), "--duration", "2", "--quiet"],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        cwd=REPO,
    )
    out, err = up.stdout.decode(), up.stderr.decode()
    assert up.returncode == 0, out + err
    lines = out.splitlines()
    sent = int(next(line for line in lines if line.startswith("sent ")).split()[1])
    assert 0 < sent < 2000  # the Story's 2,000 packets at 200/s would take 10 s
    assert f"delivered  {sent} (expected {sent})" in lines
    assert "lost       0 (expected - delivered - declared drops)" in lines
    assert any(
        line.startswith("stopped    --duration 2s asked the sources to stop") for line in lines
    )
    assert not [line for line in lines if line.startswith(("cut", "failed"))]
    assert "Traceback" not in err


async def _sink_with_no_source(cluster: Any, env: dict[str, str]) -> Any:
    """A sink engram (with its hub and connector) whose upstream never sends nor ends."""
    hub = await cluster.hub(STORY)
    connector = await cluster.connector(hub, "sink")
    engram = await cluster.engram(connector, "sink", "sink", {}, env)
    await engram.wait_for("ready")
    return engram


async def test_a_stopped_engram_cancels_a_handler_past_its_grace_and_exits_0(
    tmp_path: Path,
) -> None:
    async with open_cluster(tmp_path) as cluster:
        sink = await _sink_with_no_source(cluster, {"BOBRAVOZ_STOP_GRACE": "500ms"})
        sink.process.send_signal(signal.SIGTERM)
        with trio.fail_after(15):
            assert await sink.process.wait() == 0
    log = (tmp_path / "engram-sink.log").read_text()
    assert "did not return within 0.5s of the stop request: cancelled" in log, log[-2000:]
    assert "Traceback" not in log, log[-3000:]


async def test_a_second_sigterm_stops_an_engram_at_once(tmp_path: Path) -> None:
    async with open_cluster(tmp_path) as cluster:
        sink = await _sink_with_no_source(cluster, {"BOBRAVOZ_STOP_GRACE": "60s"})
        await sigterm_twice(sink, tmp_path / "engram-sink.log", "stop requested")


PAIR = """
apiVersion: bubustack.io/v1alpha1
kind: Story
metadata: {name: pair, namespace: default}
spec:
  pattern: realtime
  steps:
    - {name: source, ref: {name: source}}
    - {name: sink, ref: {name: sink}, needs: [source]}
"""


async def test_a_pod_stopping_together_loses_nothing_its_engram_sent(tmp_path: Path) -> None:
    # Kubernetes stops a pod's containers together: the source engram and its connector
    # sidecar get SIGTERM at once. Before, the connector stopped at once, so what the engram
    # still had to write (its last packets, its end marker) had nowhere to go: the sink never
    # finished. Now the connector serves on until the engram's Data stream has ended and what
    # it sent has left for the hub.
    (tmp_path / "pair.yaml").write_text(PAIR)
    async with open_cluster(tmp_path) as cluster:
        hub = await cluster.hub(tmp_path / "pair.yaml")
        sink_connector = await cluster.connector(hub, "sink")
        source_connector = await cluster.connector(hub, "source")
        sink = await cluster.engram(sink_connector, "sink", "sink", {})
        await sink.wait_for("ready")
        source = await cluster.engram(
            source_connector, "source", "source", {"count": 1_000_000, "rate": 500}
        )
        await sink.wait_for("progress")  # streaming end to end
        source.process.send_signal(signal.SIGTERM)
        source_connector.process.send_signal(signal.SIGTERM)
        with trio.fail_after(30):
            assert await source.process.wait() == 0
            assert await source_connector.process.wait() == 0
            summary = await sink.wait_for("summary")
        sent = source.find("summary")
    assert sent is not None
    assert sent.get("stopped") is True
    assert 0 < sent["sent"] < 1_000_000
    assert summary["received"] == sent["sent"]
    assert not source.find("losses")
