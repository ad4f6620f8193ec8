"""Choose the envelope partition of an outbound packet from a transport's ``partitioning``.

``mode``:

* ``none`` — the partition is left as it is.
* ``preserve`` — an existing partition is kept; otherwise the key value becomes the
  partition (a value longer than 128 UTF-8 bytes is replaced by its ``h<hex>`` hash, so it
  fits the wire's 128 limit).
* ``hash`` — FNV-1a (32-bit) of the key value: ``p<hash % partitions>`` when ``partitions``
  is positive, else ``h<8 lower-case hex digits>``.

``sticky`` keeps an existing non-empty partition whatever the mode. When the key has no
value in the packet (missing, or blank after trimming), the existing partition is kept.

The key is a path: ``metadata.<name>`` (the rest of the path, dots included, is the metadata
key), ``payload.<a.b.c>`` and ``inputs.<a.b.c>`` (walk nested JSON objects),
``envelope.stream_id`` | ``envelope.sequence`` (0 counts as no value) |
``envelope.partition``, or else the whole key as a metadata key. Without a key, metadata
``partition_key``, ``partition-key``, ``bubu.partition_key`` and ``bubu.partition`` are
tried in that order. Values are trimmed; JSON numbers with no fraction read as integers
(``3.0`` → ``3``), booleans as ``true``/``false``, arrays and objects as compact JSON.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final, Literal, final, get_args

__all__ = [
    "DEFAULT_PARTITION_KEYS",
    "MAX_PARTITION_BYTES",
    "PartitionMode",
    "PartitionPolicy",
    "choose_partition",
    "fnv1a_32",
    "hash_partition",
    "partition_key_value",
]

#: ``partitioning.mode``.
PartitionMode = Literal["none", "preserve", "hash"]

#: Metadata keys read, in order, when the policy names no key.
DEFAULT_PARTITION_KEYS: Final = (
    "partition_key",
    "partition-key",
    "bubu.partition_key",
    "bubu.partition",
)
#: The longest partition the wire carries (``StreamEnvelope.partition``), in UTF-8 bytes.
MAX_PARTITION_BYTES: Final = 128

_MODES: Final = frozenset(get_args(PartitionMode))
_FNV32_OFFSET: Final = 0x811C9DC5
_FNV32_PRIME: Final = 0x01000193


@final
@dataclass(frozen=True, slots=True)
class PartitionPolicy:
    """A transport's ``partitioning`` settings (see the module docstring for the rules)."""

    mode: PartitionMode = "none"
    key: str | None = None
    partitions: int | None = None
    sticky: bool = False

    def __post_init__(self) -> None:
        if self.mode not in _MODES:
            raise ValueError(f"partitioning mode {self.mode!r}: one of none, preserve, hash")


def fnv1a_32(data: bytes) -> int:
    """The 32-bit FNV-1a hash of ``data``."""
    value = _FNV32_OFFSET
    for byte in data:
        value = ((value ^ byte) * _FNV32_PRIME) & 0xFFFFFFFF
    return value


def hash_partition(value: str, partitions: int | None) -> str:
    """``p<n>`` with n = FNV-1a(value) % partitions when ``partitions`` is positive, else
    ``h`` and the hash as 8 lower-case hex digits."""
    digest = fnv1a_32(value.encode("utf-8"))
    if partitions is not None and partitions > 0:
        return f"p{digest % partitions}"
    return f"h{digest:08x}"


def choose_partition(
    policy: PartitionPolicy,
    *,
    existing: str,
    metadata: Mapping[str, str],
    payload: Mapping[str, Any] | None,
    inputs: Mapping[str, Any] | None,
    stream_id: str,
    sequence: int,
) -> str:
    """The partition the packet should carry under ``policy`` (``existing`` is its current
    envelope partition, ``""`` for none). Deterministic: the same inputs give the same
    partition."""
    if policy.mode == "none" or (policy.sticky and existing):
        return existing
    if policy.mode == "preserve" and existing:
        return existing
    value = partition_key_value(
        policy.key,
        metadata=metadata,
        payload=payload,
        inputs=inputs,
        stream_id=stream_id,
        sequence=sequence,
        partition=existing,
    )
    if not value:
        return existing
    if policy.mode == "hash":
        return hash_partition(value, policy.partitions)
    if len(value.encode("utf-8")) <= MAX_PARTITION_BYTES:
        return value
    return hash_partition(value, None)


def partition_key_value(
    key: str | None,
    *,
    metadata: Mapping[str, str],
    payload: Mapping[str, Any] | None,
    inputs: Mapping[str, Any] | None,
    stream_id: str,
    sequence: int,
    partition: str,
) -> str:
    """The trimmed value ``key`` names in the packet, ``""`` when it has none (see the
    module docstring for the key paths and the defaults when ``key`` is None or blank)."""
    key = (key or "").strip()
    if not key:
        for name in DEFAULT_PARTITION_KEYS:
            value = metadata.get(name, "").strip()
            if value:
                return value
        return ""
    prefix, _, rest = key.partition(".")
    match prefix.strip().lower():
        case "metadata":
            return metadata.get(rest, "").strip() if rest else ""
        case "payload":
            return _json_path(payload, rest)
        case "inputs":
            return _json_path(inputs, rest)
        case "envelope":
            return _envelope_field(
                rest, stream_id=stream_id, sequence=sequence, partition=partition
            )
        case _:
            return metadata.get(key, "").strip()


def _envelope_field(name: str, *, stream_id: str, sequence: int, partition: str) -> str:
    match name.strip().lower():
        case "stream_id" | "streamid":
            return stream_id.strip()
        case "sequence":
            return str(sequence) if sequence else ""
        case "partition":
            return partition.strip()
        case _:
            return ""


def _json_path(root: Mapping[str, Any] | None, path: str) -> str:
    if root is None or not path:
        return ""
    current: Any = root
    for segment in path.split("."):
        name = segment.strip()
        if not name or not isinstance(current, Mapping) or name not in current:
            return ""
        current = current[name]
    return _text(current)


def _text(value: Any) -> str:
    """A JSON value as partition-key text."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if value.is_integer():
            return str(int(value))
        return format(Decimal(repr(value)), "f")
    if isinstance(value, str):
        return value.strip()
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str).strip()
