"""Connector settings, read once from the environment (names listed in the README)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, final

from bobravoz.runtime.binding_envelope import BindingEnvelope, BindingError, parse_binding
from bobravoz.runtime.endpoints import Endpoint, parse_endpoint
from bobravoz.runtime.envconfig import ConfigError, EnvReader
from bobravoz.runtime.handshake import IDENTITY_MODES, BindingIdentity
from bobravoz.runtime.tls import (
    DEFAULT_RELOAD_INTERVAL,
    TlsFiles,
    connector_client_files,
    connector_server_files,
    security_mode,
)

DEFAULT_LOCAL_PORT: Final = 50051


@final
@dataclass(frozen=True, slots=True)
class ConnectorConfig:
    """Everything one connector sidecar needs; see :func:`load_config` for the sources."""

    hub: Endpoint
    listen: Endpoint
    identity: BindingIdentity
    binding: BindingEnvelope | None = None
    metrics_listen: Endpoint | None = None
    #: Packets from the engram waiting for the hub link (backpressure beyond this).
    outbox_messages: int = 1024
    outbox_bytes: int = 16 * 1024 * 1024
    #: Packets from the hub waiting for the engram (backpressure beyond this).
    inbox_messages: int = 1024
    inbox_bytes: int = 16 * 1024 * 1024
    reconnect_base: float = 0.5
    reconnect_max: float = 30.0
    #: Consecutive failed hub connections before giving up; -1 retries forever.
    max_reconnects: int = 200
    #: Seconds to wait for the hub before a Control stream is told about the failure.
    message_timeout: float = 30.0
    #: Seconds between binding status heartbeats (BUBU_TRANSPORT_HEARTBEAT_INTERVAL).
    heartbeat_interval: float = 30.0
    #: mTLS toward the hub or a peer (None: plaintext, only to a loopback or unix endpoint).
    client_tls: TlsFiles | None = None
    #: mTLS of the peer-to-peer listener (None: plaintext, only on a local endpoint).
    server_tls: TlsFiles | None = None
    #: Name the hub's certificate must carry (BUBU_GRPC_HUB_SERVER_NAME; default: its host).
    hub_server_name: str | None = None
    #: Where upstream connectors reach this one peer-to-peer (BOBRAVOZ_P2P_LISTEN).
    p2p_listen: Endpoint | None = None
    #: ``namespace`` or ``off``: whether a peer's certificate must name its namespace.
    identity_mode: str = "namespace"
    tls_reload_interval: float = DEFAULT_RELOAD_INTERVAL
    #: Seconds the connector keeps serving after its first SIGTERM/SIGINT, for the engram
    #: to end its Data stream and what it sent to leave for the hub (longer than the SDK's
    #: own stop grace, ``BOBRAVOZ_STOP_GRACE``, 10 s: a pod's containers stop together).
    stop_grace: float = 20.0

    @property
    def tls(self) -> bool:
        """True when the connector speaks mTLS on its network hops."""
        return self.client_tls is not None


def _local_endpoint(env: EnvReader) -> Endpoint:
    raw = env.optional("BUBU_GRPC_LOCAL_ENDPOINT")
    if raw is None:
        port = env.integer("BUBU_GRPC_PORT", DEFAULT_LOCAL_PORT, minimum=1, maximum=65535)
        return Endpoint(port=port)
    try:
        return parse_endpoint(raw, allow_port_zero=True)
    except ValueError as error:
        raise ConfigError(f"BUBU_GRPC_LOCAL_ENDPOINT: {error}") from None


def load_config(environ: Mapping[str, str]) -> ConnectorConfig:
    """Build the configuration from ``environ``; raise ConfigError naming a bad variable."""
    env = EnvReader(environ)
    client_tls = connector_client_files(env, required=security_mode(env))
    try:
        hub = parse_endpoint(env.text("BUBU_HUB_ENDPOINT"))
    except ValueError as error:
        raise ConfigError(f"BUBU_HUB_ENDPOINT: {error}") from None
    if client_tls is None and not hub.is_local:
        raise ConfigError(
            f"refusing to dial {hub} in plaintext (not loopback or a unix socket): set "
            "BUBU_TRANSPORT_SECURITY_MODE=tls with BUBU_GRPC_CLIENT_CERT_FILE, "
            "BUBU_GRPC_CLIENT_KEY_FILE and BUBU_GRPC_CA_FILE"
        )
    listen = _local_endpoint(env)
    if client_tls is not None and not listen.is_local:
        raise ConfigError(
            f"BUBU_GRPC_LOCAL_ENDPOINT {listen} is not loopback or a unix socket: with TLS the "
            "engram-facing listener stays local; peers use BOBRAVOZ_P2P_LISTEN (mTLS)"
        )
    p2p_listen = None
    p2p_raw = env.optional("BOBRAVOZ_P2P_LISTEN")
    if p2p_raw is not None:
        try:
            p2p_listen = parse_endpoint(p2p_raw, allow_port_zero=True)
        except ValueError as error:
            raise ConfigError(f"BOBRAVOZ_P2P_LISTEN: {error}") from None
        if client_tls is None and not p2p_listen.is_local:
            raise ConfigError(
                f"BOBRAVOZ_P2P_LISTEN {p2p_listen}: refusing to serve plaintext off loopback; "
                "set BUBU_TRANSPORT_SECURITY_MODE=tls and the certificate files"
            )
    identity_mode = env.text("BOBRAVOZ_HUB_IDENTITY", "namespace").strip().lower()
    if identity_mode not in IDENTITY_MODES:
        raise ConfigError(
            f"BOBRAVOZ_HUB_IDENTITY={identity_mode!r}: one of {', '.join(IDENTITY_MODES)}"
        )
    generation = env.integer("BUBU_CONNECTOR_GENERATION", 0, minimum=0)
    if generation < 1:
        raise ConfigError("environment variable BUBU_CONNECTOR_GENERATION must be an integer > 0")
    identity = BindingIdentity(
        storyrun=env.text("BUBU_STORYRUN_ID"),
        namespace=env.text("BUBU_POD_NAMESPACE"),
        step=env.text("BUBU_STEP_NAME"),
        generation=generation,
        capabilities="none",
    )
    binding: BindingEnvelope | None = None
    raw_binding = env.optional("BUBU_TRANSPORT_BINDING")
    if raw_binding is not None:
        try:
            binding = parse_binding(raw_binding)
        except BindingError as error:
            raise ConfigError(f"BUBU_TRANSPORT_BINDING: {error}") from None
        if any(binding.info.audio_codecs + binding.info.video_codecs + binding.info.binary_types):
            identity = BindingIdentity(
                storyrun=identity.storyrun,
                namespace=identity.namespace,
                step=identity.step,
                generation=identity.generation,
                capabilities="required",
            )
    metrics_raw = env.optional("BOBRAVOZ_METRICS_LISTEN")
    metrics_listen = None
    if metrics_raw is not None:
        try:
            metrics_listen = parse_endpoint(metrics_raw, allow_port_zero=True)
        except ValueError as error:
            raise ConfigError(f"BOBRAVOZ_METRICS_LISTEN: {error}") from None
    return ConnectorConfig(
        hub=hub,
        listen=listen,
        identity=identity,
        binding=binding,
        metrics_listen=metrics_listen,
        outbox_messages=env.integer("BOBRAVOZ_CONNECTOR_BUFFER_MESSAGES", 1024, minimum=1),
        outbox_bytes=env.integer("BOBRAVOZ_CONNECTOR_BUFFER_BYTES", 16 << 20, minimum=1),
        inbox_messages=env.integer("BOBRAVOZ_CONNECTOR_BUFFER_MESSAGES", 1024, minimum=1),
        inbox_bytes=env.integer("BOBRAVOZ_CONNECTOR_BUFFER_BYTES", 16 << 20, minimum=1),
        reconnect_base=env.duration("BUBU_GRPC_RECONNECT_BASE_BACKOFF", 0.5),
        reconnect_max=env.duration("BUBU_GRPC_RECONNECT_MAX_BACKOFF", 30.0),
        max_reconnects=env.integer("BOBRAVOZ_HUB_MAX_RECONNECTS", 200, minimum=-1),
        message_timeout=env.duration("BUBU_GRPC_MESSAGE_TIMEOUT", 30.0),
        heartbeat_interval=env.duration("BUBU_TRANSPORT_HEARTBEAT_INTERVAL", 30.0) or 30.0,
        client_tls=client_tls,
        server_tls=connector_server_files(env, client_tls),
        hub_server_name=env.optional("BUBU_GRPC_HUB_SERVER_NAME"),
        p2p_listen=p2p_listen,
        identity_mode=identity_mode,
        tls_reload_interval=env.duration("BOBRAVOZ_TLS_RELOAD_INTERVAL", DEFAULT_RELOAD_INTERVAL)
        or DEFAULT_RELOAD_INTERVAL,
        stop_grace=env.duration("BOBRAVOZ_CONNECTOR_STOP_GRACE", 20.0),
    )
