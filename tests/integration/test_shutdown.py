"""Integration: SIGTERM/SIGINT shut processes down cleanly, and `bobravoz up` leaves nothing
behind when interrupted."""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import pytest
import trio
from procs import CLI, REPO, eventually, open_cluster

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
