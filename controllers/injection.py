"""Connector sidecar injection, as a pure function: a pod in, JSON-patch operations out.

The admission webhook (:mod:`bobravoz.controllers.webhook`) resolves the Engram and the
binding and calls :func:`connector_patch`; ``bobravoz render`` calls it offline. Decisions
follow the Go webhook: only pods labelled ``bubustack.io/engram`` that carry (or whose
Engram carries) a binding are mutated, once (idempotency annotation), with a
``transport-connector`` container that talks to the hub, or to the single downstream's
connector when the step is routed peer-to-peer.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, final

from bobravoz.runtime.binding_envelope import BindingEnvelope

ENGRAM_LABEL: Final = "bubustack.io/engram"
STORYRUN_LABEL: Final = "bubustack.io/storyrun"
BINDING_ANNOTATION: Final = "transport.bubustack.io/binding"
ROUTING_ANNOTATION: Final = "transport.bubustack.io/routing-mode"
DOWNSTREAM_ANNOTATION: Final = "transport.bubustack.io/downstream-steps"
INJECTED_ANNOTATION: Final = "transport.bobravoz.bubustack.io/connector-injected"
CONNECTOR_LABEL: Final = "transport.bobravoz.bubustack.io/connector"
CONTAINER_NAME: Final = "transport-connector"
SOCKET_VOLUME: Final = "bobravoz-connector-socket"
#: Tuning variables copied from the engram's main container when it sets them.
COPIED_ENV: Final = (
    "BUBU_CONNECTOR_GENERATION",
    "BUBU_TRACE_PROPAGATION",
    "BUBU_DEBUG",
    "BUBU_GRPC_MAX_RECV_BYTES",
    "BUBU_GRPC_MAX_SEND_BYTES",
    "BUBU_GRPC_CLIENT_MAX_RECV_BYTES",
    "BUBU_GRPC_CLIENT_MAX_SEND_BYTES",
    "BUBU_GRPC_DIAL_TIMEOUT",
    "BUBU_GRPC_CHANNEL_BUFFER_SIZE",
    "BUBU_GRPC_RECONNECT_MAX_RETRIES",
    "BUBU_GRPC_RECONNECT_BASE_BACKOFF",
    "BUBU_GRPC_RECONNECT_MAX_BACKOFF",
    "BUBU_GRPC_HANG_TIMEOUT",
    "BUBU_GRPC_MESSAGE_TIMEOUT",
    "BUBU_GRPC_CHANNEL_SEND_TIMEOUT",
    "BUBU_GRPC_HEARTBEAT_INTERVAL",
    "BUBU_TRANSPORT_HEARTBEAT_INTERVAL",
    "BUBU_GRPC_KEEPALIVE_TIME",
    "BUBU_GRPC_KEEPALIVE_TIMEOUT",
    "BUBU_TRANSPORT_SECURITY_MODE",
    "BUBU_GRPC_TLS_CERT_FILE",
    "BUBU_GRPC_TLS_KEY_FILE",
    "BUBU_GRPC_CA_FILE",
    "BUBU_GRPC_CLIENT_CERT_FILE",
    "BUBU_GRPC_CLIENT_KEY_FILE",
    "BUBU_GRPC_HUB_SERVER_NAME",
)


@final
class InjectionError(ValueError):
    """The pod cannot be admitted as it is (the webhook answers 400 with this message)."""


@final
@dataclass(frozen=True, slots=True)
class InjectionConfig:
    """Operator settings for the sidecar (flag > ``CONNECTOR_IMAGE`` > ConfigMap)."""

    image: str
    pull_policy: str = "IfNotPresent"
    hub_service: str = "bobravoz-grpc-hub"
    hub_namespace: str = "bobravoz-system"
    hub_port: int = 9000
    cluster_domain: str = "svc.cluster.local"
    connector_port: int = 50051
    cpu_request: str = "50m"
    memory_request: str = "64Mi"
    memory_limit: str = "256Mi"
    copied_env: Sequence[str] = field(default=COPIED_ENV)

    def hub_endpoint(self) -> str:
        """``<service>.<namespace>.<domain>:<port>`` of the hub."""
        return f"{self.hub_service}.{self.hub_namespace}.{self.cluster_domain}:{self.hub_port}"


def upstream_endpoint(
    annotations: Mapping[str, str],
    labels: Mapping[str, str],
    namespace: str,
    config: InjectionConfig,
) -> str:
    """Where the connector sends: the hub, or in P2P mode the single downstream's connector
    (``<storyrun>-<step>.<ns>.<domain>:<port>``)."""
    mode = annotations.get(ROUTING_ANNOTATION, "hub").strip().lower()
    downstream = [s for s in annotations.get(DOWNSTREAM_ANNOTATION, "").split(",") if s.strip()]
    storyrun = labels.get(STORYRUN_LABEL, "").strip()
    if mode == "p2p" and len(downstream) == 1 and storyrun:
        host = f"{storyrun}-{downstream[0].strip()}.{namespace}.{config.cluster_domain}"
        return f"{host}:{config.connector_port}"
    return config.hub_endpoint()


def _env_map(container: Mapping[str, Any]) -> dict[str, str]:
    return {
        item["name"]: item["value"]
        for item in container.get("env", []) or []
        if isinstance(item, dict) and isinstance(item.get("value"), str)
    }


def _first(*values: str | None) -> str:
    return next((value for value in values if value), "")


def connector_container(
    pod: Mapping[str, Any],
    *,
    binding_value: str,
    binding: BindingEnvelope,
    engram_annotations: Mapping[str, str],
    config: InjectionConfig,
) -> dict[str, Any]:
    """The sidecar container for ``pod``."""
    metadata = pod.get("metadata", {})
    annotations: Mapping[str, str] = metadata.get("annotations", {}) or {}
    labels: Mapping[str, str] = metadata.get("labels", {}) or {}
    namespace = metadata.get("namespace") or binding.namespace or "default"
    main = pod["spec"]["containers"][0]
    main_env = _env_map(main)

    def identity(key: str, label: str | None = None) -> str:
        return _first(engram_annotations.get(key), annotations.get(key), labels.get(label or key))

    env: dict[str, str] = {
        "BUBU_EXECUTION_MODE": "streaming",
        "BUBU_TRANSPORT_BINDING": binding_value,
        "BUBU_ENGRAM_NAME": labels.get(ENGRAM_LABEL, ""),
        "BUBU_STORY_NAME": _first(identity("bubustack.io/story"), main_env.get("BUBU_STORY_NAME")),
        "BUBU_STEP_NAME": _first(identity("bubustack.io/step"), main_env.get("BUBU_STEP_NAME")),
        "BUBU_STORYRUN_ID": _first(
            identity("bubustack.io/storyrun", STORYRUN_LABEL), main_env.get("BUBU_STORYRUN_ID")
        ),
        "BUBU_HUB_ENDPOINT": upstream_endpoint(annotations, labels, namespace, config),
        # Listen where the engram dials: the binding's endpoint (127.0.0.1:50051 by default).
        "BUBU_GRPC_LOCAL_ENDPOINT": binding.info.endpoint,
        "BUBU_GRPC_PORT": main_env.get("BUBU_GRPC_PORT", str(config.connector_port)),
        "BUBU_CONNECTOR_GENERATION": main_env.get("BUBU_CONNECTOR_GENERATION", "1"),
        "BOBRAVOZ_METRICS_LISTEN": "0.0.0.0:9102",
    }
    for name in config.copied_env:
        if name in main_env:
            env[name] = main_env[name]
    info = binding.info
    env["BUBU_TRANSPORT_DRIVER"] = info.driver
    env["BUBU_TRANSPORT_ENDPOINT"] = info.endpoint
    for key, values in (
        ("BUBU_TRANSPORT_AUDIO_CODECS", info.audio_codecs),
        ("BUBU_TRANSPORT_VIDEO_CODECS", info.video_codecs),
        ("BUBU_TRANSPORT_BINARY_TYPES", info.binary_types),
    ):
        if values:
            env[key] = ",".join(values)
    overrides = binding.settings().get("env", {})
    if isinstance(overrides, dict):
        for key in sorted(overrides):
            if key.startswith("BUBU_") or key in env:
                env[key] = str(overrides[key])
    security = copy.deepcopy(main.get("securityContext") or {})
    security.setdefault("allowPrivilegeEscalation", False)
    security.setdefault("runAsNonRoot", True)
    capabilities = security.setdefault("capabilities", {})
    capabilities["drop"] = ["ALL"]
    capabilities.pop("add", None)
    container_env: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in env.items()]
    container_env.append(
        {
            "name": "BUBU_POD_NAMESPACE",
            "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
        }
    )
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": config.image,
        "imagePullPolicy": config.pull_policy,
        "args": ["connector"],
        "env": container_env,
        "ports": [{"name": "connector-metrics", "containerPort": 9102, "protocol": "TCP"}],
        "resources": {
            "requests": {"cpu": config.cpu_request, "memory": config.memory_request},
            "limits": {"memory": config.memory_limit},
        },
        "readinessProbe": {
            "httpGet": {"path": "/healthz", "port": "connector-metrics"},
            "periodSeconds": 5,
        },
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": "connector-metrics"},
            "initialDelaySeconds": 5,
            "periodSeconds": 10,
        },
        "securityContext": security,
    }
    socket_dir = unix_socket_dir(binding)
    if socket_dir is not None:
        container["volumeMounts"] = [{"name": SOCKET_VOLUME, "mountPath": socket_dir}]
    return container


def unix_socket_dir(binding: BindingEnvelope) -> str | None:
    """The folder of the binding's unix-socket endpoint, or None for TCP endpoints."""
    endpoint = binding.info.endpoint
    if not endpoint.startswith("unix://"):
        return None
    return endpoint[len("unix://") :].rsplit("/", 1)[0] or "/"


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def connector_patch(
    pod: Mapping[str, Any],
    *,
    binding_value: str,
    binding: BindingEnvelope,
    engram_annotations: Mapping[str, str],
    config: InjectionConfig,
) -> list[dict[str, Any]]:
    """JSON-patch operations (RFC 6902) that inject the connector into ``pod``.

    Adds the sidecar (listening on the binding's endpoint), the connector label, the binding
    and idempotency annotations, and for a unix-socket endpoint a shared in-memory volume
    mounted into every container. Returns ``[]`` for a pod without containers.
    """
    spec = pod.get("spec", {})
    containers = spec.get("containers") or []
    if not containers:
        return []
    metadata = pod.get("metadata", {})
    operations: list[dict[str, Any]] = []
    if not metadata.get("labels"):
        operations.append({"op": "add", "path": "/metadata/labels", "value": {}})
    if not metadata.get("annotations"):
        operations.append({"op": "add", "path": "/metadata/annotations", "value": {}})
    operations += [
        {"op": "add", "path": f"/metadata/labels/{_escape(CONNECTOR_LABEL)}", "value": "true"},
        {
            "op": "add",
            "path": f"/metadata/annotations/{_escape(INJECTED_ANNOTATION)}",
            "value": "true",
        },
        {
            "op": "add",
            "path": f"/metadata/annotations/{_escape(BINDING_ANNOTATION)}",
            "value": binding.reference if not binding_value.startswith("{") else binding_value,
        },
    ]
    socket_dir = unix_socket_dir(binding)
    if socket_dir is not None:
        # A unix-socket endpoint: share its folder between the engram and the sidecar.
        volume = {"name": SOCKET_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}}
        if spec.get("volumes"):
            operations.append({"op": "add", "path": "/spec/volumes/-", "value": volume})
        else:
            operations.append({"op": "add", "path": "/spec/volumes", "value": [volume]})
        mount = {"name": SOCKET_VOLUME, "mountPath": socket_dir}
        for index, container in enumerate(containers):
            path = f"/spec/containers/{index}/volumeMounts"
            if container.get("volumeMounts"):
                operations.append({"op": "add", "path": f"{path}/-", "value": mount})
            else:
                operations.append({"op": "add", "path": path, "value": [mount]})
    sidecar = connector_container(
        pod,
        binding_value=binding_value,
        binding=binding,
        engram_annotations=engram_annotations,
        config=config,
    )
    operations.append({"op": "add", "path": "/spec/containers/-", "value": sidecar})
    return operations


def needs_injection(pod: Mapping[str, Any]) -> bool:
    """True for engram pods (label ``bubustack.io/engram``) not injected yet."""
    metadata = pod.get("metadata", {}) or {}
    labels = metadata.get("labels", {}) or {}
    annotations = metadata.get("annotations", {}) or {}
    return ENGRAM_LABEL in labels and annotations.get(INJECTED_ANNOTATION) != "true"
