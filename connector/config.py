"""Connector settings, read once from the environment (names listed in the README)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, final

from bobravoz.runtime.binding_envelope import BindingEnvelope, BindingError, parse_binding
from bobravoz.runtime.endpoints import Endpoint, parse_endpoint
from bobravoz.runtime.envconfig import ConfigError, EnvReader
from bobravoz.runtime.handshake import BindingIdentity

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
    security = env.text("BUBU_TRANSPORT_SECURITY_MODE", "").lower()
    if security not in {"", "tls"}:
        raise ConfigError(f"BUBU_TRANSPORT_SECURITY_MODE={security!r}: only '' or 'tls'")
    if security == "tls":
        raise ConfigError("BUBU_TRANSPORT_SECURITY_MODE=tls: TLS is not supported by this build")
    try:
        hub = parse_endpoint(env.text("BUBU_HUB_ENDPOINT"))
    except ValueError as error:
        raise ConfigError(f"BUBU_HUB_ENDPOINT: {error}") from None
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
        listen=_local_endpoint(env),
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
    )
