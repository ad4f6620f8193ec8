"""Hub-side operations on packet bytes: split and wrap Process messages, read metadata and
envelopes, and retarget a packet to another step, without decoding the rest."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, final

from bobravoz.protocol.constants import HEARTBEAT_KEY
from bobravoz.protocol.wire import (
    LEN,
    VARINT,
    PacketLayout,
    WireFormatError,
    decode_varint,
    encode_len_field,
    encode_string_field,
    encode_varint_field,
    iter_fields,
)

_HEARTBEAT_BYTES: Final = HEARTBEAT_KEY.encode()
_ENVELOPE_STRINGS: Final = {1: "stream_id", 3: "partition", 4: "chunk_id"}
_ENVELOPE_INTS: Final = {
    2: "sequence",
    5: "chunk_index",
    6: "chunk_count",
    7: "chunk_bytes",
    8: "total_bytes",
}


def split_process_message(data: bytes) -> tuple[bytes | None, bytes | None]:
    """(``DataPacket`` bytes, ``FlowControl`` bytes) of a ProcessRequest/ProcessResponse.

    A field that occurs more than once is merged the protobuf way (bytes concatenated).
    """
    packet: bytes | None = None
    flow: bytes | None = None
    for field in iter_fields(data):
        if field.wire_type != LEN:
            continue
        value = data[field.value_start : field.end]
        if field.number == 1:
            packet = value if packet is None else packet + value
        elif field.number == 2:
            flow = value if flow is None else flow + value
    return packet, flow


def wrap_process_message(packet: bytes | None, flow: bytes | None = None) -> bytes:
    """A ProcessRequest/ProcessResponse (same layout) holding ``packet`` and/or ``flow``."""
    out = b""
    if packet is not None:
        out = encode_len_field(1, packet)
    if flow is not None:
        out += encode_len_field(2, flow)
    return out


def _map_entry(entry: bytes) -> tuple[str, str]:
    key = value = ""
    for field in iter_fields(entry):
        if field.wire_type != LEN:
            raise WireFormatError("map entry field is not length-delimited")
        if field.number == 1:
            key = entry[field.value_start : field.end].decode("utf-8")
        elif field.number == 2:
            value = entry[field.value_start : field.end].decode("utf-8")
    return key, value


def read_metadata(packet: bytes, layout: PacketLayout) -> dict[str, str]:
    """The packet's metadata map (a later duplicate key wins, as in protobuf)."""
    number = layout.value[0]
    metadata: dict[str, str] = {}
    for field in iter_fields(packet):
        if field.number == number and field.wire_type == LEN:
            key, value = _map_entry(packet[field.value_start : field.end])
            metadata[key] = value
    return metadata


def is_heartbeat(packet: bytes, layout: PacketLayout) -> bool:
    """True when metadata ``bubu-heartbeat`` is ``true`` (case-insensitive)."""
    if _HEARTBEAT_BYTES not in packet:
        return False
    return read_metadata(packet, layout).get(HEARTBEAT_KEY, "").lower() == "true"


def has_frame(packet: bytes, layout: PacketLayout) -> bool:
    """True when the packet carries an audio, video or binary frame."""
    frames = set(layout.value[4:7])
    return any(field.number in frames for field in iter_fields(packet))


@final
@dataclass(frozen=True, slots=True)
class EnvelopeFields:
    """The fields of a ``StreamEnvelope``."""

    stream_id: str = ""
    sequence: int = 0
    partition: str = ""
    chunk_id: str = ""
    chunk_index: int = 0
    chunk_count: int = 0
    chunk_bytes: int = 0
    total_bytes: int = 0


def parse_envelope(data: bytes) -> EnvelopeFields:
    """Decode ``StreamEnvelope`` bytes (unknown fields ignored)."""
    values: dict[str, str | int] = {}
    for field in iter_fields(data):
        if field.number in _ENVELOPE_STRINGS and field.wire_type == LEN:
            values[_ENVELOPE_STRINGS[field.number]] = data[field.value_start : field.end].decode(
                "utf-8"
            )
        elif field.number in _ENVELOPE_INTS and field.wire_type == VARINT:
            value, _ = decode_varint(data, field.value_start)
            bits = 64 if field.number == 2 else 32
            values[_ENVELOPE_INTS[field.number]] = value & ((1 << bits) - 1)
    return EnvelopeFields(**values)  # type: ignore[arg-type]


def encode_envelope(envelope: EnvelopeFields) -> bytes:
    """The ``StreamEnvelope`` bytes of ``envelope`` (zero fields left out, as proto3 does)."""
    parts: list[bytes] = []
    for number in sorted((*_ENVELOPE_STRINGS, *_ENVELOPE_INTS)):
        if number in _ENVELOPE_STRINGS:
            text = getattr(envelope, _ENVELOPE_STRINGS[number])
            if text:
                parts.append(encode_string_field(number, text))
        else:
            value = getattr(envelope, _ENVELOPE_INTS[number])
            if value:
                parts.append(encode_varint_field(number, value))
    return b"".join(parts)


def read_envelope(packet: bytes, layout: PacketLayout) -> EnvelopeFields | None:
    """The packet's envelope, or None when it has none."""
    number = layout.value[7]
    found: bytes | None = None
    for field in iter_fields(packet):
        if field.number == number and field.wire_type == LEN:
            value = packet[field.value_start : field.end]
            found = value if found is None else found + value
    return None if found is None else parse_envelope(found)


def _restamp_envelope(envelope: bytes, stream_id: str, sequence: int) -> bytes:
    kept = [
        envelope[field.start : field.end]
        for field in iter_fields(envelope)
        if field.number not in (1, 2)
    ]
    head = (encode_string_field(1, stream_id) if stream_id else b"") + (
        encode_varint_field(2, sequence) if sequence else b""
    )
    return head + b"".join(kept)


def retarget_packet(
    packet: bytes,
    *,
    layout: PacketLayout,
    metadata_updates: Mapping[str, str],
    sequence: tuple[str, int] | None,
) -> bytes:
    """The packet with metadata keys in ``metadata_updates`` replaced and, when ``sequence``
    is given, the envelope's ``stream_id``/``sequence`` set to it (an envelope is added if
    there was none). Every other field is copied as bytes.
    """
    return rewrite_packet(
        packet, layout=layout, metadata_updates=metadata_updates, sequence=sequence
    )


def _entry_key(data: bytes, start: int, end: int) -> bytes | None:
    """The raw key bytes of the map entry in ``data[start:end]`` (None when it has none)."""
    entry = data[start:end]
    key: bytes | None = None
    for field in iter_fields(entry):
        if field.number == 1 and field.wire_type == LEN:
            key = entry[field.value_start : field.end]
    return key


@final
class Retargeter:
    """:func:`retarget_packet` for one target, with its constant bytes encoded once.

    The hub keeps one per downstream step; calling it on a packet gives the same bytes as
    ``retarget_packet(packet, layout=..., metadata_updates=..., sequence=(stream_id, n))``.
    """

    def __init__(
        self, *, layout: PacketLayout, metadata_updates: Mapping[str, str], stream_id: str
    ) -> None:
        self._layout = layout
        self._metadata_number = layout.value[0]
        self._envelope_number = layout.value[7]
        self._keys = {key.encode() for key in metadata_updates}
        self._updates = dict(metadata_updates)
        self._entries = b"".join(
            encode_len_field(
                self._metadata_number, encode_string_field(1, key) + encode_string_field(2, value)
            )
            for key, value in metadata_updates.items()
        )
        self._stream_id = stream_id
        self._stream_id_field = encode_string_field(1, stream_id) if stream_id else b""

    def __call__(self, packet: bytes, sequence: int | None) -> bytes:
        """``packet`` retargeted; ``sequence`` None leaves the envelope untouched."""
        if any(key in packet for key in self._keys):
            return retarget_packet(
                packet,
                layout=self._layout,
                metadata_updates=self._updates,
                sequence=None if sequence is None else (self._stream_id, sequence),
            )
        if sequence is None:
            return packet + self._entries
        envelope_number = self._envelope_number
        envelope: bytes | None = None
        kept: list[bytes] = []
        for field in iter_fields(packet):
            if field.number == envelope_number and field.wire_type == LEN:
                value = packet[field.value_start : field.end]
                envelope = value if envelope is None else envelope + value
            else:
                kept.append(packet[field.start : field.end])
        if envelope is None:
            stamped = self._stream_id_field + encode_varint_field(2, sequence)
            body = packet
        else:
            stamped = _restamp_envelope(envelope, self._stream_id, sequence)
            body = b"".join(kept)
        return body + self._entries + encode_len_field(envelope_number, stamped)


@final
@dataclass(slots=True)
class PacketParts:
    """What a Story primitive reads of one packet, in one pass over its top-level fields."""

    metadata: dict[str, str]
    payload: bytes | None
    inputs: bytes | None
    envelope: EnvelopeFields | None
    frame_bytes: int


def read_parts(packet: bytes, layout: PacketLayout) -> PacketParts:
    """The metadata map, the raw ``payload`` and ``inputs`` Struct bytes (concatenated when
    repeated, as protobuf merges them), the envelope and the size of the frame's field."""
    metadata_number, payload_number, inputs_number = layout.value[0:3]
    frames = set(layout.value[4:7])
    envelope_number = layout.value[7]
    metadata: dict[str, str] = {}
    payload: bytes | None = None
    inputs: bytes | None = None
    envelope: bytes | None = None
    frame_bytes = 0
    for field in iter_fields(packet):
        number = field.number
        if field.wire_type != LEN:
            continue
        value = packet[field.value_start : field.end]
        if number == metadata_number:
            key, text = _map_entry(value)
            metadata[key] = text
        elif number == payload_number:
            payload = value if payload is None else payload + value
        elif number == inputs_number:
            inputs = value if inputs is None else inputs + value
        elif number == envelope_number:
            envelope = value if envelope is None else envelope + value
        elif number in frames:
            frame_bytes += len(value)
    return PacketParts(
        metadata=metadata,
        payload=payload,
        inputs=inputs,
        envelope=None if envelope is None else parse_envelope(envelope),
        frame_bytes=frame_bytes,
    )


def rewrite_packet(
    packet: bytes,
    *,
    layout: PacketLayout,
    metadata_updates: Mapping[str, str] | None = None,
    inputs: bytes | None = None,
    payload: bytes | None = None,
    partition: str | None = None,
    sequence: tuple[str, int] | None = None,
) -> bytes:
    """``packet`` with metadata keys set from ``metadata_updates``, the ``inputs`` (and, when
    given, ``payload``) Struct replaced by the given bytes, the envelope's partition set when
    ``partition`` is given and its ``stream_id``/``sequence`` when ``sequence`` is (an
    envelope is added if there was none). Every other field is copied as bytes."""
    metadata_number, payload_number, inputs_number = layout.value[0:3]
    envelope_number = layout.value[7]
    updates = dict(metadata_updates or {})
    encoded_keys = {key.encode() for key in updates}
    replaced = {inputs_number} if inputs is not None else set()
    if payload is not None:
        replaced.add(payload_number)
    restamped = partition is not None or sequence is not None
    parts: list[bytes] = []
    envelope: bytes | None = None
    for field in iter_fields(packet):
        number = field.number
        if number == metadata_number and field.wire_type == LEN and encoded_keys:
            if _entry_key(packet, field.value_start, field.end) in encoded_keys:
                continue
        elif number in replaced:
            continue
        elif number == envelope_number and field.wire_type == LEN and restamped:
            value = packet[field.value_start : field.end]
            envelope = value if envelope is None else envelope + value
            continue
        parts.append(packet[field.start : field.end])
    for key, text in updates.items():
        entry = encode_string_field(1, key) + encode_string_field(2, text)
        parts.append(encode_len_field(metadata_number, entry))
    if payload is not None:
        parts.append(encode_len_field(payload_number, payload))
    if inputs is not None:
        parts.append(encode_len_field(inputs_number, inputs))
    if restamped:
        body = envelope or b""
        if partition is not None:
            body = encode_string_field(3, partition) if partition else b""
            body += b"".join(
                (envelope or b"")[field.start : field.end]
                for field in iter_fields(envelope or b"")
                if field.number != 3
            )
        if sequence is not None:
            body = _restamp_envelope(body, *sequence)
        parts.append(encode_len_field(envelope_number, body))
    return b"".join(parts)
