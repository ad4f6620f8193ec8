"""Connector sidecar injection, as a pure function: a pod in, JSON-patch operations out.

The admission webhook (:mod:`bobravoz.controllers.webhook`) resolves the Engram and the
binding and calls :func:`connector_patch`; ``bobravoz render`` calls it offline. Decisions
follow the Go webhook: only pods labelled ``bubustack.io/engram`` that carry (or whose
Engram carries) a binding are mutated, once (idempotency annotation), with a
``transport-connector`` container that talks to the hub, or to the single downstream's
connector when the step is routed peer-to-peer.

TLS (the cluster is mTLS-only). The sidecar always gets ``BUBU_TRANSPORT_SECURITY_MODE=tls``,
over anything copied or set by the binding (``plaintext`` included). Its certificate comes
from the engram pod, in this order:

1. the main container (``containers[0]``) mounts one or more volumes whose name contains
   ``engram-tls``: the mounts are copied to the sidecar as they are, and the TLS variables of
   the main container (``BUBU_GRPC_TLS_CERT_FILE``/``_KEY_FILE``, ``BUBU_GRPC_CA_FILE``,
   ``BUBU_GRPC_CLIENT_CERT_FILE``/``_KEY_FILE``, ``BUBU_HUB_TLS_CERT_FILE``/``_KEY_FILE``,
   ``BUBU_HUB_CA_FILE``, ``BUBU_GRPC_HUB_SERVER_NAME``) are copied. When none of them is set,
   they point into the first such mount (without ``subPath``) with cert-manager's file names:
   ``<mountPath>/tls.crt``, ``tls.key``, ``ca.crt``;
2. neither such a mount nor any TLS file variable: the default convention, Secret
   ``engram-tls`` (``tls.crt``, ``tls.key``, ``ca.crt``: what a cert-manager Certificate
   writes, see ``deploy/components/cert-manager/engram-namespace``) mounted read-only at
   ``/var/run/tls`` in the sidecar; the pod gains a volume ``engram-tls`` for it unless it
   already has one. The Secret is not optional: without it the pod waits in
   ContainerCreating with a FailedMount event naming it, rather than starting a connector
   that cannot dial.

Then the Go webhook's fallbacks fill what is still unset: client cert/key ← GRPC TLS
cert/key, ``BUBU_HUB_TLS_CERT_FILE``/``_KEY_FILE`` ← GRPC TLS cert/key, ``BUBU_HUB_CA_FILE``
← ``BUBU_GRPC_CA_FILE``. So a pod must carry, in its own namespace, a certificate with the
SPIFFE URI ``spiffe://<trust-domain>/ns/<namespace>/sa/<serviceaccount>`` (the hub admits a
stream only for the namespace its certificate names), client and server auth usages, and
DNS names ``*.<namespace>.svc`` / ``*.<namespace>.svc.cluster.local`` (peers dial
``<storyrun>-<step>.<namespace>.svc.cluster.local``), either as Secret ``engram-tls`` or as
a volume named ``engram-tls…`` with the variables above. A pod that sets a TLS variable to a
path outside an ``engram-tls`` mount gets it copied as it is; the connector then refuses to
start, naming the missing file.

The sidecar also serves peer-to-peer streams (mTLS) on ``$(BUBU_POD_IP):<connector port>``
(``BOBRAVOZ_P2P_LISTEN``, from the downward API), the address an upstream P2P connector
dials through the step's Service; the engram-facing listener stays on the binding's
loopback or unix-socket endpoint.
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
#: Volumes of the main container whose name contains this are mounted into the sidecar too.
TLS_VOLUME_MARKER: Final = "engram-tls"
#: The default TLS Secret and volume name, and where the sidecar mounts it.
TLS_SECRET: Final = "engram-tls"
TLS_MOUNT_PATH: Final = "/var/run/tls"
#: Variables naming TLS files: when the pod sets none of them (and mounts no ``engram-tls``
#: volume) the sidecar gets the default Secret.
TLS_FILE_ENV: Final = (
    "BUBU_GRPC_TLS_CERT_FILE",
    "BUBU_GRPC_TLS_KEY_FILE",
    "BUBU_GRPC_CA_FILE",
    "BUBU_GRPC_CLIENT_CERT_FILE",
    "BUBU_GRPC_CLIENT_KEY_FILE",
    "BUBU_HUB_TLS_CERT_FILE",
    "BUBU_HUB_TLS_KEY_FILE",
    "BUBU_HUB_CA_FILE",
)
#: The Go webhook's fallbacks, applied in order where the target is unset: target ← source.
TLS_FALLBACKS: Final = (
    ("BUBU_GRPC_CLIENT_CERT_FILE", "BUBU_GRPC_TLS_CERT_FILE"),
    ("BUBU_GRPC_CLIENT_KEY_FILE", "BUBU_GRPC_TLS_KEY_FILE"),
    ("BUBU_HUB_TLS_CERT_FILE", "BUBU_GRPC_TLS_CERT_FILE"),
    ("BUBU_HUB_TLS_KEY_FILE", "BUBU_GRPC_TLS_KEY_FILE"),
    ("BUBU_HUB_CA_FILE", "BUBU_GRPC_CA_FILE"),
)
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
    "BUBU_HUB_TLS_CERT_FILE",
    "BUBU_HUB_TLS_KEY_FILE",
    "BUBU_HUB_CA_FILE",
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
    tls_secret: str = TLS_SECRET
    tls_mount_path: str = TLS_MOUNT_PATH

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


def tls_mounts(container: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Copies of ``container``'s volume mounts whose volume name contains ``engram-tls``."""
    return [
        copy.deepcopy(mount)
        for mount in container.get("volumeMounts", []) or []
        if isinstance(mount, dict) and TLS_VOLUME_MARKER in str(mount.get("name", ""))
    ]


def tls_wiring(
    env: Mapping[str, str], mounts: Sequence[Mapping[str, Any]], config: InjectionConfig
) -> tuple[dict[str, str], list[dict[str, Any]]]:
    """The sidecar's TLS variables and mounts, from what it has so far (``env``, the copied
    ``engram-tls`` mounts): the file variables the pod sets, else the files of the first
    copied mount, else the default Secret's mount; then the Go fallbacks; then
    ``BUBU_TRANSPORT_SECURITY_MODE=tls``, always. Returns the full variable map and the mounts
    to add (the copied ones, or the default one)."""
    result = dict(env)
    added = [dict(mount) for mount in mounts]
    if not any(result.get(name) for name in TLS_FILE_ENV):
        folder = next(
            (str(m["mountPath"]) for m in mounts if m.get("mountPath") and not m.get("subPath")),
            None,
        )
        if folder is None and not mounts:
            folder = config.tls_mount_path
            added = [{"name": config.tls_secret, "mountPath": folder, "readOnly": True}]
        if folder is not None:
            base = folder.rstrip("/")
            result["BUBU_GRPC_TLS_CERT_FILE"] = f"{base}/tls.crt"
            result["BUBU_GRPC_TLS_KEY_FILE"] = f"{base}/tls.key"
            result["BUBU_GRPC_CA_FILE"] = f"{base}/ca.crt"
    for target, source in TLS_FALLBACKS:
        if not result.get(target) and result.get(source):
            result[target] = result[source]
    result["BUBU_TRANSPORT_SECURITY_MODE"] = "tls"
    return result, added


def connector_container(
    pod: Mapping[str, Any],
    *,
    binding_value: str,
    binding: BindingEnvelope,
    engram_annotations: Mapping[str, str],
    config: InjectionConfig,
) -> dict[str, Any]:
    """The sidecar container for ``pod``: identity and tuning variables from the pod, the
    binding's transport metadata and ``BUBU_`` overrides, the TLS wiring of :func:`tls_wiring`
    (security mode forced to ``tls``), the peer-to-peer listener on the pod IP, the main
    container's security context with every capability dropped."""
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
    env, mounts = tls_wiring(env, tls_mounts(main), config)
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
    if "BOBRAVOZ_P2P_LISTEN" not in env:
        # Peers dial <storyrun>-<step>.<ns>.svc:<connector port>; the pod IP keeps that
        # listener apart from the engram-facing one on loopback (same port, other address).
        container_env += [
            {"name": "BUBU_POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "BOBRAVOZ_P2P_LISTEN", "value": f"$(BUBU_POD_IP):{config.connector_port}"},
        ]
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
        mounts.insert(0, {"name": SOCKET_VOLUME, "mountPath": socket_dir})
    if mounts:
        container["volumeMounts"] = mounts
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
    and idempotency annotations, for a unix-socket endpoint a shared in-memory volume
    mounted into every container, and the ``engram-tls`` Secret volume when the sidecar
    mounts the default TLS Secret the pod does not already declare (module docstring).
    The sidecar is always the last operation. Returns ``[]`` for a pod without containers.
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
    sidecar = connector_container(
        pod,
        binding_value=binding_value,
        binding=binding,
        engram_annotations=engram_annotations,
        config=config,
    )
    volumes: list[dict[str, Any]] = []
    socket_dir = unix_socket_dir(binding)
    if socket_dir is not None:
        # A unix-socket endpoint: share its folder between the engram and the sidecar.
        volumes.append(
            {"name": SOCKET_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}}
        )
    declared = {v.get("name") for v in spec.get("volumes") or [] if isinstance(v, dict)}
    if any(m["name"] == config.tls_secret for m in sidecar.get("volumeMounts", [])) and (
        config.tls_secret not in declared
    ):
        volumes.append({"name": config.tls_secret, "secret": {"secretName": config.tls_secret}})
    if volumes and not spec.get("volumes"):
        operations.append({"op": "add", "path": "/spec/volumes", "value": volumes})
    else:
        operations += [{"op": "add", "path": "/spec/volumes/-", "value": v} for v in volumes]
    if socket_dir is not None:
        mount = {"name": SOCKET_VOLUME, "mountPath": socket_dir}
        for index, container in enumerate(containers):
            path = f"/spec/containers/{index}/volumeMounts"
            if container.get("volumeMounts"):
                operations.append({"op": "add", "path": f"{path}/-", "value": mount})
            else:
                operations.append({"op": "add", "path": path, "value": [mount]})
    operations.append({"op": "add", "path": "/spec/containers/-", "value": sidecar})
    return operations


def needs_injection(pod: Mapping[str, Any]) -> bool:
    """True for engram pods (label ``bubustack.io/engram``) not injected yet."""
    metadata = pod.get("metadata", {}) or {}
    labels = metadata.get("labels", {}) or {}
    annotations = metadata.get("annotations", {}) or {}
    return ENGRAM_LABEL in labels and annotations.get(INJECTED_ANNOTATION) != "true"
