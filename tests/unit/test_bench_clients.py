"""The benchmark's clients and baseline: asyncio's own loop, and their framing arithmetic."""

from __future__ import annotations

import importlib
import subprocess
import sys
import textwrap
from types import ModuleType

import pytest
from procs import REPO

from bobravoz.protocol.gen.transport.v1 import ProcessRequest

#: Every module a benchmark client or the baseline relay process loads of ours.
CLIENT_MODULES = (
    "loadtests.bench_client",
    "loadtests.relay",
    "loadtests.nats_client",
    "loadtests.grpc_raw",
    "loadtests.benchwire",
)


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_client_processes_run_on_asyncios_default_loop() -> None:
    done = run_python(
        f"""
        import asyncio, importlib, sys
        for name in {CLIENT_MODULES!r}:
            importlib.import_module(name)
        from loadtests.benchwire import require_default_loop
        policy = asyncio.get_event_loop_policy()
        assert type(policy) is asyncio.DefaultEventLoopPolicy, type(policy)
        assert "trio_asyncio" not in sys.modules
        assert "bobravoz.runtime.grpc_bridge" not in sys.modules
        assert not [name for name in sys.modules if name.startswith("bobravoz.runtime")]
        require_default_loop()

        async def main():
            require_default_loop()
            return type(asyncio.get_running_loop())

        assert asyncio.run(main()) is asyncio.SelectorEventLoop
        print("default loop")
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "default loop"


def test_the_start_up_check_refuses_trio_asyncio() -> None:
    # What the old clients did by importing the bridge: trio-asyncio installs its policy.
    done = run_python(
        """
        import bobravoz.runtime.grpc_bridge
        from loadtests.benchwire import require_default_loop
        require_default_loop()
        """
    )
    assert done.returncode != 0
    assert "RuntimeError" in done.stderr


@pytest.fixture
def wire(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(REPO))
    return importlib.import_module("loadtests.benchwire")


def test_a_batch_is_framed_protobuf_with_each_stamp_in_its_payload(wire: ModuleType) -> None:
    head, tail = wire.process_request_template(256)
    framer = wire.Framer(head, tail, 8)
    data = framer.build(40, 3, 123_456_789)
    assert len(data) == 3 * framer.size
    offset = 0
    for sequence in (40, 41, 42):
        compressed, length = wire.GRPC_PREFIX.unpack_from(data, offset)
        assert not compressed
        message = ProcessRequest().parse(data[offset + 5 : offset + 5 + length])
        payload = message.packet.binary.payload
        assert len(payload) == 256
        assert wire.stamp_of(payload) == (sequence, 123_456_789)
        offset += 5 + length
    assert offset == len(data)


def test_stamps_are_found_however_reads_cut_the_messages(wire: ModuleType) -> None:
    head, tail = wire.process_request_template(64)
    framer = wire.Framer(head, tail, 4)
    heartbeat = wire.GRPC_PREFIX.pack(False, 3) + b"\x0a\x01\x00"
    data = framer.build(0, 2, 1_000) + heartbeat + framer.build(2, 2, 2_000)
    marker = data.index(wire.MAGIC, len(head))  # the second packet's marker
    # Reads that end inside a marker, inside a stamp, on a message boundary, in padding.
    cuts = [marker + 3, marker + len(wire.MAGIC) + 5, framer.size * 2, len(data) - 1, len(data)]
    reader = wire.StampReader()
    found = []
    start = 0
    for number, cut in enumerate(cuts):
        found.append(reader.feed(data[start:cut], 10_000 * (number + 1)))
        start = cut
    assert found == [1, 0, 1, 2, 0]
    assert reader.packets == 4
    assert reader.latencies_ns() == [9_000, 29_000, 38_000, 38_000]


def test_complete_frames_stops_before_a_cut_message(wire: ModuleType) -> None:
    head, tail = wire.process_request_template(64)
    data = wire.Framer(head, tail, 3).build(0, 3, 0)
    size = len(data) // 3
    assert wire.complete_frames(data) == (len(data), 3)
    assert wire.complete_frames(data[:-1]) == (2 * size, 2)
    assert wire.complete_frames(data[: size + 4]) == (size, 1)


def test_percentiles_are_nearest_rank(wire: ModuleType) -> None:
    arrivals = [ms * 1_000_000 for ms in range(1000, 0, -1)]
    summary = wire.latency_summary(arrivals)
    assert summary == {"p50_ms": 500.0, "p99_ms": 990.0, "p999_ms": 999.0}
    # The samples stay in arrival order: when the slow ones came is part of the story.
    assert arrivals[:2] == [1_000_000_000, 999_000_000]


def test_each_rounds_tail_is_shown_beside_the_pooled_one() -> None:
    from loadtests.bench import by_round

    runs = {"hub": [{"consumer": {"p999_ms": 4.58}}, {"consumer": {"p999_ms": 1.5}}]}
    assert by_round(runs, "hub") == "4.6 1.5"
    assert by_round(runs, "baseline") == "-"


def test_a_cell_wider_than_its_column_never_runs_into_the_next() -> None:
    from loadtests.bench import Table

    table = Table()
    table.add("  p99.9 ms in each round", "3.3 5.5 3.9", "4.7 7.8 19.0", "7.2 1.9 5.8", ratio=False)
    row = table.render().splitlines()[-1]
    assert row.split()[-10:] == [
        "3.3",
        "5.5",
        "3.9",
        "4.7",
        "7.8",
        "19.0",
        "-",
        "7.2",
        "1.9",
        "5.8",
    ]
    assert "3.94.7" not in row
