"""gRPC message framing on the wire: a 1-byte compressed flag and a 4-byte big-endian length
before each message. Several messages travel in one HTTP/2 DATA frame and a message may span
frames, so readers split what arrived and keep the incomplete rest for the next read.

Size limits are checked on the length prefix, before a message's body is kept anywhere: a
reader learns that a message is too large from its first five bytes (:func:`declared_length`
of the incomplete rest :func:`split_messages` leaves).

Pure code, compiled with mypyc beside :mod:`bobravoz.protocol.scan` when built (the
pure-Python module runs otherwise; tests hold both to the same answers).
"""

from __future__ import annotations

import struct
from typing import Final

#: The prefix of one message: compressed flag, big-endian length.
_PREFIX: Final = struct.Struct(">?I")
#: No limit: the largest length a prefix can declare.
UNLIMITED: Final = 0xFFFFFFFF


def split_messages(data: bytes, limit: int = UNLIMITED) -> tuple[list[bytes], bytes]:
    """The complete messages at the start of ``data``, and the bytes after them: an
    incomplete message, or (from its prefix on) the first message declared longer than
    ``limit``, which is never returned as a message. Raises ``ValueError`` for a compressed
    message (the transport never negotiates compression)."""
    messages: list[bytes] = []
    offset = 0
    size = len(data)
    while offset + 5 <= size:
        length = (
            (data[offset + 1] << 24)
            | (data[offset + 2] << 16)
            | (data[offset + 3] << 8)
            | data[offset + 4]
        )
        start = offset + 5
        if start + length > size or length > limit:
            break
        if data[offset]:
            raise ValueError("a compressed gRPC message (compression is not negotiated)")
        messages.append(data[start : start + length])
        offset = start + length
    return messages, data[offset:] if offset < size else b""


def declared_length(rest: bytes) -> int:
    """The length the message starting ``rest`` declares; -1 before its prefix is complete."""
    if len(rest) < 5:
        return -1
    return (rest[1] << 24) | (rest[2] << 16) | (rest[3] << 8) | rest[4]


def frame_messages(messages: list[bytes], limit: int = UNLIMITED) -> bytes:
    """``messages`` each with its length prefix, concatenated (one HTTP/2 write). Raises
    ``ValueError`` (framing nothing) when one is longer than ``limit`` bytes."""
    pack = _PREFIX.pack
    parts: list[bytes] = []
    for message in messages:
        length = len(message)
        if length > limit:
            raise ValueError(f"a message of {length} bytes is over the {limit}-byte limit")
        parts.append(pack(False, length))
        parts.append(message)
    return b"".join(parts)
