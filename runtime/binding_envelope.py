"""The ``BUBU_TRANSPORT_BINDING`` envelope: a binding's name plus its ``BindingInfo`` as JSON.

Shape (protojson of ``BindingInfo`` under ``binding``; ``payload`` is base64)::

    {"name": "run-sink-transport", "namespace": "default",
     "binding": {"transportRef": "bobravoz-grpc", "driver": "grpc",
                 "endpoint": "unix:///tmp/sink.sock", "protocolVersion": "1.0.0"}}

Parsing follows the Go core rules: trimmed, at most 1 MiB, must be a JSON object with a
non-empty ``name`` and a ``binding`` object, and ``protocolVersion`` must be ``1.0.0``.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any, Final, final

PROTOCOL_VERSION: Final = "1.0.0"
MAX_ENVELOPE_BYTES: Final = 1024 * 1024

_KEYS: Final = {
    "transportRef": "transport_ref",
    "transport_ref": "transport_ref",
    "driver": "driver",
    "endpoint": "endpoint",
    "audioCodecs": "audio_codecs",
    "audio_codecs": "audio_codecs",
    "videoCodecs": "video_codecs",
    "video_codecs": "video_codecs",
    "payload": "payload",
    "binaryTypes": "binary_types",
    "binary_types": "binary_types",
    "protocolVersion": "protocol_version",
    "protocol_version": "protocol_version",
}


@final
class BindingError(ValueError):
    """The binding envelope is missing or malformed; the message says which part."""


@final
@dataclass(frozen=True, slots=True)
class BindingInfo:
    """The fields of ``transport.v1.BindingInfo`` a process needs."""

    endpoint: str
    transport_ref: str = ""
    driver: str = ""
    audio_codecs: tuple[str, ...] = ()
    video_codecs: tuple[str, ...] = ()
    binary_types: tuple[str, ...] = ()
    payload: bytes = b""
    protocol_version: str = PROTOCOL_VERSION


@final
@dataclass(frozen=True, slots=True)
class BindingEnvelope:
    """A TransportBinding reference and its info, as carried in ``BUBU_TRANSPORT_BINDING``."""

    name: str
    info: BindingInfo
    namespace: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def reference(self) -> str:
        """``namespace/name``, or ``name`` without a namespace."""
        return f"{self.namespace}/{self.name}" if self.namespace else self.name

    def settings(self) -> dict[str, Any]:
        """The provider settings JSON carried in ``payload`` (empty when absent)."""
        if not self.info.payload:
            return {}
        try:
            decoded = json.loads(self.info.payload)
        except (ValueError, RecursionError) as error:
            raise BindingError(f"binding payload is not JSON: {error}") from None
        if not isinstance(decoded, dict):
            raise BindingError("binding payload must be a JSON object")
        return decoded


def encode_binding(envelope: BindingEnvelope) -> str:
    """The JSON text of ``envelope`` (protojson camelCase keys, payload in base64)."""
    info = envelope.info
    binding: dict[str, Any] = {"endpoint": info.endpoint, "protocolVersion": info.protocol_version}
    if info.transport_ref:
        binding["transportRef"] = info.transport_ref
    if info.driver:
        binding["driver"] = info.driver
    if info.audio_codecs:
        binding["audioCodecs"] = list(info.audio_codecs)
    if info.video_codecs:
        binding["videoCodecs"] = list(info.video_codecs)
    if info.binary_types:
        binding["binaryTypes"] = list(info.binary_types)
    if info.payload:
        binding["payload"] = base64.b64encode(info.payload).decode()
    document: dict[str, Any] = {"name": envelope.name, "binding": binding}
    if envelope.namespace:
        document["namespace"] = envelope.namespace
    return json.dumps(document, separators=(",", ":"))


def _strings(key: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise BindingError(f"binding.{key} must be a list of strings")
    return tuple(value)


def parse_binding(text: str) -> BindingEnvelope:
    """Parse and check a ``BUBU_TRANSPORT_BINDING`` value; raise BindingError naming the flaw."""
    value = text.strip()
    if not value:
        raise BindingError("BUBU_TRANSPORT_BINDING is empty")
    try:
        size = len(value.encode())
    except UnicodeEncodeError:  # bytes that are not UTF-8, kept by os.environ as surrogates
        raise BindingError("binding envelope is not valid UTF-8") from None
    if size > MAX_ENVELOPE_BYTES:
        raise BindingError(f"binding envelope is larger than {MAX_ENVELOPE_BYTES} bytes")
    if not value.startswith("{"):
        raise BindingError("binding envelope must be a JSON object with name and binding")
    try:
        document = json.loads(value)
    except (ValueError, RecursionError) as error:  # RecursionError: nested too deep
        raise BindingError(f"binding envelope is not valid JSON: {error}") from None
    if not isinstance(document, dict):
        raise BindingError("binding envelope must be a JSON object")
    name = document.get("name")
    if not isinstance(name, str) or not name.strip():
        raise BindingError("binding envelope is missing name")
    namespace = document.get("namespace", "")
    if not isinstance(namespace, str):
        raise BindingError("binding envelope namespace must be a string")
    raw = document.get("binding")
    if not isinstance(raw, dict) or not raw:
        raise BindingError("binding envelope is missing binding")
    fields: dict[str, Any] = {}
    for key, item in raw.items():
        target = _KEYS.get(key)
        if target is None:
            raise BindingError(f"binding.{key} is not a BindingInfo field")
        if target in {"audio_codecs", "video_codecs", "binary_types"}:
            fields[target] = _strings(key, item)
        elif target == "payload":
            if not isinstance(item, str):
                raise BindingError("binding.payload must be a base64 string")
            try:
                fields[target] = base64.b64decode(item, validate=True)
            except ValueError:  # binascii.Error, or text that is not ASCII
                raise BindingError("binding.payload is not valid base64") from None
        else:
            if not isinstance(item, str):
                raise BindingError(f"binding.{key} must be a string")
            fields[target] = item.strip()
    version = fields.get("protocol_version", "")
    if not version:
        raise BindingError("missing transport protocol version (binding.protocolVersion)")
    if version != PROTOCOL_VERSION:
        raise BindingError(
            f"unsupported transport protocol version {version!r} (this side speaks "
            f"{PROTOCOL_VERSION})"
        )
    if not fields.get("endpoint"):
        raise BindingError("transport binding missing endpoint (binding.endpoint)")
    return BindingEnvelope(
        name=name.strip(), namespace=namespace.strip(), info=BindingInfo(**fields)
    )
