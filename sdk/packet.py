"""The packet an engram handler reads and emits, and its conversion to and from the wire.

Engram code works with :class:`Packet` (plain Python values and typed frames); the SDK turns
it into ``DataRequest`` bytes for the connector and ``DataResponse`` bytes back into packets.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, final

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
from bobravoz.protocol.packets import EnvelopeFields, encode_envelope, parse_envelope
from bobravoz.protocol.scan import DATA_REQUEST_LAYOUT, SLOW, scan_packet
from bobravoz.protocol.structs import decode_struct, encode_struct
from bobravoz.protocol.wire import (
    LEN,
    VARINT,
    WireFormatError,
    decode_varint,
    encode_len_field,
    encode_string_field,
    encode_varint_field,
    iter_fields,
)

#: ``DataRequest`` / ``DataResponse`` field numbers the plain paths read and write.
_BINARY, _METADATA, _PAYLOAD, _INPUTS, _ENVELOPE = 3, 4, 5, 6, 8

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
        frames = sum(frame is not None for frame in (self.binary, self.audio, self.video))
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


def _encode_plain(packet: Packet) -> bytes:
    parts: list[bytes] = []
    if packet.binary is not None:
        frame = encode_len_field(1, packet.binary) if packet.binary else b""
        if packet.mime_type:
            frame += encode_string_field(2, packet.mime_type)
        if packet.timestamp_ms:
            frame += encode_varint_field(3, packet.timestamp_ms)
        parts.append(encode_len_field(_BINARY, frame))
    for key, value in packet.metadata.items():
        entry = encode_string_field(1, key)
        if value:
            entry += encode_string_field(2, value)
        parts.append(encode_len_field(_METADATA, entry))
    if packet.payload is not None:
        parts.append(encode_len_field(_PAYLOAD, encode_struct(packet.payload)))
    if packet.inputs is not None:
        parts.append(encode_len_field(_INPUTS, encode_struct(packet.inputs)))
    if packet.envelope is not None:
        parts.append(encode_len_field(_ENVELOPE, encode_envelope(packet.envelope)))
    return b"".join(parts)


def _decode_plain(data: bytes) -> Packet | None:
    """The packet in ``data`` when it holds only metadata, a binary frame, ``payload`` and
    ``inputs`` objects and a plain envelope, each well-formed (checked in one pass); None
    for anything else."""
    kind, _, _ = scan_packet(data, 0, len(data), DATA_REQUEST_LAYOUT, ())
    if kind == SLOW:
        return None
    packet = Packet()
    metadata = packet.metadata
    seen_frame = seen_envelope = False
    for top in iter_fields(data):
        number = top.number
        if number == _METADATA:
            key = value = ""
            for inner in iter_fields(data[top.value_start : top.end]):
                text = data[top.value_start + inner.value_start : top.value_start + inner.end]
                if inner.number == 1:
                    key = text.decode()
                else:
                    value = text.decode()
            metadata[key] = value
        elif number == _BINARY:
            if seen_frame:
                return None  # repeated frames merge: the generated parser does that
            seen_frame = True
            frame = data[top.value_start : top.end]
            packet.binary = b""
            for inner in iter_fields(frame):
                if inner.number == 1 and inner.wire_type == LEN:
                    packet.binary = frame[inner.value_start : inner.end]
                elif inner.number == 2 and inner.wire_type == LEN:
                    packet.mime_type = frame[inner.value_start : inner.end].decode()
                elif inner.number == 3 and inner.wire_type == VARINT:
                    packet.timestamp_ms = decode_varint(frame, inner.value_start)[0]
                elif inner.number <= 3:
                    return None
        elif number == _ENVELOPE:
            if seen_envelope:
                return None
            seen_envelope = True
            packet.envelope = parse_envelope(data[top.value_start : top.end])
        elif number in (_PAYLOAD, _INPUTS):
            # JSON objects, read straight from the wire (the scan checked UTF-8 and depth)
            try:
                fields = decode_struct(data[top.value_start : top.end])
            except WireFormatError:
                return None  # the general path decides (and refuses it)
            if number == _PAYLOAD:
                if packet.payload is not None:
                    return None  # a repeated Struct merges: the generated parser does that
                packet.payload = fields
            else:
                if packet.inputs is not None:
                    return None
                packet.inputs = fields
    return packet


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
