"""Unit: choosing an outbound packet's partition (modes, key paths, FNV-1a)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bobravoz.runtime.partitioning import (
    PartitionPolicy,
    choose_partition,
    fnv1a_32,
    hash_partition,
    partition_key_value,
)


def choose(
    policy: PartitionPolicy,
    *,
    existing: str = "",
    metadata: dict[str, str] | None = None,
    payload: dict[str, Any] | None = None,
    inputs: dict[str, Any] | None = None,
    stream_id: str = "s1",
    sequence: int = 7,
) -> str:
    return choose_partition(
        policy,
        existing=existing,
        metadata=metadata or {},
        payload=payload,
        inputs=inputs,
        stream_id=stream_id,
        sequence=sequence,
    )


def key_value(key: str | None, **fields: Any) -> str:
    fields.setdefault("metadata", {})
    fields.setdefault("payload", None)
    fields.setdefault("inputs", None)
    fields.setdefault("stream_id", "s1")
    fields.setdefault("sequence", 7)
    fields.setdefault("partition", "")
    return partition_key_value(key, **fields)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", 0x811C9DC5),
        (b"a", 0xE40C292C),
        (b"foobar", 0xBF9CF968),
    ],
)
def test_fnv1a_32_vectors(data: bytes, expected: int) -> None:
    assert fnv1a_32(data) == expected


def test_hash_partition_forms() -> None:
    assert hash_partition("foobar", 10) == f"p{0xBF9CF968 % 10}"
    assert hash_partition("foobar", None) == "hbf9cf968"
    assert hash_partition("foobar", 0) == "hbf9cf968"
    # Eight hex digits even when the hash has leading zeros.
    short = next(f"v{i}" for i in range(100_000) if fnv1a_32(f"v{i}".encode()) < 0x10000000)
    assert len(hash_partition(short, None)) == 9


def test_none_mode_keeps_the_existing_partition() -> None:
    policy = PartitionPolicy(mode="none", key="metadata.user")
    assert choose(policy, existing="old", metadata={"user": "u"}) == "old"
    assert choose(policy, metadata={"user": "u"}) == ""


def test_preserve_keeps_an_existing_partition_else_uses_the_key_value() -> None:
    policy = PartitionPolicy(mode="preserve", key="metadata.user")
    assert choose(policy, existing="old", metadata={"user": "u"}) == "old"
    assert choose(policy, metadata={"user": "  u7 "}) == "u7"


def test_preserve_hashes_a_value_longer_than_128_bytes() -> None:
    policy = PartitionPolicy(mode="preserve", key="metadata.user")
    exact = "x" * 128
    assert choose(policy, metadata={"user": exact}) == exact
    long = "x" * 129
    assert choose(policy, metadata={"user": long}) == hash_partition(long, None)
    wide = "é" * 65  # 130 UTF-8 bytes in 65 characters
    assert choose(policy, metadata={"user": wide}) == hash_partition(wide, None)


def test_hash_replaces_an_existing_partition_unless_sticky() -> None:
    metadata = {"user": "foobar"}
    hashed = choose(
        PartitionPolicy(mode="hash", key="metadata.user", partitions=4),
        existing="old",
        metadata=metadata,
    )
    assert hashed == f"p{0xBF9CF968 % 4}"
    sticky = PartitionPolicy(mode="hash", key="metadata.user", partitions=4, sticky=True)
    assert choose(sticky, existing="old", metadata=metadata) == "old"
    assert choose(sticky, existing="", metadata=metadata) == hashed


def test_hash_without_partitions_gives_the_hex_form() -> None:
    policy = PartitionPolicy(mode="hash", key="metadata.user")
    assert choose(policy, metadata={"user": "foobar"}) == "hbf9cf968"


@pytest.mark.parametrize("mode", ["preserve", "hash"])
def test_no_key_value_keeps_the_existing_partition(mode: str) -> None:
    policy = PartitionPolicy(mode=mode, key="metadata.user", partitions=3)  # type: ignore[arg-type]
    assert choose(policy, existing="", metadata={}) == ""
    assert choose(policy, existing="old", metadata={"user": "   "}) == "old"
    assert choose(PartitionPolicy(mode="hash", key="metadata.user"), existing="e") == "e"


def test_default_keys_in_order() -> None:
    metadata = {
        "bubu.partition": "d",
        "bubu.partition_key": "c",
        "partition-key": "b",
        "partition_key": "a",
    }
    assert key_value(None, metadata=metadata) == "a"
    del metadata["partition_key"]
    assert key_value("", metadata=metadata) == "b"
    del metadata["partition-key"]
    assert key_value("  ", metadata=metadata) == "c"
    del metadata["bubu.partition_key"]
    assert key_value(None, metadata=metadata) == "d"
    assert key_value(None, metadata={"partition_key": " ", "bubu.partition": "z"}) == "z"
    assert key_value(None, metadata={}) == ""


def test_metadata_paths() -> None:
    metadata = {"user": "u1", "bubu.tenant": "t1"}
    assert key_value("metadata.user", metadata=metadata) == "u1"
    assert key_value("metadata.bubu.tenant", metadata=metadata) == "t1"
    assert key_value("Metadata.user", metadata=metadata) == "u1"
    assert key_value("metadata.", metadata=metadata) == ""
    assert key_value("metadata.nobody", metadata=metadata) == ""
    # A bare key is a whole metadata key.
    assert key_value("user", metadata=metadata) == "u1"
    assert key_value("bubu.tenant", metadata=metadata) == "t1"


def test_payload_and_inputs_paths() -> None:
    payload = {
        "user": {"id": "  u9 ", "n": 3, "f": 3.0, "g": 2.5, "tiny": 1e-7, "ok": True},
        "tags": ["a", 1],
        "obj": {"b": 1, "a": None},
        "none": None,
    }
    assert key_value("payload.user.id", payload=payload) == "u9"
    assert key_value("payload.user.n", payload=payload) == "3"
    assert key_value("payload.user.f", payload=payload) == "3"
    assert key_value("payload.user.g", payload=payload) == "2.5"
    assert key_value("payload.user.tiny", payload=payload) == "0.0000001"
    assert key_value("payload.user.ok", payload=payload) == "true"
    assert key_value("payload.tags", payload=payload) == '["a",1]'
    assert key_value("payload.obj", payload=payload) == '{"a":null,"b":1}'
    assert key_value("payload.none", payload=payload) == ""
    assert key_value("payload.user.id.deeper", payload=payload) == ""
    assert key_value("payload.missing", payload=payload) == ""
    assert key_value("payload.user..id", payload=payload) == ""
    assert key_value("payload", payload=payload) == ""
    assert key_value("payload.user.id", payload=None) == ""
    assert key_value("inputs.user.id", inputs=payload) == "u9"
    assert key_value("inputs.user.id", payload=payload) == ""


def test_envelope_paths() -> None:
    assert key_value("envelope.stream_id", stream_id="st") == "st"
    assert key_value("envelope.streamId", stream_id="st") == "st"
    assert key_value("envelope.sequence", sequence=42) == "42"
    assert key_value("envelope.sequence", sequence=0) == ""
    assert key_value("envelope.partition", partition="p3") == "p3"
    assert key_value("envelope.other") == ""


def test_choose_passes_the_existing_partition_as_envelope_partition() -> None:
    policy = PartitionPolicy(mode="hash", key="envelope.partition", partitions=8)
    assert choose(policy, existing="foobar") == f"p{0xBF9CF968 % 8}"


def test_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="partitioning mode"):
        PartitionPolicy(mode="random")  # type: ignore[arg-type]


@given(
    value=st.text(min_size=1).filter(lambda text: text.strip() == text),
    partitions=st.integers(min_value=1, max_value=1000),
    existing=st.text(max_size=5),
)
def test_hash_choice_is_deterministic_and_in_range(
    value: str, partitions: int, existing: str
) -> None:
    policy = PartitionPolicy(mode="hash", key="metadata.k", partitions=partitions)
    first = choose(policy, existing=existing, metadata={"k": value})
    again = choose(policy, existing=existing, metadata={"k": value})
    assert first == again
    assert first.startswith("p")
    assert 0 <= int(first[1:]) < partitions
    assert int(first[1:]) == fnv1a_32(value.encode()) % partitions
