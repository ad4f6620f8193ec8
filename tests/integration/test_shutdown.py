"""Integration: SIGTERM/SIGINT shut processes down cleanly, and `bobravoz up` leaves nothing
behind when interrupted."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import trio
from procs import CLI, REPO, open_cluster

pytestmark = pytest.mark.integration

STORY = REPO / "examples" / "stories" / "pipeline.yaml"


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


async def test_interrupted_up_stops_every_process(tmp_path: Path) -> None:
    async with open_cluster(tmp_path) as cluster:
        runner = await cluster.start(
            "up", [*CLI, "up", str(STORY), "--duration", "60", "--quiet"], ready=False
        )
        for _ in range(150):  # hub, 3 connectors and 3 engrams, within 30 s
            if len(children_of(runner.process.pid)) >= 7:
                break
            await trio.sleep(0.2)
        else:
            pytest.fail("bobravoz up did not start its 7 processes")
        started = children_of(runner.process.pid)
        await trio.sleep(1)
        runner.process.send_signal(signal.SIGINT)
        with trio.fail_after(20):
            assert await runner.process.wait() == 130
        assert not [pid for pid in started if alive(pid)]
