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
from bobravoz.protocol.packets import EnvelopeFields

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
    """The ``DataRequest`` bytes of ``packet``."""
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


def decode_packet(data: bytes) -> Packet:
    """The :class:`Packet` in ``DataResponse`` bytes; raises ``ValueError`` when malformed."""
    try:
        response = DataResponse.parse(data)
    except Exception as error:  # betterproto2 raises assorted errors on bad input
        raise ValueError(f"malformed DataResponse: {error}") from error
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
