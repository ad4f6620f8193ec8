"""gRPC message framing on the wire: a 1-byte compressed flag and a 4-byte big-endian length
before each message. Several messages travel in one HTTP/2 DATA frame and a message may span
frames, so readers split what arrived and keep the incomplete rest for the next read.

Pure code, compiled with mypyc beside :mod:`bobravoz.protocol.scan` when built (the
pure-Python module runs otherwise; tests hold both to the same answers).
"""

from __future__ import annotations

import struct
from typing import Final

#: The prefix of one message: compressed flag, big-endian length.
_PREFIX: Final = struct.Struct(">?I")


def split_messages(data: bytes) -> tuple[list[bytes], bytes]:
    """The complete messages at the start of ``data``, and the bytes of an incomplete one
    after them. Raises ``ValueError`` for a compressed message (the transport never
    negotiates compression)."""
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
        if start + length > size:
            break
        if data[offset]:
            raise ValueError("a compressed gRPC message (compression is not negotiated)")
        messages.append(data[start : start + length])
        offset = start + length
    return messages, data[offset:] if offset < size else b""


def frame_messages(messages: list[bytes]) -> bytes:
    """``messages`` each with its length prefix, concatenated (one HTTP/2 write)."""
    pack = _PREFIX.pack
    parts: list[bytes] = []
    for message in messages:
        parts.append(pack(False, len(message)))
        parts.append(message)
    return b"".join(parts)
