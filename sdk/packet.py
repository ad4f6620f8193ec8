"""The packet an engram handler reads and emits, and its conversion to and from the wire.

Engram code works with :class:`Packet` (plain Python values and typed frames); the SDK turns
it into ``DataRequest`` bytes for the connector and ``DataResponse`` bytes back into packets.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Final, final

from bobravoz.protocol.constants import HEARTBEAT_KEY
from bobravoz.protocol.gen.google.protobuf import Struct
from bobravoz.protocol.gen.transport.v1 import (
    AudioFrame,
    BinaryFrame,
    DataRequest,
    DataResponse,
    StreamEnvelope,
    VideoFrame,
)
from bobravoz.protocol.packets import EnvelopeFields, encode_envelope
from bobravoz.protocol.scan import DATA_REQUEST_LAYOUT, SLOW, scan_packet
from bobravoz.protocol.structs import decode_struct, encode_struct
from bobravoz.protocol.wire import (
    I64,
    LEN,
    VARINT,
    WireFormatError,
    decode_varint,
    encode_len_field,
    encode_varint,
)

#: ``DataRequest`` / ``DataResponse`` field numbers the plain paths read and write.
_BINARY, _METADATA, _PAYLOAD, _INPUTS, _ENVELOPE = 3, 4, 5, 6, 8
#: Their one-byte tags (all length-delimited).
_BINARY_TAG, _METADATA_TAG, _PAYLOAD_TAG, _INPUTS_TAG, _ENVELOPE_TAG = (
    number << 3 | LEN for number in (_BINARY, _METADATA, _PAYLOAD, _INPUTS, _ENVELOPE)
)
_BINARY_TAG_BYTES: Final = bytes((_BINARY_TAG,))
_METADATA_TAG_BYTES: Final = bytes((_METADATA_TAG,))
_UINT64: Final = (1 << 64) - 1
#: The one-byte varints, and the first bytes of longer ones.
_SMALL: Final = tuple(bytes((value,)) for value in range(128))
_HIGH: Final = tuple(bytes((value | 0x80,)) for value in range(128))

__all__ = [
    "AudioFrame",
    "Envelope",
    "Packet",
    "VideoFrame",
    "decode_packet",
    "encode_packet",
]


#: Ordering and chunking fields of a packet (``transport.v1.StreamEnvelope``).
Envelope = EnvelopeFields


@final
@dataclass(slots=True)
class Packet:
    """One packet: at most one frame (binary, audio or video) plus structured fields.

    ``payload`` and ``inputs`` are JSON objects (``google.protobuf.Struct`` on the wire);
    ``metadata`` is a string map; ``envelope`` carries stream ordering set by the hub.
    """

    binary: bytes | None = None
    mime_type: str = ""
    timestamp_ms: int = 0
    audio: AudioFrame | None = None
    video: VideoFrame | None = None
    payload: dict[str, Any] | None = None
    inputs: dict[str, Any] | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    envelope: Envelope | None = None

    @property
    def is_heartbeat(self) -> bool:
        """True for keep-alive packets (``bubu-heartbeat: true``), which carry no data."""
        return self.metadata.get(HEARTBEAT_KEY, "").lower() == "true"

    def __post_init__(self) -> None:
        if self.audio is None and self.video is None:
            return  # at most a binary frame (the common case, checked cheaply)
        frames = (self.binary is not None) + (self.audio is not None) + (self.video is not None)
        if frames > 1:
            raise ValueError("a packet carries at most one frame (binary, audio or video)")


def encode_packet(packet: Packet) -> bytes:
    """The ``DataRequest`` bytes of ``packet``.

    A packet of binary data, metadata, ``payload``/``inputs`` objects and an envelope (what
    streaming engrams mostly send) is written field by field; audio and video frames through
    the generated message class.
    """
    if packet.audio is None and packet.video is None:
        return _encode_plain(packet)
    request = DataRequest(metadata=dict(packet.metadata))
    if packet.binary is not None:
        request.binary = BinaryFrame(
            payload=packet.binary, mime_type=packet.mime_type, timestamp_ms=packet.timestamp_ms
        )
    elif packet.audio is not None:
        request.audio = packet.audio
    elif packet.video is not None:
        request.video = packet.video
    if packet.payload is not None:
        request.payload = Struct.from_dict(packet.payload)
    if packet.inputs is not None:
        request.inputs = Struct.from_dict(packet.inputs)
    if packet.envelope is not None:
        request.envelope = StreamEnvelope(**dataclasses.asdict(packet.envelope))
    return bytes(request)


def _varint(value: int) -> bytes:
    """The varint of a non-negative ``value``; one- and two-byte ones from tables."""
    if value < 0x80:
        return _SMALL[value]
    if value < 0x4000:
        return _HIGH[value & 0x7F] + _SMALL[value >> 7]
    return encode_varint(value)


def _encode_plain(packet: Packet) -> bytes:
    parts: list[bytes] = []
    binary = packet.binary
    if binary is not None:
        frame = b"\x0a" + _varint(len(binary)) + binary if binary else b""
        if packet.mime_type:
            mime_type = packet.mime_type.encode()
            frame += b"\x12" + _varint(len(mime_type)) + mime_type
        if packet.timestamp_ms:
            frame += b"\x18" + encode_varint(packet.timestamp_ms)
        parts += (_BINARY_TAG_BYTES, _varint(len(frame)), frame)
    for key, value in packet.metadata.items():
        key_bytes = key.encode()
        entry = b"\x0a" + _varint(len(key_bytes)) + key_bytes
        if value:
            value_bytes = value.encode()
            entry += b"\x12" + _varint(len(value_bytes)) + value_bytes
        parts += (_METADATA_TAG_BYTES, _varint(len(entry)), entry)
    if packet.payload is not None:
        parts.append(encode_len_field(_PAYLOAD, encode_struct(packet.payload)))
    if packet.inputs is not None:
        parts.append(encode_len_field(_INPUTS, encode_struct(packet.inputs)))
    if packet.envelope is not None:
        parts.append(encode_len_field(_ENVELOPE, encode_envelope(packet.envelope)))
    return b"".join(parts)


def _length(data: bytes, pos: int) -> tuple[int, int]:
    """The length varint at ``pos`` (known well-formed): (length, position after it)."""
    length = data[pos]
    if length < 0x80:
        return length, pos + 1
    return decode_varint(data, pos)


def _after_scalar(data: bytes, pos: int, wire_type: int) -> int:
    """The position after the value at ``pos`` of a varint, 64- or 32-bit field."""
    if wire_type == VARINT:
        return decode_varint(data, pos)[1]
    return pos + (8 if wire_type == I64 else 4)


def _decode_plain(data: bytes) -> Packet | None:
    """The packet in ``data`` when it holds only metadata, a binary frame, ``payload`` and
    ``inputs`` objects and a plain envelope, each well-formed (checked in one pass); None
    for anything else.

    Once the scan vouched for it, every tag is one byte, every known field is length-delimited
    and well-formed, audio, video and transports are absent: the walk below reads the values
    without checking again."""
    end = len(data)
    kind, _, _ = scan_packet(data, 0, end, DATA_REQUEST_LAYOUT, ())
    if kind == SLOW:
        return None
    metadata: dict[str, str] = {}
    binary: bytes | None = None
    mime_type = ""
    timestamp_ms = 0
    payload: dict[str, Any] | None = None
    inputs: dict[str, Any] | None = None
    envelope: Envelope | None = None
    pos = 0
    while pos < end:
        tag = data[pos]
        if tag & 7 != LEN:
            pos = _after_scalar(data, pos + 1, tag & 7)  # an unknown field (number > 8)
            continue
        length, start = _length(data, pos + 1)
        pos = start + length
        if tag == _METADATA_TAG:
            key = value = ""
            at = start
            while at < pos:
                inner = data[at]
                size = data[at + 1]
                if size < 0x80:
                    at += 2
                else:
                    size, at = decode_varint(data, at + 1)
                if inner == 0x0A:
                    key = data[at : at + size].decode()
                else:
                    value = data[at : at + size].decode()
                at += size
            metadata[key] = value
        elif tag == _BINARY_TAG:
            if binary is not None:
                return None  # repeated frames merge: the generated parser does that
            binary = b""
            at = start
            while at < pos:
                inner = data[at]
                wire_type = inner & 7
                if wire_type == LEN:
                    size, at = _length(data, at + 1)
                    if inner == 0x0A:
                        binary = data[at : at + size]
                    elif inner == 0x12:
                        mime_type = data[at : at + size].decode()
                    elif inner >> 3 == 3:
                        return None  # a timestamp of the wrong wire type
                    at += size
                elif inner == 0x18:
                    timestamp_ms, at = decode_varint(data, at + 1)
                elif inner >> 3 == 3:
                    return None
                else:
                    at = _after_scalar(data, at + 1, wire_type)
        elif tag == _ENVELOPE_TAG:
            # one envelope of stream_id, sequence and partition only (the scan checked)
            stream_id = partition = ""
            sequence = 0
            at = start
            while at < pos:
                inner = data[at]
                if inner == 0x10:
                    sequence, at = decode_varint(data, at + 1)
                    sequence &= _UINT64
                    continue
                size, at = _length(data, at + 1)
                if inner == 0x0A:
                    stream_id = data[at : at + size].decode()
                else:
                    partition = data[at : at + size].decode()
                at += size
            envelope = Envelope(stream_id=stream_id, sequence=sequence, partition=partition)
        elif tag in (_PAYLOAD_TAG, _INPUTS_TAG):
            # JSON objects, read straight from the wire (the scan checked UTF-8 and depth)
            try:
                fields = decode_struct(data[start:pos])
            except WireFormatError:
                return None  # the general path decides (and refuses it)
            if tag == _PAYLOAD_TAG:
                if payload is not None:
                    return None  # a repeated Struct merges: the generated parser does that
                payload = fields
            else:
                if inputs is not None:
                    return None
                inputs = fields
    return Packet(
        binary=binary,
        mime_type=mime_type,
        timestamp_ms=timestamp_ms,
        payload=payload,
        inputs=inputs,
        metadata=metadata,
        envelope=envelope,
    )


def decode_packet(data: bytes) -> Packet:
    """The :class:`Packet` in ``DataResponse`` bytes; raises ``ValueError`` when malformed.

    Packets of metadata, binary data, ``payload``/``inputs`` objects and an envelope are read
    field by field; audio and video through the generated message class.
    """
    plain = _decode_plain(data)
    if plain is not None:
        return plain
    try:
        return _decode_general(data)
    except Exception as error:  # betterproto2 raises (or builds nonsense) on bad input
        raise ValueError(f"malformed DataResponse: {error}") from error


def _decode_general(data: bytes) -> Packet:
    response = DataResponse.parse(data)
    packet = Packet(metadata=dict(response.metadata))
    if response.binary is not None:
        packet.binary = response.binary.payload
        packet.mime_type = response.binary.mime_type
        packet.timestamp_ms = response.binary.timestamp_ms
    elif response.audio is not None:
        packet.audio = response.audio
    elif response.video is not None:
        packet.video = response.video
    if response.payload is not None:
        packet.payload = response.payload.to_dict()
    if response.inputs is not None:
        packet.inputs = response.inputs.to_dict()
    if response.envelope is not None:
        env = response.envelope
        packet.envelope = Envelope(
            **{name: getattr(env, name) for name in Envelope.__dataclass_fields__}
        )
    return packet
