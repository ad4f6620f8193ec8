"""Unit: the hub's chunk reassembler (order, duplicates, validation, limits, expiry)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bobravoz.protocol.packets import EnvelopeFields
from bobravoz.runtime.chunks import (
    CHUNK_ERROR_REASONS,
    ChunkError,
    Reassembler,
    is_chunked,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


def make(**limits: Any) -> tuple[Reassembler[str], FakeClock]:
    clock = FakeClock()
    return Reassembler(clock=clock, **limits), clock


def chunk(
    index: int,
    count: int,
    payload: bytes | None,
    *,
    stream_id: str = "s",
    partition: str = "",
    chunk_id: str = "c",
    chunk_bytes: int | None = None,
    total_bytes: int = 0,
    first: str | None = None,
) -> dict[str, Any]:
    return {
        "stream_id": stream_id,
        "partition": partition,
        "chunk_id": chunk_id,
        "chunk_index": index,
        "chunk_count": count,
        "chunk_bytes": len(payload or b"") if chunk_bytes is None else chunk_bytes,
        "total_bytes": total_bytes,
        "payload": payload,
        "first": first if first is not None else f"packet{index}",
    }


def error_reason(reassembler: Reassembler[str], fields: dict[str, Any]) -> str:
    with pytest.raises(ChunkError) as caught:
        reassembler.add(**fields)
    assert caught.value.reason in CHUNK_ERROR_REASONS
    assert reassembler.counts[caught.value.reason] >= 1
    return caught.value.reason


def test_is_chunked() -> None:
    assert not is_chunked(None)
    assert not is_chunked(EnvelopeFields(stream_id="s", sequence=3, partition="p"))
    assert is_chunked(EnvelopeFields(chunk_id="c"))
    assert is_chunked(EnvelopeFields(chunk_count=2))
    assert is_chunked(EnvelopeFields(chunk_index=1))
    assert is_chunked(EnvelopeFields(chunk_bytes=1))
    assert is_chunked(EnvelopeFields(total_bytes=1))


def test_chunks_out_of_order_join_in_index_order_with_the_first_arrival() -> None:
    reassembler, _ = make()
    assert reassembler.add(**chunk(2, 3, b"bar", total_bytes=9)) is None
    assert reassembler.add(**chunk(0, 3, b"foo", total_bytes=9)) is None
    assert reassembler.in_flight_bytes == 6
    assembled = reassembler.add(**chunk(1, 3, b"baz", total_bytes=9))
    assert assembled is not None
    assert assembled.payload == b"foobazbar"
    assert assembled.first == "packet2"
    assert (assembled.stream_id, assembled.partition, assembled.chunk_id) == ("s", "", "c")
    assert reassembler.in_flight_bytes == 0
    assert len(reassembler) == 0
    assert reassembler.counts["assembled"] == 1


def test_a_single_chunk_completes_at_once() -> None:
    reassembler, _ = make()
    assembled = reassembler.add(**chunk(0, 1, b""))
    assert assembled is not None
    assert assembled.payload == b""


def test_duplicate_index_is_ignored_first_copy_wins() -> None:
    reassembler, _ = make()
    reassembler.add(**chunk(0, 2, b"aa"))
    assert reassembler.add(**chunk(0, 2, b"zz")) is None
    assert reassembler.counts["duplicate"] == 1
    assert reassembler.in_flight_bytes == 2
    assembled = reassembler.add(**chunk(1, 2, b"bb"))
    assert assembled is not None
    assert assembled.payload == b"aabb"


def test_stream_partition_and_chunk_id_separate_assemblies() -> None:
    reassembler, _ = make()
    reassembler.add(**chunk(0, 2, b"1"))
    reassembler.add(**chunk(0, 2, b"2", partition="p"))
    reassembler.add(**chunk(0, 2, b"3", stream_id="t"))
    reassembler.add(**chunk(0, 2, b"4", chunk_id="d"))
    assert len(reassembler) == 4
    assembled = reassembler.add(**chunk(1, 2, b"x", partition="p"))
    assert assembled is not None
    assert assembled.payload == b"2x"
    assert assembled.partition == "p"


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        (chunk(0, 2, b"x", chunk_id=""), "missing_chunk_id"),
        (chunk(0, 2, b"x", stream_id=""), "missing_stream_id"),
        (chunk(0, 0, b"x"), "missing_chunk_count"),
        (chunk(0, 2, None), "missing_binary"),
        (chunk(2, 2, b"x"), "index_out_of_range"),
        (chunk(-1, 2, b"x"), "index_out_of_range"),
        (chunk(0, 257, b"x"), "too_many_chunks"),
        (chunk(0, 2, b"xyz", chunk_bytes=2), "chunk_bytes_mismatch"),
        (chunk(0, 2, b"x" * 11), "chunk_too_large"),
        (chunk(0, 2, b"x", total_bytes=101), "too_many_bytes"),
    ],
)
def test_malformed_chunks_are_refused_and_nothing_is_stored(
    fields: dict[str, Any], reason: str
) -> None:
    reassembler, _ = make(max_chunk=10, max_bytes=100)
    assert error_reason(reassembler, fields) == reason
    assert len(reassembler) == 0
    assert reassembler.in_flight_bytes == 0


def test_chunk_bytes_zero_means_unset() -> None:
    reassembler, _ = make()
    assembled = reassembler.add(**chunk(0, 1, b"abc", chunk_bytes=0))
    assert assembled is not None


def test_chunk_count_mismatch_discards_the_assembly() -> None:
    reassembler, _ = make()
    reassembler.add(**chunk(0, 3, b"ab"))
    assert error_reason(reassembler, chunk(1, 4, b"cd")) == "count_mismatch"
    assert len(reassembler) == 0
    assert reassembler.in_flight_bytes == 0


def test_total_bytes_mismatch_on_completion() -> None:
    reassembler, _ = make()
    reassembler.add(**chunk(0, 2, b"ab", total_bytes=5))
    assert error_reason(reassembler, chunk(1, 2, b"cd", total_bytes=5)) == "total_bytes_mismatch"
    assert len(reassembler) == 0
    assert reassembler.in_flight_bytes == 0


def test_total_bytes_overrun_is_caught_before_completion() -> None:
    reassembler, _ = make()
    reassembler.add(**chunk(0, 3, b"ab", total_bytes=3))
    assert error_reason(reassembler, chunk(1, 3, b"cd", total_bytes=3)) == "total_bytes_mismatch"
    assert len(reassembler) == 0
    assert reassembler.in_flight_bytes == 0


def test_in_flight_byte_cap_is_enforced_before_storing() -> None:
    reassembler, _ = make(max_bytes=10)
    reassembler.add(**chunk(0, 3, b"x" * 6))
    # An existing assembly's next chunk.
    assert error_reason(reassembler, chunk(1, 3, b"y" * 5)) == "too_many_bytes"
    # A new assembly's first chunk.
    assert error_reason(reassembler, chunk(0, 2, b"z" * 5, chunk_id="d")) == "too_many_bytes"
    assert reassembler.in_flight_bytes == 6
    assert len(reassembler) == 1
    # A duplicate needs no room.
    assert reassembler.add(**chunk(0, 3, b"x" * 6)) is None
    assert reassembler.add(**chunk(1, 3, b"y" * 4)) is None
    assert reassembler.in_flight_bytes == 10


def test_assembly_limits_per_stream_and_overall() -> None:
    reassembler, _ = make(max_per_stream=2, max_total=3)
    reassembler.add(**chunk(0, 2, b"a", chunk_id="1"))
    reassembler.add(**chunk(0, 2, b"a", chunk_id="2"))
    assert error_reason(reassembler, chunk(0, 2, b"a", chunk_id="3")) == "too_many_per_stream"
    reassembler.add(**chunk(0, 2, b"a", stream_id="t", chunk_id="1"))
    assert (
        error_reason(reassembler, chunk(0, 2, b"a", stream_id="u", chunk_id="1"))
        == "too_many_assemblies"
    )
    # Chunks of assemblies already open still go in.
    assert reassembler.add(**chunk(1, 2, b"b", chunk_id="1")) is not None
    reassembler.add(**chunk(0, 2, b"a", chunk_id="3"))
    assert len(reassembler) == 3


def test_expiry_counts_from_the_last_chunk() -> None:
    reassembler, clock = make(ttl=10)
    reassembler.add(**chunk(0, 3, b"a", chunk_id="old"))
    clock.now += 5
    reassembler.add(**chunk(0, 3, b"b", chunk_id="new"))
    clock.now += 4
    reassembler.add(**chunk(1, 3, b"a", chunk_id="old"))  # refreshes "old"
    assert reassembler.next_deadline() == 65.0  # "new" is now the least recent
    assert reassembler.expire(65.0) == 0
    assert reassembler.expire(65.5) == 1
    assert len(reassembler) == 1
    assert reassembler.in_flight_bytes == 2
    clock.now = 100.0
    # add() drops what expired first, so the late chunk opens a fresh assembly.
    assert reassembler.add(**chunk(2, 3, b"c", chunk_id="old")) is None
    assert reassembler.counts["expired"] == 2
    assert reassembler.in_flight_bytes == 1
    assert len(reassembler) == 1


def test_drop_stream_releases_its_assemblies() -> None:
    reassembler, _ = make(max_per_stream=1)
    reassembler.add(**chunk(0, 2, b"ab"))
    reassembler.add(**chunk(0, 2, b"cd", stream_id="t"))
    assert reassembler.drop_stream("s") == 1
    assert reassembler.drop_stream("s") == 0
    assert reassembler.in_flight_bytes == 2
    reassembler.add(**chunk(0, 2, b"ef"))  # the per-stream slot is free again
    assert reassembler.counts["dropped"] == 1


@given(
    data=st.binary(max_size=300),
    chunk_size=st.integers(min_value=1, max_value=64),
    order=st.randoms(use_true_random=False),
    duplicates=st.lists(st.integers(min_value=0, max_value=1000), max_size=10),
)
def test_any_arrival_order_with_duplicates_gives_the_original_bytes(
    data: bytes, chunk_size: int, order: Any, duplicates: list[int]
) -> None:
    pieces = [data[i : i + chunk_size] for i in range(0, len(data), chunk_size)] or [b""]
    count = len(pieces)
    arrivals = list(range(count)) + [d % count for d in duplicates]
    order.shuffle(arrivals)
    reassembler, _ = make()
    results = []
    for position, index in enumerate(arrivals):
        fields = chunk(index, count, pieces[index], total_bytes=len(data), first=str(position))
        result = reassembler.add(**fields)
        if result is not None:
            results.append(result)
            # The rest of the arrivals are duplicates of a finished payload: a new assembly.
            break
    assert len(results) == 1
    assert results[0].payload == data
    assert results[0].first == "0"
    assert reassembler.in_flight_bytes == 0
