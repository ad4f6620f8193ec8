"""The contract's limits and envelope rules, checked on the wire bytes.

:func:`validate_packet` is the one check every packet passes at a boundary (hub ingress,
connector ingress). It reads only what it checks and returns a :class:`ContractViolation`
naming the field as a person would read it (``metadata["k"]``, ``binary.mime_type``,
``envelope.chunk_index``), or None. It never raises, whatever the bytes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Final, final

import betterproto2

from bobravoz.protocol.wire import (
    I64,
    LEN,
    VARINT,
    PacketLayout,
    WireFormatError,
    decode_varint,
    iter_fields,
)

MIB: Final = 1024 * 1024
MAX_FRAME_BYTES: Final = 10 * MIB
MAX_METADATA_PAIRS: Final = 100
MAX_METADATA_KEY: Final = 128
MAX_METADATA_VALUE: Final = 1024
MAX_TRANSPORTS: Final = 10
MAX_PARTITION_ACKS: Final = 256
#: How deep ``Struct`` / ``ListValue`` containers may nest in a packet's ``payload`` and
#: ``inputs`` (the top-level Struct is level 1). Protobuf's C++, Java and Python parsers refuse
#: messages nested more than 100 deep, and each Struct level costs them three messages
#: (Struct, map entry, Value): 32 levels is the deepest that still parses two messages down
#: (``ProcessResponse`` -> ``DataPacket``). Python's upb parser was measured refusing 34.
MAX_STRUCT_DEPTH: Final = 32


@final
@dataclass(frozen=True, slots=True)
class ContractViolation:
    """What is wrong: ``field`` path, a stable ``reason`` code (a metric label), a message."""

    field: str
    reason: str
    message: str


@final
class ContractError(ValueError):
    """A violation raised as an exception (for code that prefers raising)."""

    def __init__(self, violation: ContractViolation) -> None:
        super().__init__(f"{violation.field}: {violation.message}")
        self.violation = violation


class _InvalidError(Exception):
    def __init__(self, field: str, reason: str, message: str) -> None:
        self.violation = ContractViolation(field, reason, message)


def _text(data: bytes, path: str, limit: int) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise _InvalidError(path, "invalid_utf8", "not valid UTF-8") from None
    if len(text) > limit:
        raise _InvalidError(path, "too_long", f"{len(text)} characters, the limit is {limit}")
    return text


def _varint(data: bytes, start: int) -> int:
    return decode_varint(data, start)[0]


def _int32(value: int) -> int:
    value &= (1 << 64) - 1
    return value - (1 << 64) if value >= 1 << 63 else value


def _uint32(value: int) -> int:
    return value & 0xFFFFFFFF


def _expect(field_wire: int, wanted: int, path: str) -> None:
    if field_wire != wanted:
        raise _InvalidError(path, "malformed", f"wrong wire type {field_wire}")


def _check_metadata_entry(entry: bytes, path: str, *, value_limit: int = MAX_METADATA_VALUE) -> str:
    key = value = ""
    for field in iter_fields(entry):
        _expect(field.wire_type, LEN, path)
        raw = entry[field.value_start : field.end]
        if field.number == 1:
            key = _text(raw, path, 10**9)
        elif field.number == 2:
            value = _text(raw, path, 10**9)
    where = f"{path}[{json.dumps(key, ensure_ascii=False)}]"
    if not key:
        raise _InvalidError(path, "empty_key", "metadata keys must be 1 to 128 characters")
    if len(key) > MAX_METADATA_KEY:
        raise _InvalidError(
            where, "too_long", f"key of {len(key)} characters, limit {MAX_METADATA_KEY}"
        )
    if len(value) > value_limit:
        raise _InvalidError(
            where, "too_long", f"value of {len(value)} characters, limit {value_limit}"
        )
    return key


def _check_frame(kind: str, data: bytes) -> None:
    payload_number = 1
    seen_rate = seen_channels = 0
    for field in iter_fields(data):
        number = field.number
        if number == payload_number:
            _expect(field.wire_type, LEN, f"{kind}.{'pcm' if kind == 'audio' else 'payload'}")
            size = field.end - field.value_start
            if size > MAX_FRAME_BYTES:
                name = "pcm" if kind == "audio" else "payload"
                raise _InvalidError(f"{kind}.{name}", "too_large", f"{size} bytes, limit 10 MiB")
        elif kind == "audio":
            if number in (2, 3):
                _expect(
                    field.wire_type, VARINT, f"audio.{('sample_rate_hz', 'channels')[number - 2]}"
                )
                value = _int32(_varint(data, field.value_start))
                if number == 2:
                    seen_rate = value
                else:
                    seen_channels = value
            elif number == 4:
                _expect(field.wire_type, LEN, "audio.codec")
                _text(data[field.value_start : field.end], "audio.codec", 32)
        elif kind == "video":
            if number == 2:
                _expect(field.wire_type, LEN, "video.codec")
                _text(data[field.value_start : field.end], "video.codec", 32)
            elif number in (3, 4):
                name = "width" if number == 3 else "height"
                _expect(field.wire_type, VARINT, f"video.{name}")
                value = _uint32(_varint(data, field.value_start))
                if value > 16384:
                    raise _InvalidError(f"video.{name}", "out_of_range", f"{value} > 16384")
        elif number == 2:  # binary mime_type
            _expect(field.wire_type, LEN, "binary.mime_type")
            _text(data[field.value_start : field.end], "binary.mime_type", 255)
    if kind == "audio":
        if not 8000 <= seen_rate <= 192000:
            raise _InvalidError(
                "audio.sample_rate_hz", "out_of_range", f"{seen_rate} not in 8000..192000"
            )
        if not 1 <= seen_channels <= 8:
            raise _InvalidError("audio.channels", "out_of_range", f"{seen_channels} not in 1..8")


def _utf8(data: bytes, start: int, end: int, path: str) -> str:
    """``data[start:end]`` as text; an ``invalid_utf8`` violation at ``path`` otherwise."""
    try:
        return data[start:end].decode("utf-8")
    except UnicodeDecodeError:
        raise _InvalidError(path, "invalid_utf8", "not valid UTF-8") from None


def _check_struct(data: bytes, path: str, depth: int) -> None:
    """A ``google.protobuf.Struct``: UTF-8 keys, valid values, nested at most
    :data:`MAX_STRUCT_DEPTH` levels (this one is level ``depth``)."""
    if depth > MAX_STRUCT_DEPTH:
        raise _InvalidError(
            path, "nesting_too_deep", f"Struct/ListValue nested deeper than {MAX_STRUCT_DEPTH}"
        )
    for field in iter_fields(data):
        if field.number != 1:
            continue  # unknown fields: parsers skip them unread
        _expect(field.wire_type, LEN, path)
        key = ""
        entry = data[field.value_start : field.end]
        for inner in iter_fields(entry):
            if inner.number == 1:
                _expect(inner.wire_type, LEN, path)
                key = _utf8(entry, inner.value_start, inner.end, f"{path} key")
            elif inner.number == 2:
                _expect(inner.wire_type, LEN, path)
                where = f"{path}[{json.dumps(key, ensure_ascii=False)}]"
                _check_value(entry[inner.value_start : inner.end], where, depth)


def _check_list(data: bytes, path: str, depth: int) -> None:
    """A ``google.protobuf.ListValue`` at nesting level ``depth``."""
    if depth > MAX_STRUCT_DEPTH:
        raise _InvalidError(
            path, "nesting_too_deep", f"Struct/ListValue nested deeper than {MAX_STRUCT_DEPTH}"
        )
    index = 0
    for field in iter_fields(data):
        if field.number == 1:
            _expect(field.wire_type, LEN, path)
            _check_value(data[field.value_start : field.end], f"{path}[{index}]", depth)
            index += 1


#: ``google.protobuf.Value`` fields: number -> wire type (null, number, string, bool, struct,
#: list).
_VALUE_WIRE: Final = {1: VARINT, 2: I64, 3: LEN, 4: VARINT, 5: LEN, 6: LEN}


def _check_value(data: bytes, path: str, depth: int) -> None:
    """A ``google.protobuf.Value`` inside a container at nesting level ``depth``."""
    for field in iter_fields(data):
        wanted = _VALUE_WIRE.get(field.number)
        if wanted is None:
            continue
        _expect(field.wire_type, wanted, path)
        if field.number == 3:
            _utf8(data, field.value_start, field.end, path)
        elif field.number == 5:
            _check_struct(data[field.value_start : field.end], path, depth + 1)
        elif field.number == 6:
            _check_list(data[field.value_start : field.end], path, depth + 1)


def _check_transport(data: bytes, path: str) -> None:
    for field in iter_fields(data):
        if field.number in (1, 2, 3):
            name = ("name", "kind", "mode")[field.number - 1]
            _expect(field.wire_type, LEN, f"{path}.{name}")
            _text(data[field.value_start : field.end], f"{path}.{name}", 128)
        elif field.number == 5:
            _expect(field.wire_type, LEN, f"{path}.typed_config")
            config = data[field.value_start : field.end]
            for inner in iter_fields(config):
                if inner.number in (1, 2):
                    name, limit = (("transport_ref", 253), ("mode_reason", 512))[inner.number - 1]
                    where = f"{path}.typed_config.{name}"
                    _expect(inner.wire_type, LEN, where)
                    _text(config[inner.value_start : inner.end], where, limit)


def _check_envelope(data: bytes) -> None:
    strings = {1: "stream_id", 3: "partition", 4: "chunk_id"}
    values: dict[str, int | str] = {}
    for field in iter_fields(data):
        if field.number in strings:
            name = strings[field.number]
            _expect(field.wire_type, LEN, f"envelope.{name}")
            values[name] = _text(data[field.value_start : field.end], f"envelope.{name}", 128)
        elif 2 <= field.number <= 8:
            name = {
                2: "sequence",
                5: "chunk_index",
                6: "chunk_count",
                7: "chunk_bytes",
                8: "total_bytes",
            }[field.number]
            _expect(field.wire_type, VARINT, f"envelope.{name}")
            raw = _varint(data, field.value_start)
            values[name] = raw if name == "sequence" else _uint32(raw)
    count = int(values.get("chunk_count", 0))
    index = int(values.get("chunk_index", 0))
    chunk_bytes = int(values.get("chunk_bytes", 0))
    total_bytes = int(values.get("total_bytes", 0))
    if count > 256:
        raise _InvalidError("envelope.chunk_count", "out_of_range", f"{count} > 256")
    if chunk_bytes > MAX_FRAME_BYTES:
        raise _InvalidError("envelope.chunk_bytes", "out_of_range", f"{chunk_bytes} > 10 MiB")
    if total_bytes > 64 * MIB:
        raise _InvalidError("envelope.total_bytes", "out_of_range", f"{total_bytes} > 64 MiB")
    if count == 0:
        for name, value in (
            ("chunk_index", index),
            ("chunk_bytes", chunk_bytes),
            ("total_bytes", total_bytes),
            ("chunk_id", values.get("chunk_id", "")),
        ):
            if value:
                raise _InvalidError(
                    f"envelope.{name}",
                    "envelope_rule",
                    "stream_envelope.no_chunk_fields_without_count: chunk fields need chunk_count",
                )
        return
    if not values.get("chunk_id"):
        raise _InvalidError(
            "envelope.chunk_id",
            "envelope_rule",
            "stream_envelope.chunk_id_required: chunked packets need chunk_id",
        )
    if not values.get("stream_id"):
        raise _InvalidError(
            "envelope.stream_id",
            "envelope_rule",
            "stream_envelope.stream_id_required: chunked packets need stream_id",
        )
    if index >= count:
        raise _InvalidError(
            "envelope.chunk_index",
            "envelope_rule",
            f"stream_envelope.chunk_index_less_than_count: {index} >= {count}",
        )


def _check_packet(data: bytes, layout: PacketLayout) -> None:
    metadata_n, payload_n, inputs_n, transports_n, audio_n, video_n, binary_n, envelope_n = (
        layout.value
    )
    frames = {audio_n: "audio", video_n: "video", binary_n: "binary"}
    pairs = transports = 0
    keys: set[str] = set()
    for field in iter_fields(data):
        number = field.number
        if number == metadata_n:
            _expect(field.wire_type, LEN, "metadata")
            keys.add(_check_metadata_entry(data[field.value_start : field.end], "metadata"))
            pairs += 1
        elif number in frames:
            _expect(field.wire_type, LEN, frames[number])
            _check_frame(frames[number], data[field.value_start : field.end])
        elif number == transports_n:
            _expect(field.wire_type, LEN, "transports")
            _check_transport(data[field.value_start : field.end], f"transports[{transports}]")
            transports += 1
        elif number == envelope_n:
            _expect(field.wire_type, LEN, "envelope")
            _check_envelope(data[field.value_start : field.end])
        elif number in (payload_n, inputs_n):
            name = "payload" if number == payload_n else "inputs"
            _expect(field.wire_type, LEN, name)
            _check_struct(data[field.value_start : field.end], name, 1)
    del pairs
    if len(keys) > MAX_METADATA_PAIRS:
        raise _InvalidError(
            "metadata", "too_many", f"{len(keys)} pairs, limit {MAX_METADATA_PAIRS}"
        )
    if transports > MAX_TRANSPORTS:
        raise _InvalidError(
            "transports", "too_many", f"{transports} descriptors, limit {MAX_TRANSPORTS}"
        )


def validate_packet(data: bytes, layout: PacketLayout) -> ContractViolation | None:
    """Check a packet's bytes against the contract; the first violation found, or None."""
    try:
        _check_packet(data, layout)
    except _InvalidError as invalid:
        return invalid.violation
    except (WireFormatError, IndexError) as error:
        return ContractViolation("packet", "malformed", f"not a valid message: {error}")
    return None


def validate_flow(data: bytes) -> ContractViolation | None:
    """Check ``FlowControl`` bytes: at most 256 partition acks, partitions ≤ 128 characters."""
    try:
        acks = 0
        for field in iter_fields(data):
            if field.number == 6:
                _expect(field.wire_type, LEN, "partition_acks")
                entry = data[field.value_start : field.end]
                for inner in iter_fields(entry):
                    if inner.number == 1:
                        where = f"partition_acks[{acks}].partition"
                        _expect(inner.wire_type, LEN, where)
                        _text(entry[inner.value_start : inner.end], where, 128)
                acks += 1
        if acks > MAX_PARTITION_ACKS:
            raise _InvalidError(
                "partition_acks", "too_many", f"{acks} acks, limit {MAX_PARTITION_ACKS}"
            )
    except _InvalidError as invalid:
        return invalid.violation
    except (WireFormatError, IndexError) as error:
        return ContractViolation("flow", "malformed", f"not a valid message: {error}")
    return None


def _check_control(data: bytes, *, response: bool) -> None:
    for field in iter_fields(data):
        if field.number == 2:
            _expect(field.wire_type, LEN, "metadata")
            _check_metadata_entry(data[field.value_start : field.end], "metadata")
        elif field.number == 4:
            _expect(field.wire_type, LEN, "custom_action")
            _text(data[field.value_start : field.end], "custom_action", 128)
        elif field.number == 3:
            problem = validate_flow(data[field.value_start : field.end])
            if problem is not None:
                raise _InvalidError(f"flow.{problem.field}", problem.reason, problem.message)
        elif field.number == 5 and response:
            error = data[field.value_start : field.end]
            details = 0
            for inner in iter_fields(error):
                if inner.number == 1:
                    code = _int32(_varint(error, inner.value_start))
                    if code < 0:
                        raise _InvalidError("error.code", "negative", f"{code} < 0")
                elif inner.number == 2:
                    _text(error[inner.value_start : inner.end], "error.message", 2048)
                elif inner.number == 3:
                    _check_metadata_entry(error[inner.value_start : inner.end], "error.details")
                    details += 1
            if details > 50:
                raise _InvalidError("error.details", "too_many", f"{details} pairs, limit 50")


def validate_message(message: betterproto2.Message) -> ContractViolation | None:
    """Validate a typed message: packets, FlowControl, ControlRequest or ControlResponse."""
    from bobravoz.protocol.gen.transport.v1 import (
        ControlRequest,
        ControlResponse,
        DataPacket,
        DataRequest,
        DataResponse,
        FlowControl,
        HubPushRequest,
        HubPushResponse,
        PublishRequest,
    )

    layouts = {
        DataPacket: PacketLayout.DATA_PACKET,
        DataRequest: PacketLayout.DATA_REQUEST,
        DataResponse: PacketLayout.DATA_REQUEST,
        PublishRequest: PacketLayout.DATA_REQUEST,
        HubPushRequest: PacketLayout.HUB_PUSH_REQUEST,
        HubPushResponse: PacketLayout.HUB_PUSH_RESPONSE,
    }
    data = bytes(message)
    layout = layouts.get(type(message))
    if layout is not None:
        return validate_packet(data, layout)
    if isinstance(message, FlowControl):
        return validate_flow(data)
    if isinstance(message, ControlRequest | ControlResponse):
        try:
            _check_control(data, response=isinstance(message, ControlResponse))
        except _InvalidError as invalid:
            return invalid.violation
        return None
    raise TypeError(f"no contract check for {type(message).__name__}")
