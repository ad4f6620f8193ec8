"""What the hub forwards never breaks a protoc-generated consumer.

Scope: :func:`~bobravoz.protocol.validation.validate_packet` (the general path) and
:func:`~bobravoz.protocol.scan.scan_process` (the one-pass path) on ``payload``/``inputs``
Structs: proto3 ``string`` fields (keys, ``string_value``) must be UTF-8 and Struct/ListValue
nesting is bounded by ``MAX_STRUCT_DEPTH``; and the wire rules protobuf's parsers hold every
message to (field numbers, varint lengths). The reference consumer is protoc's Python (upb)
classes (the ``pb2`` fixture): every packet the validator accepts must parse there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from bobravoz.protocol import scan
from bobravoz.protocol.validation import MAX_STRUCT_DEPTH, validate_packet
from bobravoz.protocol.wire import (
    PacketLayout,
    WireFormatError,
    encode_len_field,
    encode_varint,
    iter_fields,
)

DATA = PacketLayout.DATA_PACKET
IDENTITY_KEYS = (b"storyrun-name", b"storyrun-namespace", b"current-step-id")
LIMIT = 1 << 20
#: A byte string that is not UTF-8 (a lone continuation byte, an invalid start byte).
NOT_UTF8 = [b"\xff", b"a\x80b", b"\xc3", b"\xed\xa0\x80"]


@dataclass(frozen=True)
class Encoded:
    """A Struct/ListValue/Value's wire bytes, how deep its containers nest, and whether every
    string in it is UTF-8."""

    data: bytes
    depth: int
    utf8: bool


def text(value: str | bytes) -> tuple[bytes, bool]:
    if isinstance(value, bytes):
        try:
            value.decode("utf-8")
        except UnicodeDecodeError:
            return value, False
        return value, True
    return value.encode(), True


def struct(entries: list[tuple[str | bytes, Encoded]]) -> Encoded:
    """A Struct of (key, Value) entries: one level deeper than its deepest value."""
    data = b""
    depth = 0
    utf8 = True
    for key, value in entries:
        raw_key, key_ok = text(key)
        data += encode_len_field(1, encode_len_field(1, raw_key) + encode_len_field(2, value.data))
        depth = max(depth, value.depth)
        utf8 = utf8 and key_ok and value.utf8
    return Encoded(data, depth + 1, utf8)


def listing(values: list[Encoded]) -> Encoded:
    data = b"".join(encode_len_field(1, value.data) for value in values)
    return Encoded(data, max((v.depth for v in values), default=0) + 1, all(v.utf8 for v in values))


def value_of(container: Encoded, *, as_list: bool = False) -> Encoded:
    """A Value holding a Struct (field 5) or a ListValue (field 6)."""
    return Encoded(
        encode_len_field(6 if as_list else 5, container.data), container.depth, container.utf8
    )


def string_value(raw: str | bytes) -> Encoded:
    data, ok = text(raw)
    return Encoded(encode_len_field(3, data), 0, ok)


scalars = st.one_of(
    st.builds(string_value, st.one_of(st.text(max_size=6), st.sampled_from(NOT_UTF8))),
    st.just(Encoded(b"\x08\x00", 0, True)),  # null_value
    st.just(Encoded(b"\x20\x01", 0, True)),  # bool_value
    st.builds(
        lambda n: Encoded(b"\x11" + n.to_bytes(8, "little"), 0, True), st.integers(0, 2**64 - 1)
    ),
)
keys = st.one_of(st.text(max_size=5), st.sampled_from(NOT_UTF8))


def _containers(children: st.SearchStrategy[Encoded]) -> st.SearchStrategy[Encoded]:
    return st.one_of(
        st.builds(
            lambda entries: value_of(struct(entries)),
            st.lists(st.tuples(keys, children), max_size=3),
        ),
        st.builds(
            lambda items: value_of(listing(items), as_list=True), st.lists(children, max_size=3)
        ),
    )


values = st.recursive(scalars, _containers, max_leaves=12)


def chain(depth: int, *, lists: bool = False, leaf: Encoded | None = None) -> Encoded:
    """A payload Struct nesting ``depth`` containers (Structs, or a Struct then ListValues)."""
    inner = leaf or string_value("x")
    for level in range(depth - 1, 0, -1):
        if lists:
            inner = value_of(listing([inner]), as_list=True)
        else:
            inner = value_of(struct([("k", inner)]))
        del level
    return struct([("top", inner)])


@st.composite
def payloads(draw: st.DrawFn) -> Encoded:
    """Random Structs, and chains around the depth limit (which random trees rarely reach)."""
    if draw(st.booleans()):
        return struct(draw(st.lists(st.tuples(keys, values), max_size=4)))
    depth = draw(st.integers(MAX_STRUCT_DEPTH - 2, MAX_STRUCT_DEPTH + 3))
    leaf = draw(scalars)
    return chain(depth, lists=draw(st.booleans()), leaf=leaf)


def packet_with(payload: Encoded, *, field: int = 2, extra: bytes = b"") -> bytes:
    """A DataPacket with ``payload`` as its ``payload`` (2) or ``inputs`` (3) Struct."""
    return encode_len_field(1, encode_len_field(1, b"k") + encode_len_field(2, b"v")) + (
        encode_len_field(field, payload.data) + extra
    )


def parses(pb2: dict[str, Any], name: str, data: bytes) -> bool:
    try:
        pb2[name].FromString(data)
    except Exception:  # noqa: BLE001 - any refusal of the reference parser counts
        return False
    return True


def fast_answer(packet: bytes) -> int:
    raw = encode_len_field(1, packet)
    return scan.scan_process(raw, LIMIT, IDENTITY_KEYS)[0]


# -- the two limits, on both paths ----------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(payload=payloads(), field=st.sampled_from([2, 3]))
def test_structs_are_accepted_exactly_when_utf8_and_shallow_enough(
    pb2: dict[str, Any], payload: Encoded, field: int
) -> None:
    packet = packet_with(payload, field=field)
    violation = validate_packet(packet, DATA)
    expected_ok = payload.utf8 and payload.depth <= MAX_STRUCT_DEPTH
    if expected_ok:
        assert violation is None
        # A protoc-generated consumer parses what the hub forwards, two messages down.
        assert parses(pb2, "ProcessResponse", encode_len_field(1, packet))
        # ... and the one-pass path answers it (plain Structs are not deferred).
        assert fast_answer(packet) == scan.DATA
    else:
        assert violation is not None
        assert violation.reason in {"invalid_utf8", "nesting_too_deep"}
        if not payload.utf8 and payload.depth <= MAX_STRUCT_DEPTH:
            assert violation.reason == "invalid_utf8"
        assert fast_answer(packet) == scan.SLOW  # the general path decides (and counts)
        assert violation.field.startswith("payload" if field == 2 else "inputs")


@pytest.mark.parametrize("lists", [False, True], ids=["structs", "lists"])
def test_the_depth_limit_is_exact(pb2: dict[str, Any], lists: bool) -> None:
    deepest = packet_with(chain(MAX_STRUCT_DEPTH, lists=lists))
    assert validate_packet(deepest, DATA) is None
    assert fast_answer(deepest) == scan.DATA
    assert parses(pb2, "ProcessResponse", encode_len_field(1, deepest))
    too_deep = packet_with(chain(MAX_STRUCT_DEPTH + 1, lists=lists))
    violation = validate_packet(too_deep, DATA)
    assert violation is not None
    assert violation.reason == "nesting_too_deep"
    assert fast_answer(too_deep) == scan.SLOW


def test_the_issue_cases_are_refused(pb2: dict[str, Any]) -> None:
    """A Struct nested 34 levels (a generated consumer refuses it) and one carrying invalid
    UTF-8 (likewise) are refused with their reasons."""
    deep = packet_with(chain(34))
    assert not parses(pb2, "ProcessResponse", encode_len_field(1, deep))
    assert validate_packet(deep, DATA).reason == "nesting_too_deep"  # type: ignore[union-attr]
    bad = packet_with(struct([("k", string_value(b"\xff\xfe"))]))
    assert not parses(pb2, "ProcessResponse", encode_len_field(1, bad))
    violation = validate_packet(bad, DATA)
    assert violation is not None
    assert (violation.reason, violation.field) == ("invalid_utf8", 'payload["k"]')
    bad_key = packet_with(struct([(b"\xc3", string_value("v"))]))
    assert validate_packet(bad_key, DATA).reason == "invalid_utf8"  # type: ignore[union-attr]
    bad_metadata = encode_len_field(1, encode_len_field(1, b"k") + encode_len_field(2, b"\xff"))
    assert validate_packet(bad_metadata, DATA).reason == "invalid_utf8"  # type: ignore[union-attr]


def test_the_depth_limit_is_restated_for_mypyc() -> None:
    assert scan._MAX_DEPTH == MAX_STRUCT_DEPTH  # noqa: SLF001


# -- accepted means parseable, for damaged bytes too ------------------------------------------


@settings(max_examples=600, deadline=None)
@given(
    payload=payloads(),
    at=st.integers(0, 400),
    replacement=st.binary(min_size=0, max_size=6),
    cut=st.integers(0, 8),
)
@example(  # a field number past protobuf's 2**29 - 1 (upb: "wire format was corrupt")
    payload=Encoded(b"", 1, True),
    at=10_000,
    replacement=encode_varint((1 << 29) << 3) + b"\x01",
    cut=0,
)
@example(  # a length varint of six bytes
    payload=Encoded(b"", 1, True), at=10_000, replacement=b"\x5a\x80\x80\x80\x80\x80\x00", cut=0
)
def test_whatever_the_validator_accepts_a_generated_consumer_parses(
    pb2: dict[str, Any], payload: Encoded, at: int, replacement: bytes, cut: int
) -> None:
    packet = bytearray(packet_with(payload))
    at = min(at, len(packet))
    packet[at : at + len(replacement) // 2] = replacement
    damaged = bytes(packet[: max(0, len(packet) - cut)])
    if validate_packet(damaged, DATA) is None:
        assert parses(pb2, "DataPacket", damaged), damaged.hex()
        assert parses(pb2, "ProcessResponse", encode_len_field(1, damaged)), damaged.hex()
    if fast_answer(damaged) != scan.SLOW:
        assert validate_packet(damaged, DATA) is None


@pytest.mark.parametrize(
    "raw",
    [
        encode_varint((1 << 29) << 3) + b"\x01",  # field number 2**29
        encode_varint((1 << 32) << 3) + b"\x01",
        b"\x5a\x80\x80\x80\x80\x80\x00",  # a length in six bytes
        b"\x80\x80\x80\x80\x80\x08\x01",  # a tag in six bytes
        b"\x5a\xff\xff\xff\xff\x0f",  # a length of 4 GiB
    ],
)
def test_wire_rules_of_protobuf_parsers_hold(pb2: dict[str, Any], raw: bytes) -> None:
    assert not parses(pb2, "DataPacket", raw)
    with pytest.raises(WireFormatError):
        list(iter_fields(raw))
    assert validate_packet(raw, DATA) is not None
