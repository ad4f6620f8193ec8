"""Base64 and base32 decoding exactly as Go's ``encoding/base64`` and ``encoding/base32``
(standard alphabets, padding required, ``\\r`` and ``\\n`` ignored).

Sprig's ``b64dec``/``b32dec`` return Go's error text instead of failing, e.g.
``illegal base64 data at input byte 4``, so the byte offsets reported here follow Go's
decoders step by step (including what they accept: base32 ignores anything after its
padding, base64 accepts non-zero trailing bits).
"""

from __future__ import annotations

from typing import Final

_B64_ALPHABET: Final = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_B32_ALPHABET: Final = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
_B64: Final = {byte: position for position, byte in enumerate(_B64_ALPHABET)}
_B32: Final = {byte: position for position, byte in enumerate(_B32_ALPHABET)}
_PAD: Final = ord("=")
_NEWLINES: Final = (0x0A, 0x0D)


def _b64_quantum(src: bytes, index: int) -> tuple[int, bytes, int | None]:
    """Go's ``decodeQuantum``: (next index, decoded bytes, error offset or None)."""
    quad = [0, 0, 0, 0]
    length = 4
    error: int | None = None
    filled = 0
    while filled < 4:
        if index == len(src):
            if filled == 0:
                return index, b"", None
            return index, b"", index - filled
        char = src[index]
        index += 1
        value = _B64.get(char)
        if value is not None:
            quad[filled] = value
            filled += 1
            continue
        if char in _NEWLINES:
            continue
        if char != _PAD or filled < 2:
            return index, b"", index - 1
        if filled == 2:
            # "==" is expected: the first "=" is consumed, newlines may sit between.
            while index < len(src) and src[index] in _NEWLINES:
                index += 1
            if index == len(src):
                return index, b"", len(src)
            if src[index] != _PAD:
                return index, b"", index - 1
            index += 1
        while index < len(src) and src[index] in _NEWLINES:
            index += 1
        if index < len(src):
            error = index  # trailing garbage
        length = filled
        break
    value = quad[0] << 18 | quad[1] << 12 | quad[2] << 6 | quad[3]
    decoded = bytes(((value >> 16) & 0xFF, (value >> 8) & 0xFF, value & 0xFF))
    return index, decoded[: length - 1], error


def b64decode(data: bytes) -> tuple[bytes, int | None]:
    """Go's ``base64.StdEncoding.DecodeString``: the bytes, and the offset of the first
    illegal byte (None when valid)."""
    out = bytearray()
    index = 0
    while index < len(data):
        index, decoded, error = _b64_quantum(data, index)
        out += decoded
        if error is not None:
            return bytes(out), error
    return bytes(out), None


def _b32_pack(block: list[int], length: int) -> bytes:
    packed = [
        block[0] << 3 | block[1] >> 2,
        block[1] << 6 | block[2] << 1 | block[3] >> 4,
        block[3] << 4 | block[4] >> 1,
        block[4] << 7 | block[5] << 2 | block[6] >> 3,
        block[6] << 5 | block[7],
    ]
    count = {8: 5, 7: 4, 5: 3, 4: 2, 2: 1}[length]
    return bytes(byte & 0xFF for byte in packed[:count])


def b32decode(data: bytes) -> tuple[bytes, int | None]:
    """Go's ``base32.StdEncoding.DecodeString``: the bytes, and the offset (after removing
    newlines, as Go counts it) of the first illegal byte (None when valid)."""
    src = bytes(byte for byte in data if byte not in _NEWLINES)
    total = len(src)
    out = bytearray()
    index = 0
    end = False
    while index < total and not end:
        block = [0] * 8
        length = 8
        filled = 0
        while filled < 8:
            if index == total:
                return bytes(out), total - filled
            char = src[index]
            index += 1
            remaining = total - index
            if char == _PAD and filled >= 2 and remaining < 8:
                if remaining + filled < 7:
                    return bytes(out), total
                for ahead in range(7 - filled):
                    if remaining > ahead and src[index + ahead] != _PAD:
                        return bytes(out), total - remaining + ahead - 1
                length = filled
                end = True
                if length in (1, 3, 6):
                    return bytes(out), total - remaining - 1
                break
            value = _B32.get(char)
            if value is None:
                return bytes(out), total - remaining - 1
            block[filled] = value
            filled += 1
        out += _b32_pack(block, length)
    return bytes(out), None
