"""The Process-stream handshake: binding identity from gRPC headers, checked in the Go hub's order.

Sans-IO: :func:`check_handshake` takes the request headers and returns a
:class:`BindingIdentity` or raises :class:`HandshakeError` carrying the gRPC status to answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, final

from bobravoz.runtime.status import StatusCode
from bobravoz.runtime.tls import PeerIdentity

PROTOCOL_HEADER: Final = "bubu-transport-protocol"
PROTOCOL_VERSION: Final = "1.0.0"
STORYRUN_NAME_HEADER: Final = "storyrun-name"
STORYRUN_NAMESPACE_HEADER: Final = "storyrun-namespace"
STEP_HEADER: Final = "current-step-id"
GENERATION_HEADER: Final = "connector-generation"
CAPABILITIES_HEADER: Final = "startup.capabilities"
_INT32_MAX: Final = 2**31 - 1
#: ``BOBRAVOZ_HUB_IDENTITY`` values: bind the claimed namespace to the certificate, or not.
IDENTITY_MODES: Final = ("namespace", "off")


@final
@dataclass(frozen=True, slots=True)
class BindingIdentity:
    """Who a stream speaks for: one step of one StoryRun, at one connector generation."""

    storyrun: str
    namespace: str
    step: str
    generation: int
    capabilities: str = "missing"

    @property
    def key(self) -> str:
        """``namespace/storyrun/step``: the binding's name in metrics and logs."""
        return f"{self.namespace}/{self.storyrun}/{self.step}"

    def headers(self) -> dict[str, str]:
        """The request headers a client sends to claim this identity."""
        return {
            PROTOCOL_HEADER: PROTOCOL_VERSION,
            STORYRUN_NAME_HEADER: self.storyrun,
            STORYRUN_NAMESPACE_HEADER: self.namespace,
            STEP_HEADER: self.step,
            GENERATION_HEADER: str(self.generation),
            CAPABILITIES_HEADER: self.capabilities if self.capabilities != "missing" else "none",
        }


@final
class HandshakeError(Exception):
    """A refused handshake: ``code`` is the gRPC status to answer, ``reason`` a metric label."""

    def __init__(self, code: StatusCode, reason: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message


def check_metadata_limits(
    headers: Mapping[str, str], *, max_entries: int, max_value_bytes: int
) -> None:
    """Refuse (RESOURCE_EXHAUSTED naming the limit) request metadata of more than
    ``max_entries`` entries or with a value longer than ``max_value_bytes``. Checked before
    anything else reads the headers (the whole header list is bounded by HTTP/2's
    SETTINGS_MAX_HEADER_LIST_SIZE below this)."""
    if len(headers) > max_entries:
        raise HandshakeError(
            StatusCode.RESOURCE_EXHAUSTED,
            "metadata_entries",
            f"{len(headers)} metadata entries; the limit is {max_entries}",
        )
    for name, value in headers.items():
        if len(value) > max_value_bytes:
            raise HandshakeError(
                StatusCode.RESOURCE_EXHAUSTED,
                "metadata_value_too_long",
                f"metadata {name[:64]!r} has a {len(value)}-byte value; "
                f"the limit is {max_value_bytes} bytes",
            )


def check_protocol(headers: Mapping[str, str]) -> None:
    """Require ``bubu-transport-protocol: 1.0.0`` or raise FAILED_PRECONDITION."""
    version = headers.get(PROTOCOL_HEADER, "").strip()
    if not version:
        raise HandshakeError(
            StatusCode.FAILED_PRECONDITION,
            "protocol_missing",
            f"missing header {PROTOCOL_HEADER} (this hub speaks {PROTOCOL_VERSION})",
        )
    if version != PROTOCOL_VERSION:
        raise HandshakeError(
            StatusCode.FAILED_PRECONDITION,
            "protocol_mismatch",
            f"header {PROTOCOL_HEADER} is {version!r}; this hub speaks {PROTOCOL_VERSION}",
        )


def check_handshake(headers: Mapping[str, str]) -> BindingIdentity:
    """Validate the binding headers of a Process stream, in the Go hub's order.

    Protocol version (FAILED_PRECONDITION), then ``storyrun-name``, ``storyrun-namespace``,
    ``current-step-id`` (INVALID_ARGUMENT naming the header), then ``connector-generation``
    as an int32 > 0 (FAILED_PRECONDITION). ``startup.capabilities`` is only observed.
    """
    check_protocol(headers)
    values: dict[str, str] = {}
    for name in (STORYRUN_NAME_HEADER, STORYRUN_NAMESPACE_HEADER, STEP_HEADER):
        value = headers.get(name, "").strip()
        if not value:
            raise HandshakeError(
                StatusCode.INVALID_ARGUMENT, "header_missing", f"missing header {name}"
            )
        values[name] = value
    raw_generation = headers.get(GENERATION_HEADER, "").strip()
    if not raw_generation:
        raise HandshakeError(
            StatusCode.FAILED_PRECONDITION,
            "generation_missing",
            f"missing header {GENERATION_HEADER}",
        )
    try:
        generation = int(raw_generation)
    except ValueError:
        generation = 0
    if not 0 < generation <= _INT32_MAX:
        raise HandshakeError(
            StatusCode.FAILED_PRECONDITION,
            "generation_invalid",
            f"header {GENERATION_HEADER} must be an integer in 1..{_INT32_MAX}, "
            f"got {raw_generation!r}",
        )
    capabilities = headers.get(CAPABILITIES_HEADER, "").strip().lower()
    if capabilities not in {"required", "none"}:
        capabilities = "invalid" if capabilities else "missing"
    return BindingIdentity(
        storyrun=values[STORYRUN_NAME_HEADER],
        namespace=values[STORYRUN_NAMESPACE_HEADER],
        step=values[STEP_HEADER],
        generation=generation,
        capabilities=capabilities,
    )


def check_identity(
    namespace: str, *, secure: bool, peer: PeerIdentity | None, mode: str = "namespace"
) -> None:
    """Require the verified client certificate to name the ``namespace`` a stream claims.

    Applies to mTLS streams (``secure``) when ``mode`` is ``namespace``: the certificate must
    carry a SPIFFE URI ``spiffe://<domain>/ns/<namespace>/...``; otherwise PERMISSION_DENIED
    naming both. Plaintext streams (local development only) and ``mode="off"`` pass.
    """
    if mode == "off" or not secure:
        return
    if peer is None or not peer.namespaces:
        found = peer.describe() if peer is not None else "no certificate"
        raise HandshakeError(
            StatusCode.PERMISSION_DENIED,
            "identity_missing",
            f"the client certificate carries no SPIFFE namespace identity ({found}); "
            f"the stream claims {STORYRUN_NAMESPACE_HEADER} {namespace!r}",
        )
    if namespace not in peer.namespaces:
        raise HandshakeError(
            StatusCode.PERMISSION_DENIED,
            "identity_mismatch",
            f"the client certificate is for namespace {', '.join(peer.namespaces)} "
            f"({peer.describe()}); the stream claims {STORYRUN_NAMESPACE_HEADER} {namespace!r}",
        )
