"""Shared base of the typed Kubernetes resource models: camelCase keys, unknown fields
ignored (newer operators must not break us), and conversion errors that name the field path."""

from __future__ import annotations

import re
from typing import Any, Final, TypeVar, final

import msgspec

_PATH: Final = re.compile(r"at `(\$[^`]*)`")
M = TypeVar("M")


class ResourceError(ValueError):
    """A resource that cannot be used; ``path`` is the JSON path of the offending field."""

    def __init__(self, source: str, path: str, message: str) -> None:
        super().__init__(f"{source}: {path}: {message}")
        self.source = source
        self.path = path


class Model(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """Base of resource structs: camelCase on the wire, unknown fields ignored."""


@final
class ObjectMeta(Model, frozen=True):
    """The parts of ``metadata`` bobravoz reads."""

    name: str
    namespace: str = "default"
    annotations: dict[str, str] = msgspec.field(default_factory=dict)
    labels: dict[str, str] = msgspec.field(default_factory=dict)
    uid: str | None = None
    resource_version: str | None = None
    generation: int | None = None
    finalizers: tuple[str, ...] = ()
    deletion_timestamp: str | None = None


def convert_document(
    document: Any, cls: type[M], *, source: str, error: type[ResourceError] = ResourceError
) -> M:
    """``msgspec.convert`` with failures raised as ``error`` carrying the field path."""
    try:
        return msgspec.convert(document, cls)
    except msgspec.ValidationError as failure:
        message = str(failure)
        match = _PATH.search(message)
        path = match.group(1) if match else "$"
        raise error(source, path, _PATH.sub("", message).rstrip(" -")) from None
