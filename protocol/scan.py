"""One pass over a ``Process`` message: validate, split and retarget with no per-field objects.

The hub's per-packet work is: take the ``DataPacket`` out of a ``ProcessRequest``, check it
against the contract, tell heartbeats from data, and write it to each target step as a
``ProcessResponse`` with that step's identity metadata and envelope stamp. The general tools
(:func:`~bobravoz.protocol.packets.split_process_message`,
:func:`~bobravoz.protocol.validation.validate_packet`,
:class:`~bobravoz.protocol.packets.Retargeter`) do that in separate passes over
:class:`~bobravoz.protocol.wire.WireField` objects. :func:`scan_process` does it in one walk
of plain integers for the packets real engrams send (metadata, payload, inputs, frames, at
most one envelope) and answers :data:`SLOW` for anything else (several packet fields, an
overwritten identity key, more than 100 metadata entries, anything invalid, anything it does
not recognise; ``payload``/``inputs`` Structs are walked for UTF-8 and nesting depth) so
the caller takes the general path, which is the reference: whenever this module answers,
its answer equals the general tools' (a property test holds it to that).

The module is written to compile with mypyc (plain classes, typed locals, no closures); the
pure-Python module is what runs unless a compiled one is installed beside it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, final

from bobravoz.protocol.constants import HEARTBEAT_KEY
from bobravoz.protocol.packets import Retargeter
from bobravoz.protocol.wire import encode_string_field

#: :func:`scan_process` could not answer: take the general path.
SLOW: Final = -1
#: The message carries no packet (a flow-only ``ProcessRequest``): nothing to route.
NO_PACKET: Final = 0
#: A valid data packet.
DATA: Final = 1
#: A valid heartbeat packet (metadata ``bubu-heartbeat: true``).
HEARTBEAT: Final = 2

_HEARTBEAT_KEY: Final = HEARTBEAT_KEY.encode()
_MAX_FRAME: Final = 10 * 1024 * 1024
_MAX_ENTRIES: Final = 100
#: Struct/ListValue nesting allowed in ``payload`` and ``inputs`` (validation's
#: ``MAX_STRUCT_DEPTH``, restated for mypyc; a test checks they agree).
_MAX_DEPTH: Final = 32
#: Field numbers of the packet layouts (``PacketLayout`` values, restated so this module
#: stays plain for mypyc; a test checks they agree).
_DATA_PACKET: Final = (1, 2, 3, 4, 5, 6, 7, 8)
DATA_REQUEST_LAYOUT: Final = (4, 5, 6, 7, 1, 2, 3, 8)
DATA_PACKET_LAYOUT: Final = _DATA_PACKET
_METADATA: Final = 1
#: The ``ProcessResponse`` tag of field 1 (``packet``, length-delimited).
_PACKET_TAG: Final = b"\x0a"
_ENVELOPE_TAG: Final = b"\x42"


#: The one-byte varints, and the bytes that start a longer one (continuation bit set).
_SMALL: Final = tuple(bytes((value,)) for value in range(128))
_HIGH: Final = tuple(bytes((value | 0x80,)) for value in range(128))


def _varint(value: int) -> bytes:
    """The base-128 varint of ``value`` (non-negative); up to three bytes from tables (a
    fifth of the time of building them, compiled), longer ones byte by byte."""
    if value < 0x80:
        return _SMALL[value]
    if value < 0x4000:
        return _HIGH[value & 0x7F] + _SMALL[value >> 7]
    if value < 0x200000:
        return _HIGH[value & 0x7F] + _HIGH[(value >> 7) & 0x7F] + _SMALL[value >> 14]
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _skip(data: bytes, pos: int, end: int, wire_type: int) -> int:
    """Position after the value of a field of ``wire_type`` at ``pos``; -1 when malformed."""
    if wire_type == 2:
        length = 0
        shift = 0
        while True:
            if pos >= end or shift > 28:
                return -1
            byte = data[pos]
            pos += 1
            length |= (byte & 0x7F) << shift
            if byte < 0x80:
                break
            shift += 7
        pos += length
    elif wire_type == 0:
        count = 0
        while True:
            if pos >= end or count >= 10:
                return -1
            byte = data[pos]
            pos += 1
            count += 1
            if byte < 0x80:
                break
    elif wire_type == 1:
        pos += 8
    elif wire_type == 5:
        pos += 4
    else:
        return -1
    return pos if pos <= end else -1


def _text_ok(data: bytes, start: int, end: int, limit: int) -> bool:
    """Whether ``data[start:end]`` is UTF-8 of at most ``limit`` characters."""
    if end - start <= limit and data[start:end].isascii():
        return True
    try:
        text = data[start:end].decode("utf-8")
    except UnicodeDecodeError:
        return False
    return len(text) <= limit


def _entry(data: bytes, pos: int, end: int, keys: tuple[bytes, ...]) -> int:
    """Check the metadata map entry in ``data[pos:end]``: -1 invalid, unusual or an
    overwritten key (the general path decides), 2 a heartbeat entry with value ``true``, 1
    another heartbeat entry, 0 any other entry."""
    key_start = value_start = -1
    key_end = value_end = -1
    while pos < end:
        tag = data[pos]
        if tag != 0x0A and tag != 0x12:
            return -1  # another field (every field of an entry must be length-delimited)
        after = _skip(data, pos + 1, end, 2)
        if after < 0:
            return -1
        start = after - _value_length(data, pos + 1)
        if tag == 0x0A:
            if key_start >= 0:
                return -1  # a repeated key field: the general path
            key_start, key_end = start, after
        else:
            if value_start >= 0:
                return -1
            value_start, value_end = start, after
        pos = after
    if key_start < 0 or key_end == key_start:
        return -1
    if not _text_ok(data, key_start, key_end, 128):
        return -1
    if value_start >= 0 and not _text_ok(data, value_start, value_end, 1024):
        return -1
    key = data[key_start:key_end]
    if key in keys:
        return -1
    if key == _HEARTBEAT_KEY:
        value = data[value_start:value_end] if value_start >= 0 else b""
        if not value.isascii():
            return -1  # the general path lowers it the way Unicode does
        return 2 if value.lower() == b"true" else 1
    return 0


def _binary(data: bytes, pos: int, end: int) -> bool:
    """Whether the ``BinaryFrame`` in ``data[pos:end]`` is valid (payload ≤ 10 MiB, a
    ``mime_type`` of UTF-8 ≤ 255 characters); False also for what needs a closer look."""
    while pos < end:
        tag = data[pos]
        if tag >= 0x80:
            return False
        wire_type = tag & 7
        if tag >> 3 == 0:
            return False
        after = _skip(data, pos + 1, end, wire_type)
        if after < 0:
            return False
        if tag == 0x0A or tag == 0x12:
            start = after - _value_length(data, pos + 1)
            if tag == 0x0A:
                if after - start > _MAX_FRAME:
                    return False
            elif not _text_ok(data, start, after, 255):
                return False
        elif tag >> 3 == 1 or tag >> 3 == 2:
            return False  # payload or mime_type with the wrong wire type
        pos = after
    return True


def _value_length(data: bytes, pos: int) -> int:
    """The length prefix of the LEN field value starting at ``pos`` (known well-formed)."""
    length = 0
    shift = 0
    while True:
        byte = data[pos]
        pos += 1
        length |= (byte & 0x7F) << shift
        if byte < 0x80:
            return length
        shift += 7


def _utf8_ok(data: bytes, start: int, end: int) -> bool:
    """Whether ``data[start:end]`` is UTF-8 (proto3 ``string`` fields must be)."""
    chunk = data[start:end]
    if chunk.isascii():
        return True
    try:
        chunk.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _struct_ok(data: bytes, pos: int, end: int, depth: int) -> bool:
    """Whether the ``google.protobuf.Struct`` in ``data[pos:end]``, at nesting level
    ``depth``, is valid: UTF-8 keys and strings, at most :data:`_MAX_DEPTH` levels of
    Struct/ListValue. False also for anything unusual (unknown fields, wire types, repeated
    keys in an entry): the general checks decide those."""
    if depth > _MAX_DEPTH:
        return False
    while pos < end:
        if data[pos] != 0x0A:
            return False
        after = _skip(data, pos + 1, end, 2)
        if after < 0:
            return False
        entry = after - _value_length(data, pos + 1)
        key_seen = value_seen = False
        while entry < after:
            tag = data[entry]
            if tag != 0x0A and tag != 0x12:
                return False
            field_end = _skip(data, entry + 1, after, 2)
            if field_end < 0:
                return False
            start = field_end - _value_length(data, entry + 1)
            if tag == 0x0A:
                if key_seen or not _utf8_ok(data, start, field_end):
                    return False
                key_seen = True
            else:
                if value_seen or not _value_ok(data, start, field_end, depth):
                    return False
                value_seen = True
            entry = field_end
        pos = after
    return True


def _list_ok(data: bytes, pos: int, end: int, depth: int) -> bool:
    """:func:`_struct_ok` for a ``google.protobuf.ListValue``."""
    if depth > _MAX_DEPTH:
        return False
    while pos < end:
        if data[pos] != 0x0A:
            return False
        after = _skip(data, pos + 1, end, 2)
        if after < 0:
            return False
        if not _value_ok(data, after - _value_length(data, pos + 1), after, depth):
            return False
        pos = after
    return True


def _value_ok(data: bytes, pos: int, end: int, depth: int) -> bool:
    """:func:`_struct_ok` for a ``google.protobuf.Value`` inside a level-``depth``
    container (null, number, string, bool, Struct or ListValue)."""
    while pos < end:
        tag = data[pos]
        if tag == 0x08 or tag == 0x20:  # null_value, bool_value
            after = _skip(data, pos + 1, end, 0)
            if after < 0:
                return False
        elif tag == 0x11:  # number_value
            after = _skip(data, pos + 1, end, 1)
            if after < 0:
                return False
        elif tag == 0x1A or tag == 0x2A or tag == 0x32:
            after = _skip(data, pos + 1, end, 2)
            if after < 0:
                return False
            start = after - _value_length(data, pos + 1)
            if tag == 0x1A:
                if not _utf8_ok(data, start, after):
                    return False
            elif tag == 0x2A:
                if not _struct_ok(data, start, after, depth + 1):
                    return False
            elif not _list_ok(data, start, after, depth + 1):
                return False
        else:
            return False
        pos = after
    return True


def _envelope(data: bytes, pos: int, end: int) -> bool:
    """Whether the ``StreamEnvelope`` in ``data[pos:end]`` is valid with no chunk fields
    (``stream_id`` and ``partition`` UTF-8 of at most 128 characters, a ``sequence``); False
    also for chunked envelopes, which the general checks decide."""
    while pos < end:
        tag = data[pos]
        if tag == 0x0A or tag == 0x1A:
            after = _skip(data, pos + 1, end, 2)
            if after < 0 or not _text_ok(data, after - _value_length(data, pos + 1), after, 128):
                return False
        elif tag == 0x10:
            after = _skip(data, pos + 1, end, 0)
            if after < 0:
                return False
        else:
            return False
        pos = after
    return True


def scan_packet(
    data: bytes, start: int, end: int, layout: tuple[int, ...], keys: tuple[bytes, ...]
) -> tuple[int, int, int]:
    """Scan the packet in ``data[start:end]``, numbered as ``layout`` says (a
    ``PacketLayout`` value: metadata, payload, inputs, transports, audio, video, binary,
    envelope): (kind, envelope field start, envelope field end).

    ``kind`` is :data:`DATA`, :data:`HEARTBEAT` or :data:`SLOW`; the envelope bounds are -1
    without one. A packet carrying one of ``keys`` in its metadata is :data:`SLOW`. Never
    raises, whatever the bytes.
    """
    metadata_number = layout[0]
    binary_number = layout[6]
    envelope_number = layout[7]
    kind = DATA
    entries = 0
    envelope_start = envelope_end = -1
    pos = start
    while pos < end:
        tag = data[pos]
        if tag >= 0x80:
            return SLOW, 0, 0
        number = tag >> 3
        wire_type = tag & 7
        if number == 0:
            return SLOW, 0, 0
        after = _skip(data, pos + 1, end, wire_type)
        if after < 0:
            return SLOW, 0, 0
        if number <= 8 and wire_type != 2:
            return SLOW, 0, 0  # a known field with the wrong wire type
        if number == metadata_number:
            entries += 1
            if entries > _MAX_ENTRIES:
                return SLOW, 0, 0
            checked = _entry(data, after - _value_length(data, pos + 1), after, keys)
            if checked < 0:
                return SLOW, 0, 0
            if checked:
                kind = HEARTBEAT if checked == 2 else DATA
        elif number == binary_number:
            if not _binary(data, after - _value_length(data, pos + 1), after):
                return SLOW, 0, 0
        elif number == envelope_number:
            if envelope_start >= 0:
                return SLOW, 0, 0  # repeated envelope fields merge: the general path
            if not _envelope(data, after - _value_length(data, pos + 1), after):
                return SLOW, 0, 0
            envelope_start, envelope_end = pos, after
        elif number == layout[1] or number == layout[2]:
            if not _struct_ok(data, after - _value_length(data, pos + 1), after, 1):
                return SLOW, 0, 0
        elif number <= 8:
            return SLOW, 0, 0  # transports, audio, video: the general checks
        pos = after
    return kind, envelope_start, envelope_end


def packet_parts(data: bytes) -> tuple[list[str], int, int, int, int, int, int]:
    """The parts of a valid ``DataPacket`` a Story primitive reads, in one walk: its metadata
    as a flat ``[key, value, key, value, ...]`` list, then the value bounds (start, end) of
    ``payload``, ``inputs`` and the envelope, each (-1, -1) when absent. The payload start is
    -2 when the packet is not one this walk answers for (a repeated ``payload``, ``inputs``
    or envelope field, which protobuf merges): the caller reads it the general way."""
    metadata: list[str] = []
    payload_start = payload_end = inputs_start = inputs_end = -1
    envelope_start = envelope_end = -1
    end = len(data)
    pos = 0
    while pos < end:
        tag = data[pos]
        if tag >= 0x80:
            return metadata, -2, -2, -1, -1, -1, -1
        number = tag >> 3
        wire_type = tag & 7
        after = _skip(data, pos + 1, end, wire_type)
        if after < 0:
            return metadata, -2, -2, -1, -1, -1, -1
        if wire_type == 2 and number <= 8:
            value_start = after - _value_length(data, pos + 1)
            if number == 1:
                key = value = ""
                inner = value_start
                while inner < after:
                    inner_tag = data[inner]
                    inner_after = _skip(data, inner + 1, after, inner_tag & 7)
                    if inner_tag >= 0x80 or inner_after < 0:
                        return metadata, -2, -2, -1, -1, -1, -1
                    if inner_tag == 0x0A or inner_tag == 0x12:
                        text_start = inner_after - _value_length(data, inner + 1)
                        text = data[text_start:inner_after].decode("utf-8")
                        if inner_tag == 0x0A:
                            key = text
                        else:
                            value = text
                    inner = inner_after
                metadata.append(key)
                metadata.append(value)
            elif number == 2:
                if payload_start != -1:
                    return metadata, -2, -2, -1, -1, -1, -1
                payload_start, payload_end = value_start, after
            elif number == 3:
                if inputs_start != -1:
                    return metadata, -2, -2, -1, -1, -1, -1
                inputs_start, inputs_end = value_start, after
            elif number == 8:
                if envelope_start != -1:
                    return metadata, -2, -2, -1, -1, -1, -1
                envelope_start, envelope_end = value_start, after
        pos = after
    return (
        metadata,
        payload_start,
        payload_end,
        inputs_start,
        inputs_end,
        envelope_start,
        envelope_end,
    )


def scan_process(raw: bytes, limit: int, keys: tuple[bytes, ...]) -> tuple[int, int, int, int, int]:
    """Scan one ``ProcessRequest`` (or ``ProcessResponse``): (kind, packet start, packet end,
    envelope field start, envelope field end).

    ``kind`` is :data:`DATA`, :data:`HEARTBEAT`, :data:`NO_PACKET` or :data:`SLOW`; the
    envelope bounds are -1 without an envelope. ``limit`` is the largest packet accepted;
    ``keys`` are the metadata keys a retarget overwrites (a packet that carries one takes the
    general path). Never raises, whatever the bytes.
    """
    end = len(raw)
    pos = 0
    packet_start = packet_end = -1
    while pos < end:
        tag = raw[pos]
        if tag == 0x0A or tag == 0x12:
            start = pos + 1
            after = _skip(raw, start, end, 2)
            if after < 0:
                return SLOW, 0, 0, 0, 0
            if tag == 0x0A:
                if packet_start >= 0:
                    return SLOW, 0, 0, 0, 0  # a repeated packet field merges: general path
                packet_end = after
                packet_start = after - _value_length(raw, start)
            pos = after
        else:
            return SLOW, 0, 0, 0, 0
    if packet_start < 0:
        return NO_PACKET, 0, 0, -1, -1
    if packet_end - packet_start > limit:
        return SLOW, 0, 0, 0, 0
    kind, envelope_start, envelope_end = scan_packet(
        raw, packet_start, packet_end, _DATA_PACKET, keys
    )
    if kind == SLOW:
        return SLOW, 0, 0, 0, 0
    return kind, packet_start, packet_end, envelope_start, envelope_end


def retag_table(source: tuple[int, ...], target: tuple[int, ...]) -> bytes:
    """The tag translation from packet layout ``source`` to ``target`` (two
    ``PacketLayout`` values): for each one-byte tag, the tag it becomes."""
    table = bytearray(range(256))
    for index, number in enumerate(source):
        table[number << 3 | 2] = target[index] << 3 | 2
    return bytes(table)


def retag(data: bytes, start: int, end: int, table: bytes) -> bytes:
    """The packet in ``data[start:end]`` (scanned: one-byte tags) with each top-level tag
    translated by ``table`` (:func:`retag_table`); values are copied untouched."""
    out = bytearray(data[start:end])
    pos = start
    while pos < end:
        tag = data[pos]
        out[pos - start] = table[tag]
        after = _skip(data, pos + 1, end, tag & 7)
        if after < 0:
            raise ValueError("retag needs a packet scan_packet accepted")
        pos = after
    return bytes(out)


@final
class TargetStamp:
    """One target step's rewrite of scanned packets, with its constant bytes encoded once.

    :meth:`stamp` gives the ``ProcessResponse`` bytes equal to
    ``wrap_process_message(Retargeter(...)(packet, sequence))``; :attr:`general` is that
    :class:`~bobravoz.protocol.packets.Retargeter`, for what the scan left to the general
    path.
    """

    def __init__(self, *, metadata_updates: Mapping[str, str], stream_id: str) -> None:
        from bobravoz.protocol.wire import PacketLayout, encode_len_field

        self.general = Retargeter(
            layout=PacketLayout.DATA_PACKET,
            metadata_updates=metadata_updates,
            stream_id=stream_id,
        )
        self.keys: tuple[bytes, ...] = tuple(key.encode() for key in metadata_updates)
        #: The identity metadata this stamp writes (for a rewrite that also sets others).
        self.updates: dict[str, str] = dict(metadata_updates)
        self.entries: bytes = b"".join(
            encode_len_field(_METADATA, encode_string_field(1, key) + encode_string_field(2, value))
            for key, value in metadata_updates.items()
        )
        self.stream_id = stream_id
        self.stream_id_field: bytes = encode_string_field(1, stream_id) if stream_id else b""
        #: Bytes :meth:`stamp` adds to a packet at most, less 32 (tags, lengths, sequence).
        self.overhead: int = len(self.entries) + len(self.stream_id_field)
        # The constant parts of a stamped packet's tail: entries, envelope tag | envelope
        # length | stream_id field, sequence tag | sequence.
        self._entries_envelope_tag: bytes = self.entries + _ENVELOPE_TAG
        self._stream_id_sequence_tag: bytes = self.stream_id_field + b"\x10"
        self._envelope_fixed: int = len(self._stream_id_sequence_tag)
        self._tail_fixed: int = len(self._entries_envelope_tag) + self._envelope_fixed

    def stamp(self, raw: bytes, start: int, end: int, sequence: int) -> bytes:
        """The ``ProcessResponse`` for the packet ``raw[start:end]`` (scanned, no envelope),
        stamped with ``sequence`` (0: a heartbeat, left unstamped)."""
        if sequence == 0:
            size = end - start + len(self.entries)
            return b"".join((_PACKET_TAG, _varint(size), raw[start:end], self.entries))
        stamp = _varint(sequence)
        envelope_size = _varint(self._envelope_fixed + len(stamp))
        size = end - start + self._tail_fixed + len(envelope_size) + len(stamp)
        return b"".join(
            (
                _PACKET_TAG,
                _varint(size),
                raw[start:end],
                self._entries_envelope_tag,
                envelope_size,
                self._stream_id_sequence_tag,
                stamp,
            )
        )


def stamp_scanned(
    stamp: TargetStamp, raw: bytes, start: int, end: int, envelope: int, sequence: int
) -> bytes:
    """The ``ProcessResponse`` for the packet :func:`scan_process` found in
    ``raw[start:end]`` (``envelope``: its envelope field's start, -1 without one), stamped
    with ``sequence`` (0: a heartbeat): :meth:`TargetStamp.stamp`, or the general restamp when
    the packet's own envelope must be rewritten."""
    if envelope < 0:
        return stamp.stamp(raw, start, end, sequence)
    return restamp(stamp, raw[start:end], sequence or None)


def stamp_run(
    batch: list[bytes],
    start: int,
    limit: int,
    keys: tuple[bytes, ...],
    stamp: TargetStamp,
    sequence: int,
    out: list[bytes],
) -> tuple[int, int, int, int]:
    """Scan and stamp ``batch[start:]`` for one target while each message is a plain
    packet (:data:`DATA` or :data:`HEARTBEAT`, no envelope), appending each stamped
    ``ProcessResponse`` to ``out``; data packets get ``sequence``, ``sequence + 1``, ...

    Returns (index of the first message not taken, the next sequence, data packets taken,
    their bytes). The first message it stops at needs the caller's per-message path.
    """
    index = start
    count = len(batch)
    packets = 0
    size = 0
    while index < count:
        raw = batch[index]
        kind, packet_start, packet_end, envelope, _ = scan_process(raw, limit, keys)
        if envelope >= 0:
            break
        if kind == DATA:
            out.append(stamp.stamp(raw, packet_start, packet_end, sequence))
            sequence += 1
            packets += 1
            size += packet_end - packet_start
        elif kind == HEARTBEAT:
            out.append(stamp.stamp(raw, packet_start, packet_end, 0))
        else:
            break
        index += 1
    return index, sequence, packets, size


def _map_key(data: bytes, pos: int, end: int) -> bytes:
    """The key bytes of the (well-formed) map entry in ``data[pos:end]``; the last one wins."""
    key = b""
    while pos < end:
        tag = data[pos]
        after = _skip(data, pos + 1, end, tag & 7)
        if after < 0:
            return key
        if tag == 0x0A:
            key = data[after - _value_length(data, pos + 1) : after]
        pos = after
    return key


def stamp_rewritten(
    stamp: TargetStamp,
    packet: bytes,
    entries: bytes,
    keys: tuple[bytes, ...],
    inputs: bytes | None,
    payload: bytes | None,
    partition: str | None,
    sequence: int,
) -> bytes:
    """The ``ProcessResponse`` for a valid ``DataPacket`` rewritten for ``stamp``'s target in
    one walk: metadata entries whose key is in ``keys`` or the stamp's are replaced by
    ``entries`` (encoded map-entry fields) and the stamp's own; ``inputs`` and ``payload``
    (Struct bytes, None: kept) replace those fields; the envelope gets ``partition`` (None:
    kept) and, unless ``sequence`` is 0 (a heartbeat), the stamp's stream id and
    ``sequence``. Equal to the general path's bytes up to field order."""
    end = len(packet)
    out = bytearray()
    envelope = bytearray()
    has_envelope = False
    restamp_envelope = sequence != 0 or partition is not None
    replaced_keys = stamp.keys + keys
    pos = 0
    while pos < end:
        tag = packet[pos]
        after = _skip(packet, pos + 1, end, tag & 7)
        if tag >= 0x80 or after < 0:
            raise ValueError("stamp_rewritten needs a packet scan_packet accepted")
        if tag == 0x0A:
            value_start = after - _value_length(packet, pos + 1)
            if _map_key(packet, value_start, after) in replaced_keys:
                pos = after
                continue
        elif (tag == 0x1A and inputs is not None) or (tag == 0x12 and payload is not None):
            pos = after
            continue
        elif tag == 0x42 and restamp_envelope:
            has_envelope = True
            envelope += packet[after - _value_length(packet, pos + 1) : after]
            pos = after
            continue
        out += packet[pos:after]
        pos = after
    out += entries
    out += stamp.entries
    if payload is not None:
        out += b"\x12" + _varint(len(payload)) + payload
    if inputs is not None:
        out += b"\x1a" + _varint(len(inputs)) + inputs
    if restamp_envelope:
        body = bytearray()
        if sequence != 0:
            body += stamp.stream_id_field + b"\x10" + _varint(sequence)
        if partition:
            body += encode_string_field(3, partition)
        if has_envelope:
            old = bytes(envelope)
            epos = 0
            eend = len(old)
            while epos < eend:
                etag = old[epos]
                eafter = _skip(old, epos + 1, eend, etag & 7)
                if eafter < 0:
                    raise ValueError("stamp_rewritten needs a packet scan_packet accepted")
                drop = (sequence != 0 and (etag == 0x0A or etag == 0x10)) or (
                    partition is not None and etag == 0x1A
                )
                if not drop:
                    body += old[epos:eafter]
                epos = eafter
        out += _ENVELOPE_TAG + _varint(len(body)) + body
    return _PACKET_TAG + _varint(len(out)) + bytes(out)


def restamp(stamp: TargetStamp, packet: bytes, sequence: int | None) -> bytes:
    """The general path's ``ProcessResponse`` for ``packet`` (any valid packet)."""
    from bobravoz.protocol.packets import wrap_process_message

    return wrap_process_message(stamp.general(packet, sequence))


__all__ = [
    "DATA",
    "DATA_PACKET_LAYOUT",
    "DATA_REQUEST_LAYOUT",
    "HEARTBEAT",
    "NO_PACKET",
    "SLOW",
    "TargetStamp",
    "packet_parts",
    "restamp",
    "retag",
    "retag_table",
    "scan_packet",
    "scan_process",
    "stamp_rewritten",
    "stamp_run",
    "stamp_scanned",
]
