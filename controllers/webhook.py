"""The connector-injection admission webhook: AdmissionReview (``admission.k8s.io/v1``) over
HTTPS, answered with a JSON patch from :func:`~bobravoz.controllers.injection.connector_patch`.

:func:`review` is the decision (bytes in, response document out) and never raises: a
malformed review gets an HTTP 400 with the reason, a pod bobravoz does not own passes
untouched, a pod it cannot admit (unknown Engram, cross-namespace binding) is denied with a
message. :func:`serve_webhook` serves it with trio over TLS.
"""

from __future__ import annotations

import base64
import json
import logging
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, final

import trio

from bobravoz.controllers.injection import (
    BINDING_ANNOTATION,
    ENGRAM_LABEL,
    InjectionConfig,
    InjectionError,
    connector_patch,
    needs_injection,
)
from bobravoz.runtime.binding_envelope import (
    BindingEnvelope,
    BindingError,
    encode_binding,
    parse_binding,
)
from bobravoz.runtime.endpoints import Endpoint

log = logging.getLogger(__name__)

MUTATE_PATH: Final = "/mutate-v1-pod"
_MAX_BODY: Final = 4 * 1024 * 1024


@final
@dataclass(frozen=True, slots=True)
class Lookups:
    """How the webhook reads the cluster (the Kubernetes API in production, fakes in tests).

    ``engram_annotations(namespace, name)`` returns the Engram's annotations or raises
    ``LookupError``; ``binding(namespace, name)`` returns the TransportBinding as an envelope
    or raises ``LookupError``.
    """

    engram_annotations: Callable[[str, str], Mapping[str, str]]
    binding: Callable[[str, str], BindingEnvelope]


@final
@dataclass(frozen=True, slots=True)
class WebhookReply:
    """An HTTP status and JSON body."""

    status: int
    body: dict[str, Any]


def _response(
    uid: str, *, allowed: bool = True, message: str = "", patch: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    response: dict[str, Any] = {"uid": uid, "allowed": allowed}
    if message:
        response["status"] = {"message": message, "code": 200 if allowed else 403}
    if patch:
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(json.dumps(patch).encode()).decode()
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}


def resolve_binding(value: str, namespace: str, lookups: Lookups) -> tuple[str, BindingEnvelope]:
    """The binding env value and envelope for an annotation value: inline JSON, or a
    ``[namespace/]name`` reference to a TransportBinding in the pod's own namespace."""
    if value.startswith("{"):
        return value, parse_binding(value)
    ref_namespace, _, name = value.rpartition("/")
    if ref_namespace and ref_namespace != namespace:
        raise InjectionError(
            f"cross-namespace transport binding references are not allowed: {value!r} "
            f"from namespace {namespace!r}"
        )
    envelope = lookups.binding(namespace, name)
    return encode_binding(envelope), envelope


def review(body: bytes, config: InjectionConfig, lookups: Lookups) -> WebhookReply:
    """Decide on one AdmissionReview request body (see the module docstring)."""
    try:
        document = json.loads(body)
        request = document["request"]
        uid = str(request["uid"])
        operation = request.get("operation")
        pod = request.get("object")
        if not isinstance(pod, dict):
            raise TypeError("request.object is not a Pod object")
    except (ValueError, KeyError, TypeError, RecursionError) as error:
        return WebhookReply(400, {"error": f"malformed AdmissionReview: {error}"})
    try:
        return _decide(uid, operation, pod, request, config, lookups)
    except (AttributeError, TypeError, KeyError, IndexError) as error:
        # A Pod field of the wrong type (no API server sends one): refused, never a crash.
        log.warning("malformed Pod in AdmissionReview %s: %r", uid, error)
        return WebhookReply(400, {"error": f"malformed Pod: {type(error).__name__}: {error}"})


def _decide(
    uid: str,
    operation: object,
    pod: dict[str, Any],
    request: Mapping[str, Any],
    config: InjectionConfig,
    lookups: Lookups,
) -> WebhookReply:
    """:func:`review` for a parsed request; a TypeError, AttributeError, KeyError or
    IndexError means a Pod field of the wrong type."""
    if operation != "CREATE" or not config.image or not needs_injection(pod):
        return WebhookReply(200, _response(uid))
    metadata = pod.get("metadata", {}) or {}
    namespace = metadata.get("namespace") or request.get("namespace") or "default"
    engram = (metadata.get("labels") or {})[ENGRAM_LABEL]
    if not isinstance(namespace, str) or not isinstance(engram, str):
        raise TypeError("the namespace and the engram label must be strings")
    try:
        engram_annotations = dict(lookups.engram_annotations(namespace, engram))
    except LookupError as error:
        return WebhookReply(
            200, _response(uid, allowed=False, message=f"engram {namespace}/{engram}: {error}")
        )
    value = (
        (metadata.get("annotations") or {}).get(BINDING_ANNOTATION)
        or engram_annotations.get(BINDING_ANNOTATION, "")
    ).strip()
    if not value:
        return WebhookReply(200, _response(uid, message="engram not bound to a transport"))
    try:
        binding_value, envelope = resolve_binding(value, namespace, lookups)
        patch = connector_patch(
            pod,
            binding_value=binding_value,
            binding=envelope,
            engram_annotations=engram_annotations,
            config=config,
        )
    except (InjectionError, BindingError, LookupError) as error:
        return WebhookReply(200, _response(uid, allowed=False, message=str(error)))
    return WebhookReply(200, _response(uid, patch=patch))


async def _handle(stream: trio.abc.Stream, config: InjectionConfig, lookups: Lookups) -> None:
    data = b""
    with trio.move_on_after(10):
        while b"\r\n\r\n" not in data and len(data) < 65536:
            chunk = await stream.receive_some(65536)
            if not chunk:
                return
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, _, rest = lines[0].partition(" ")
    path = rest.partition(" ")[0]
    headers = {
        k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])
    }
    length = int(headers.get("content-length", "0") or 0)
    if length > _MAX_BODY:
        reply = WebhookReply(413, {"error": "request body too large"})
    else:
        with trio.move_on_after(10):
            while len(body) < length:
                chunk = await stream.receive_some(65536)
                if not chunk:
                    break
                body += chunk
        if method != "POST" or path.split("?")[0] != MUTATE_PATH:
            reply = WebhookReply(404, {"error": f"no handler for {method} {path}"})
        else:
            reply = review(body[:length], config, lookups)
    payload = json.dumps(reply.body).encode()
    reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 413: "Payload Too Large"}
    response = (
        f"HTTP/1.1 {reply.status} {reason.get(reply.status, 'Error')}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode() + payload
    await stream.send_all(response)


async def serve_webhook(
    endpoint: Endpoint,
    ssl_context: ssl.SSLContext,
    config: InjectionConfig,
    lookups: Lookups,
    *,
    task_status: trio.TaskStatus[Endpoint] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the webhook over HTTPS on ``endpoint`` (port 0 picks one) until cancelled."""
    listeners = await trio.open_ssl_over_tcp_listeners(
        endpoint.port, ssl_context, host=endpoint.host
    )
    transport = listeners[0].transport_listener
    assert isinstance(transport, trio.SocketListener)
    port = int(transport.socket.getsockname()[1])

    async def handler(stream: trio.SSLStream[trio.SocketStream]) -> None:
        try:
            async with stream:
                await _handle(stream, config, lookups)
        except (trio.BrokenResourceError, trio.ClosedResourceError, ValueError) as error:
            log.info("webhook connection ended: %s", error)

    async with trio.open_nursery() as nursery:
        task_status.started(Endpoint(host=endpoint.host, port=port))
        await trio.serve_listeners(handler, listeners, handler_nursery=nursery)
