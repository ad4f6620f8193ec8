"""Wire pin: our classes vs protoc's google-protobuf classes, and every field number vs the
contract table (wire-contract.md), for every message of ``transport.v1``."""

from __future__ import annotations

from typing import Any

import betterproto2
import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bobravoz.protocol.gen import transport
from bobravoz.protocol.gen.google.protobuf import Struct
from bobravoz.protocol.gen.transport.v1 import (
    AudioFrame,
    BinaryFrame,
    BindingInfo,
    ControlAction,
    ControlError,
    ControlRequest,
    ControlResponse,
    FlowControl,
    FlowControlSignal,
    PartitionAck,
    StreamEnvelope,
    TransportConfig,
    TransportDescriptor,
    VideoFrame,
)

V1 = transport.v1
PACKET = ["metadata", "payload", "inputs", "transports", "audio", "video", "binary", "envelope"]
PACKET_NUMBERS = {
    "DataPacket": [1, 2, 3, 4, 5, 6, 7, 8],
    "DataRequest": [4, 5, 6, 7, 1, 2, 3, 8],
    "DataResponse": [4, 5, 6, 7, 1, 2, 3, 8],
    "PublishRequest": [4, 5, 6, 7, 1, 2, 3, 8],
    "HubPushRequest": [1, 2, 3, 7, 4, 5, 6, 8],
    "HubPushResponse": [1, 2, 3, 4, 5, 6, 7, 8],
}
#: The contract, transcribed from wire-contract.md: message -> {field: number}.
CONTRACT: dict[str, dict[str, int]] = {
    **{name: dict(zip(PACKET, numbers, strict=True)) for name, numbers in PACKET_NUMBERS.items()},
    "AudioFrame": {"pcm": 1, "sample_rate_hz": 2, "channels": 3, "codec": 4, "timestamp_ms": 5},
    "VideoFrame": {"payload": 1, "codec": 2, "width": 3, "height": 4, "timestamp_ms": 5, "raw": 6},
    "BinaryFrame": {"payload": 1, "mime_type": 2, "timestamp_ms": 3},
    "ProcessRequest": {"packet": 1, "flow": 2},
    "ProcessResponse": {"packet": 1, "flow": 2},
    "TransportDescriptor": {"name": 1, "kind": 2, "mode": 3, "typed_config": 5},
    "TransportConfig": {"transport_ref": 1, "mode_reason": 2},
    "StreamEnvelope": {
        "stream_id": 1,
        "sequence": 2,
        "partition": 3,
        "chunk_id": 4,
        "chunk_index": 5,
        "chunk_count": 6,
        "chunk_bytes": 7,
        "total_bytes": 8,
    },
    "FlowControl": {
        "ack": 1,
        "credits_messages": 2,
        "credits_bytes": 3,
        "partition_acks": 6,
        "signal": 7,
    },
    "PartitionAck": {"partition": 1, "ack": 2},
    "ControlRequest": {"action": 1, "metadata": 2, "flow": 3, "custom_action": 4},
    "ControlResponse": {"action": 1, "metadata": 2, "flow": 3, "custom_action": 4, "error": 5},
    "ControlError": {"code": 1, "message": 2, "details": 3},
    "BindingInfo": {
        "transport_ref": 1,
        "driver": 2,
        "endpoint": 3,
        "audio_codecs": 4,
        "video_codecs": 5,
        "payload": 6,
        "binary_types": 7,
        "protocol_version": 8,
    },
}


def test_every_message_is_in_the_contract_table(pb2: dict[str, type]) -> None:
    assert set(pb2) == set(CONTRACT)


@pytest.mark.parametrize("name", sorted(CONTRACT))
def test_field_numbers_match_the_contract(pb2: dict[str, type], name: str) -> None:
    descriptor: Descriptor = pb2[name].DESCRIPTOR  # type: ignore[attr-defined]
    assert {field.name: field.number for field in descriptor.fields} == CONTRACT[name]


def test_enum_numbers_match_the_contract(pb2: dict[str, type]) -> None:
    module = __import__(pb2["ControlRequest"].__module__, fromlist=["ControlAction"])
    actions = module.ControlAction.DESCRIPTOR.values_by_name
    expected = [
        "UNSPECIFIED",
        "NOOP",
        "START",
        "STOP",
        "START_UPSTREAM",
        "STOP_UPSTREAM",
        "START_DOWNSTREAM",
        "STOP_DOWNSTREAM",
        "HEARTBEAT",
        "CONNECTOR_READY",
        "CONNECTOR_CAPABILITIES",
        "HANDOFF_DRAINING",
        "HANDOFF_CUTOVER",
        "HANDOFF_READY",
        "ACK",
        "ERROR",
        "CODEC_SELECT",
    ]
    assert {name: value.number for name, value in actions.items()} == {
        f"CONTROL_ACTION_{name}": number for number, name in enumerate(expected)
    }
    signals = module.FlowControlSignal.DESCRIPTOR.values_by_name
    assert {name: value.number for name, value in signals.items()} == {
        "FLOW_CONTROL_SIGNAL_UNSPECIFIED": 0,
        "FLOW_CONTROL_SIGNAL_PAUSE": 1,
        "FLOW_CONTROL_SIGNAL_RESUME": 2,
    }
    descriptor = module.TransportDescriptor.DESCRIPTOR
    assert 4 not in {field.number for field in descriptor.fields}


def ours(name: str) -> type[betterproto2.Message]:
    cls: type[betterproto2.Message] = getattr(V1, name)
    return cls


def both_ways(pb2_class: type, message: betterproto2.Message) -> Any:
    """Our bytes parse in protoc's class and back to an equal message of ours."""
    theirs = pb2_class()
    theirs.ParseFromString(bytes(message))
    back = type(message).parse(theirs.SerializeToString(deterministic=True))
    assert back == message
    return theirs


def frames() -> dict[str, Any]:
    return {
        "audio": AudioFrame(
            pcm=b"\x01\x02", sample_rate_hz=48000, channels=2, codec="opus", timestamp_ms=2**40
        ),
        "video": VideoFrame(
            payload=b"v", codec="h264", width=1920, height=1080, timestamp_ms=7, raw=True
        ),
        "binary": BinaryFrame(payload=b"\x00b", mime_type="application/json", timestamp_ms=9),
    }


def full_packet(name: str, frame: str) -> betterproto2.Message:
    return ours(name)(
        metadata={"storyrun-name": "run", "ключ": "значение"},
        payload=Struct.from_dict({"text": "hi", "n": 1.5, "list": [1.0, "a", None, True]}),
        inputs=Struct.from_dict({"nested": {"deep": [{"x": False}]}}),
        transports=[
            TransportDescriptor(
                name="t",
                kind="grpc",
                mode="hot",
                typed_config=TransportConfig(transport_ref="r", mode_reason="why"),
            )
        ],
        envelope=StreamEnvelope(
            stream_id="s",
            sequence=2**63 + 5,
            partition="p",
            chunk_id="c",
            chunk_index=1,
            chunk_count=3,
            chunk_bytes=10,
            total_bytes=30,
        ),
        **{frame: frames()[frame]},
    )


@pytest.mark.parametrize("frame", ["audio", "video", "binary"])
@pytest.mark.parametrize("name", sorted(PACKET_NUMBERS))
def test_hand_made_packets_match_field_by_field(
    pb2: dict[str, type], name: str, frame: str
) -> None:
    message = full_packet(name, frame)
    theirs = both_ways(pb2[name], message)
    assert dict(theirs.metadata) == {"storyrun-name": "run", "ключ": "значение"}
    assert theirs.WhichOneof("frame") == frame
    assert theirs.envelope.sequence == 2**63 + 5
    assert theirs.envelope.chunk_count == 3
    assert theirs.transports[0].typed_config.mode_reason == "why"
    assert theirs.payload["list"][1] == "a"
    assert getattr(theirs, frame).timestamp_ms in {2**40, 7, 9}


def test_hand_made_control_and_flow_messages(pb2: dict[str, type]) -> None:
    flow = FlowControl(
        ack=2**64 - 1,
        credits_messages=5,
        credits_bytes=2**32 - 1,
        partition_acks=[PartitionAck(partition="p0", ack=3)],
        signal=FlowControlSignal.PAUSE,
    )
    theirs = both_ways(pb2["FlowControl"], flow)
    assert theirs.signal == 1
    assert theirs.partition_acks[0].ack == 3
    response = ControlResponse(
        action=ControlAction.ERROR,
        metadata={"a": "b"},
        flow=flow,
        custom_action="x",
        error=ControlError(code=14, message="hub unreachable", details={"reason": "r"}),
    )
    theirs = both_ways(pb2["ControlResponse"], response)
    assert theirs.action == 15
    assert theirs.error.details["reason"] == "r"
    request = ControlRequest(
        action=ControlAction.HEARTBEAT, metadata={"ts": "1"}, custom_action="downstream.delivered"
    )
    assert both_ways(pb2["ControlRequest"], request).action == 8
    info = BindingInfo(
        transport_ref="t",
        driver="grpc",
        endpoint="unix:///x",
        audio_codecs=["opus", "pcm16"],
        video_codecs=["h264"],
        payload=b"{}",
        binary_types=["a/b"],
        protocol_version="1.0.0",
    )
    assert list(both_ways(pb2["BindingInfo"], info).audio_codecs) == ["opus", "pcm16"]
    process = V1.ProcessRequest(packet=full_packet("DataPacket", "binary"), flow=flow)
    assert both_ways(pb2["ProcessRequest"], process).packet.binary.payload == b"\x00b"


json_scalars = (
    st.none()
    | st.booleans()
    | st.text(max_size=8)
    | st.floats(allow_nan=False, allow_infinity=False)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=10,
)


def _scalar(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    kind = field.type
    if kind == FieldDescriptor.TYPE_STRING:
        return st.text(max_size=12)
    if kind == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=24)
    if kind == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if kind == FieldDescriptor.TYPE_INT32:
        return st.integers(-(2**31), 2**31 - 1)
    if kind == FieldDescriptor.TYPE_UINT32:
        return st.integers(0, 2**32 - 1)
    if kind == FieldDescriptor.TYPE_UINT64:
        return st.integers(0, 2**64 - 1)
    if kind == FieldDescriptor.TYPE_ENUM:
        return st.sampled_from([value.number for value in field.enum_type.values])
    raise AssertionError(f"unhandled field type {kind} of {field.full_name}")


@st.composite
def pb2_message(draw: st.DrawFn, cls: type, depth: int = 0) -> Any:
    """A random instance of a protoc class: every field may be set, at most one oneof member."""
    message = cls()
    descriptor: Descriptor = cls.DESCRIPTOR  # type: ignore[attr-defined]
    oneof_choice = {
        oneof.name: draw(st.sampled_from([None, *[f.name for f in oneof.fields]]))
        for oneof in descriptor.oneofs
    }
    for field in descriptor.fields:
        if field.containing_oneof is not None and (
            oneof_choice[field.containing_oneof.name] != field.name
        ):
            continue
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            entries = draw(st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3))
            getattr(message, field.name).update(entries)
        elif field.message_type is not None and field.message_type.full_name == (
            "google.protobuf.Struct"
        ):
            if draw(st.booleans()):
                getattr(message, field.name).update(
                    draw(st.dictionaries(st.text(max_size=6), json_values, max_size=3))
                )
        elif field.message_type is not None:
            if depth > 3:
                continue
            if _repeated(field):
                container = getattr(message, field.name)
                for _ in range(draw(st.integers(0, 2))):
                    item = container.add()
                    item.CopyFrom(draw(pb2_message(type(item), depth + 1)))
            elif draw(st.booleans()):
                nested = getattr(message, field.name)
                nested.CopyFrom(draw(pb2_message(type(nested), depth + 1)))
        elif _repeated(field):
            getattr(message, field.name).extend(draw(st.lists(_scalar(field), max_size=3)))
        elif draw(st.booleans()):
            setattr(message, field.name, draw(_scalar(field)))
    return message


def _repeated(field: FieldDescriptor) -> bool:
    return bool(field.is_repeated)


ROUND_TRIP = [
    "DataPacket",
    "DataRequest",
    "DataResponse",
    "PublishRequest",
    "HubPushRequest",
    "HubPushResponse",
    "ProcessRequest",
    "ProcessResponse",
    "FlowControl",
    "ControlRequest",
    "ControlResponse",
    "StreamEnvelope",
    "BindingInfo",
    "TransportDescriptor",
]


@pytest.mark.parametrize("name", ROUND_TRIP)
def test_random_messages_round_trip_both_ways(pb2: dict[str, type], name: str) -> None:
    cls = pb2[name]

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(pb2_message(cls))
    def check(theirs: Any) -> None:
        wire = theirs.SerializeToString(deterministic=True)
        mine = ours(name).parse(wire)
        again = cls()
        again.ParseFromString(bytes(mine))
        assert again == theirs
        assert ours(name).parse(bytes(mine)) == mine

    check()
