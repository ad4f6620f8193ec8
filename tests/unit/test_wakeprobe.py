"""The bench's machine floor (``loadtests/wakeprobe.py``): stamps parsed however reads cut
them, a real two-process probe, and the sentence under the table."""

from __future__ import annotations

import importlib
import socket
import struct
import time
from types import ModuleType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from procs import REPO


def _loadtests(module: str) -> ModuleType:
    """``loadtests.<module>`` (the repository root is not on pytest's path)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(REPO))
        return importlib.import_module(f"loadtests.{module}")


wakeprobe = _loadtests("wakeprobe")
bench = _loadtests("bench")
receive, probe, floor_line = wakeprobe.receive, wakeprobe.probe, bench.floor_line

_STAMP = struct.Struct("<q")
_MS = 1_000_000


@settings(max_examples=50, deadline=None)
@given(
    ages_ms=st.lists(st.integers(min_value=1, max_value=50), min_size=1, max_size=40),
    cuts=st.lists(st.integers(min_value=1, max_value=17), max_size=40),
)
def test_every_stamp_is_read_whatever_the_reads_cut(ages_ms: list[int], cuts: list[int]) -> None:
    now = time.time_ns()
    data = b"".join(_STAMP.pack(now - age * _MS) for age in ages_ms)
    left, right = socket.socketpair()
    with left, right:
        position = 0
        for cut in cuts:  # written in pieces that split stamps anywhere
            left.sendall(data[position : position + cut])
            position += cut
        left.sendall(data[position:])
        latencies = receive(right, len(ages_ms))
    assert len(latencies) == len(ages_ms)
    # Each latency is at least the age its stamp was written with, in the order written.
    assert all(latency >= age * _MS for latency, age in zip(latencies, ages_ms, strict=True))
    assert all(
        latency < (age + 10_000) * _MS for latency, age in zip(latencies, ages_ms, strict=True)
    )


def test_a_closed_sender_ends_the_read_with_what_came() -> None:
    left, right = socket.socketpair()
    with right:
        with left:
            left.sendall(_STAMP.pack(time.time_ns()) + b"\x00\x01")  # one stamp and a cut one
        assert len(receive(right, 5)) == 1


def test_the_probe_times_every_stamp_a_separate_sender_process_writes() -> None:
    result = probe(2000.0, 0.05)
    assert result["event"] == "result"
    assert result["samples"] == len(result["latencies_ns"]) == 100
    assert all(latency > 0 for latency in result["latencies_ns"])
    assert 0 < result["p50_ms"] <= result["p99_ms"] <= result["p999_ms"] <= result["max_ms"]


def test_the_floor_sentence_pools_the_rounds_and_shows_each() -> None:
    rounds = [
        {"rate": 1000.0, "p999_ms": 0.1, "max_ms": 0.1, "latencies_ns": [100_000] * 1000},
        {
            "rate": 1000.0,
            "p999_ms": 9.7,
            "max_ms": 9.8,
            "latencies_ns": [200_000] * 990 + [9_800_000] * 10,
        },
    ]
    line = floor_line(rounds)
    assert line is not None
    assert line.startswith("machine floor at 1,000/s, one loopback TCP hop")
    # 2,000 samples pooled: the p50 is a 0.1 ms one, the p99 and p99.9 the round with a stall.
    assert "p50 0.10, p99 0.20, p99.9 9.80 ms pooled" in line
    assert "p99.9 in each round: 0.1 9.7 ms; worst 9.8 ms" in line
    assert floor_line([]) is None
