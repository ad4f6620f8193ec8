"""The one-pass scanner agrees with the general tools whenever it answers, and answers for the
packets engrams send."""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from bobravoz.protocol import scan
from bobravoz.protocol.gen.transport.v1 import (
    AudioFrame,
    BinaryFrame,
    DataPacket,
    FlowControl,
    ProcessRequest,
    StreamEnvelope,
)
from bobravoz.protocol.packets import (
    is_heartbeat,
    split_process_message,
    wrap_process_message,
)
from bobravoz.protocol.validation import validate_packet
from bobravoz.protocol.wire import PacketLayout, convert_layout, encode_len_field, encode_varint

DATA = PacketLayout.DATA_PACKET
REQUEST = PacketLayout.DATA_REQUEST
IDENTITY_KEY = b"storyrun-name"
IDENTITY = {"storyrun-name": "run", "storyrun-namespace": "ns", "current-step-id": "sink"}
LIMIT = 4096

keys = st.sampled_from(["a", "trace", "bubu-heartbeat", "storyrun-name", "é", "", "k" * 130])
values = st.one_of(
    st.sampled_from(["true", "TRUE", "false", "", "x" * 200, "ü", "K" * 3]),
    st.text(max_size=8),
)
packets = st.builds(
    DataPacket,
    metadata=st.dictionaries(keys, values, max_size=4),
    binary=st.one_of(
        st.none(),
        st.builds(
            BinaryFrame,
            payload=st.binary(max_size=300),
            mime_type=st.sampled_from(["", "application/octet-stream", "é" * 300]),
        ),
    ),
    audio=st.one_of(st.none(), st.builds(AudioFrame, pcm=st.binary(max_size=4))),
    envelope=st.one_of(
        st.none(), st.builds(StreamEnvelope, stream_id=st.text(max_size=3), sequence=st.integers(0))
    ),
)
extras = st.lists(
    st.sampled_from(
        [
            b"",
            encode_len_field(1, b"\x0a\x01a\x12\x01b"),  # another packet field (merged)
            encode_len_field(2, bytes(FlowControl(ack=3))),
            b"\x08\x01",  # a varint field in a ProcessRequest
        ]
    ),
    max_size=2,
)


def requests(packet: DataPacket | None, tail: list[bytes]) -> bytes:
    """A ProcessRequest with ``packet`` and extra raw fields after it."""
    head = bytes(ProcessRequest(packet=packet)) if packet is not None else b""
    return head + b"".join(tail)


def check_agrees(raw: bytes, sequence: int) -> int:
    """Assert the scanner's answer for ``raw`` equals the general tools'; return its kind."""
    stamp = scan.TargetStamp(metadata_updates=IDENTITY, stream_id="ns/run/sink")
    kind, start, end, envelope, _ = scan.scan_process(raw, LIMIT, stamp.keys)
    if kind == scan.SLOW:
        return kind
    packet, _flow = split_process_message(raw)
    if kind == scan.NO_PACKET:
        assert packet is None
        return kind
    assert packet == raw[start:end]
    assert len(packet) <= LIMIT
    assert validate_packet(packet, DATA) is None
    heartbeat = is_heartbeat(packet, DATA)
    assert heartbeat == (kind == scan.HEARTBEAT)
    expected = wrap_process_message(stamp.general(packet, None if heartbeat else sequence))
    if envelope < 0:  # with an envelope, the hub restamps it through the general path
        assert stamp.stamp(raw, start, end, 0 if heartbeat else sequence) == expected
    assert scan.restamp(stamp, packet, None if heartbeat else sequence) == expected
    request = convert_layout(packet, DATA, REQUEST)
    kind_as_request, _, _ = scan.scan_packet(request, 0, len(request), scan.DATA_REQUEST_LAYOUT, ())
    assert kind_as_request == kind or IDENTITY_KEY in packet  # keys only matter to the hub
    table = scan.retag_table(scan.DATA_PACKET_LAYOUT, scan.DATA_REQUEST_LAYOUT)
    assert scan.retag(raw, start, end, table) == request
    return kind


@settings(max_examples=400, deadline=None)
@given(packet=st.one_of(st.none(), packets), tail=extras, sequence=st.integers(1, 2**64 - 1))
def test_scan_agrees_with_the_general_path(
    packet: DataPacket | None, tail: list[bytes], sequence: int
) -> None:
    check_agrees(requests(packet, tail), sequence)


@settings(max_examples=400, deadline=None)
@given(
    packet=packets,
    cut=st.integers(0, 400),
    flip=st.tuples(st.integers(0, 400), st.integers(0, 255)),
    sequence=st.integers(1, 2**32),
)
@example(packet=DataPacket(metadata={"a": "b"}), cut=0, flip=(2, 0x80), sequence=1)
def test_scan_of_damaged_bytes_never_wrongly_answers(
    packet: DataPacket, cut: int, flip: tuple[int, int], sequence: int
) -> None:
    raw = bytearray(requests(packet, []))
    at, value = flip
    if raw and at < len(raw):
        raw[at] = value
    check_agrees(bytes(raw[: len(raw) - cut] if cut < len(raw) else raw), sequence)


@given(data=st.binary(max_size=200))
def test_scan_never_raises(data: bytes) -> None:
    check_agrees(data, 7)


def test_the_packets_engrams_send_take_the_one_pass_path() -> None:
    """Binary, JSON-payload and metadata packets and heartbeats are answered, not deferred."""
    cases = [
        DataPacket(binary=BinaryFrame(payload=b"x" * 256, mime_type="audio/opus")),
        DataPacket(metadata={"trace": "abc", "k": "ü" * 20}, payload=None),
        DataPacket(metadata={"bubu-heartbeat": "true"}),
        DataPacket(metadata={"v": "x" * 1000}, binary=BinaryFrame(payload=bytes(3000))),
    ]
    cases.append(DataPacket(binary=BinaryFrame(payload=b"x"), envelope=StreamEnvelope("s", 9)))
    kinds = [check_agrees(bytes(ProcessRequest(packet=packet)), 5) for packet in cases]
    assert kinds == [scan.DATA, scan.DATA, scan.HEARTBEAT, scan.DATA, scan.DATA]
    flow_only = bytes(ProcessRequest(flow=FlowControl(ack=1)))
    assert check_agrees(flow_only, 5) == scan.NO_PACKET


def test_the_layout_numbers_restated_for_mypyc_agree() -> None:
    assert PacketLayout.DATA_PACKET.value == scan.DATA_PACKET_LAYOUT
    assert PacketLayout.DATA_REQUEST.value == scan.DATA_REQUEST_LAYOUT


@settings(max_examples=300, deadline=None)
@given(packet=packets, flip=st.tuples(st.integers(0, 300), st.integers(0, 255)))
def test_scan_of_data_requests_agrees_with_the_general_checks(
    packet: DataPacket, flip: tuple[int, int]
) -> None:
    """The engram side of a connector: ``DataRequest`` bytes, damaged or not."""
    raw = bytearray(convert_layout(bytes(packet), DATA, REQUEST))
    at, value = flip
    if at < len(raw):
        raw[at] = value
    data = bytes(raw)
    kind, _, _ = scan.scan_packet(data, 0, len(data), scan.DATA_REQUEST_LAYOUT, ())
    if kind == scan.SLOW:
        return
    assert validate_packet(data, REQUEST) is None
    assert (kind == scan.HEARTBEAT) == is_heartbeat(data, REQUEST)
    table = scan.retag_table(scan.DATA_REQUEST_LAYOUT, scan.DATA_PACKET_LAYOUT)
    assert scan.retag(data, 0, len(data), table) == convert_layout(data, REQUEST, DATA)


def test_what_the_general_path_must_decide_is_deferred() -> None:
    """Chunked envelopes, identity keys, repeated packet fields, oversize and invalid packets."""
    stamp = scan.TargetStamp(metadata_updates=IDENTITY, stream_id="s")
    deferred = [
        DataPacket(envelope=StreamEnvelope(stream_id="x", chunk_id="c", chunk_count=2)),
        DataPacket(metadata={"storyrun-name": "forged"}),
        DataPacket(binary=BinaryFrame(payload=bytes(LIMIT + 1))),
        DataPacket(metadata={"": "empty key"}),
    ]
    for packet in deferred:
        raw = bytes(ProcessRequest(packet=packet))
        assert scan.scan_process(raw, LIMIT, stamp.keys)[0] == scan.SLOW, packet
    bad_utf8 = encode_len_field(1, encode_len_field(1, b"\x0a\x01k\x12\x02\xff\xfe"))
    assert scan.scan_process(bad_utf8, LIMIT, stamp.keys)[0] == scan.SLOW
    twice = encode_len_field(1, b"") + encode_len_field(1, b"")
    assert scan.scan_process(twice, LIMIT, stamp.keys)[0] == scan.SLOW
    long_length = b"\x0a" + encode_varint(2**40)
    assert scan.scan_process(long_length, LIMIT, stamp.keys)[0] == scan.SLOW


@settings(max_examples=200, deadline=None)
@given(packets=st.lists(st.one_of(st.none(), packets), max_size=6), sequence=st.integers(1, 2**40))
def test_stamp_run_equals_scanning_and_stamping_one_by_one(
    packets: list[DataPacket | None], sequence: int
) -> None:
    """A run stops at the first message the per-message path must take, and stamps the ones
    before it exactly as one-by-one stamping would, numbering data packets consecutively."""
    stamp = scan.TargetStamp(metadata_updates=IDENTITY, stream_id="ns/run/sink")
    batch = [requests(packet, []) for packet in packets]
    out: list[bytes] = []
    stop, next_sequence, data, size = scan.stamp_run(
        batch, 0, LIMIT, stamp.keys, stamp, sequence, out
    )
    expected: list[bytes] = []
    number = sequence
    for raw in batch[:stop]:
        kind, start, end, envelope, _ = scan.scan_process(raw, LIMIT, stamp.keys)
        assert kind in (scan.DATA, scan.HEARTBEAT)
        assert envelope < 0
        expected.append(stamp.stamp(raw, start, end, number if kind == scan.DATA else 0))
        number += kind == scan.DATA
    assert out == expected
    assert next_sequence == number
    assert data == number - sequence
    if stop < len(batch):
        kind, _, _, envelope, _ = scan.scan_process(batch[stop], LIMIT, stamp.keys)
        assert kind not in (scan.DATA, scan.HEARTBEAT) or envelope >= 0
    del size
