"""``bobravoz hub``: a standalone hub whose topology comes from a Story file (local mode)."""

from __future__ import annotations

import json
import ssl
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import trio
from prometheus_client import CollectorRegistry

from bobravoz.runtime.endpoints import Endpoint
from bobravoz.runtime.envconfig import ConfigError, EnvReader
from bobravoz.runtime.grpc_bridge import open_grpc_loop
from bobravoz.runtime.guard import BoundaryLimits, open_files_limit
from bobravoz.runtime.handshake import IDENTITY_MODES
from bobravoz.runtime.heap import settle_heap
from bobravoz.runtime.hub.service import HubSettings, serve_hub_until
from bobravoz.runtime.logs import configure_logging
from bobravoz.runtime.metrics import TransportMetrics
from bobravoz.runtime.metrics_http import serve_metrics
from bobravoz.runtime.shutdown import TwoStageStop
from bobravoz.runtime.story import StoryError, load_story
from bobravoz.runtime.tls import ReloadingContext, hub_server_files, security_mode
from bobravoz.runtime.topology import Topology, TopologyError, streaming_topology
from bobravoz.runtime.tracing import configure_tracing


@dataclass(frozen=True, slots=True)
class HubOptions:
    """Command-line options of ``bobravoz hub``."""

    listen: Endpoint
    story: str
    metrics: Endpoint | None


def _first(env: EnvReader, names: tuple[str, ...]) -> str:
    """The first of ``names`` that is set (the hub's name, then Go's shared one)."""
    return next((name for name in names if env.optional(name) is not None), names[0])


def boundary_settings(environ: Mapping[str, str]) -> BoundaryLimits:
    """The hub's connection-level limits from the environment (README: "Limits at the
    boundary"); malformed or out-of-range values are a ConfigError naming the variable."""
    env = EnvReader(environ)
    base = BoundaryLimits()
    keepalive = _first(env, ("BUBU_HUB_KEEPALIVE_TIME", "BUBU_GRPC_KEEPALIVE_TIME"))
    keepalive_timeout = _first(env, ("BUBU_HUB_KEEPALIVE_TIMEOUT", "BUBU_GRPC_KEEPALIVE_TIMEOUT"))
    try:
        return BoundaryLimits(
            max_connections=env.integer("BOBRAVOZ_HUB_MAX_CONNECTIONS", base.max_connections),
            max_connections_per_peer=env.integer(
                "BOBRAVOZ_HUB_MAX_CONNECTIONS_PER_PEER", base.max_connections_per_peer
            ),
            max_streams_per_peer=env.integer(
                "BOBRAVOZ_HUB_MAX_STREAMS_PER_PEER", base.max_streams_per_peer
            ),
            handshake_timeout=env.duration(
                "BOBRAVOZ_HUB_HANDSHAKE_TIMEOUT", base.handshake_timeout
            ),
            idle_timeout=env.duration("BOBRAVOZ_HUB_IDLE_TIMEOUT", base.idle_timeout),
            keepalive_time=env.duration(keepalive, base.keepalive_time),
            keepalive_timeout=env.duration(keepalive_timeout, base.keepalive_timeout)
            or base.keepalive_timeout,
            reset_burst=env.integer("BOBRAVOZ_HUB_RESET_BURST", base.reset_burst),
            reset_rate=env.integer("BOBRAVOZ_HUB_RESET_RATE", int(base.reset_rate)),
            max_header_list_bytes=env.integer(
                "BOBRAVOZ_HUB_MAX_HEADER_LIST_BYTES", base.max_header_list_bytes, minimum=1024
            ),
        )
    except ValueError as error:
        raise ConfigError(f"hub boundary limits: {error}") from None


def hub_settings(environ: Mapping[str, str]) -> HubSettings:
    """Hub tunables from the environment (Go hub names where Go has them)."""
    env = EnvReader(environ)
    defaults = HubSettings()
    identity = env.text("BOBRAVOZ_HUB_IDENTITY", "namespace").strip().lower()
    if identity not in IDENTITY_MODES:
        raise ConfigError(f"BOBRAVOZ_HUB_IDENTITY={identity!r}: one of {', '.join(IDENTITY_MODES)}")
    recv = _first(env, ("BUBU_HUB_MAX_RECV_BYTES", "BUBU_GRPC_MAX_RECV_BYTES"))
    send = _first(env, ("BUBU_HUB_MAX_SEND_BYTES", "BUBU_GRPC_MAX_SEND_BYTES"))
    return HubSettings(
        max_streams=env.integer("BOBRAVOZ_HUB_MAX_STREAMS", 2000, minimum=1),
        max_bindings=env.integer("BOBRAVOZ_HUB_MAX_BINDINGS", defaults.max_bindings, minimum=1),
        inputs_max_bytes=env.integer(
            "BUBU_HUB_INPUTS_MAX_BYTES", defaults.inputs_max_bytes, minimum=1
        ),
        max_buffered_bytes=env.integer(
            "BOBRAVOZ_HUB_MAX_BUFFERED_BYTES", defaults.max_buffered_bytes, minimum=1
        ),
        binding_ttl=env.duration("BOBRAVOZ_HUB_BINDING_TTL", defaults.binding_ttl)
        or defaults.binding_ttl,
        shutdown_grace=env.duration("BOBRAVOZ_HUB_SHUTDOWN_GRACE", defaults.shutdown_grace),
        heartbeat_interval=env.duration("BUBU_HUB_HEARTBEAT_INTERVAL", 10.0) or 10.0,
        max_packet_bytes=env.integer(recv, defaults.max_packet_bytes, minimum=1),
        max_send_bytes=env.integer(send, defaults.max_send_bytes, minimum=1),
        max_metadata_entries=env.integer(
            "BOBRAVOZ_HUB_MAX_METADATA_ENTRIES", defaults.max_metadata_entries, minimum=1
        ),
        max_metadata_value_bytes=env.integer(
            "BOBRAVOZ_HUB_MAX_METADATA_VALUE_BYTES", defaults.max_metadata_value_bytes, minimum=1
        ),
        max_stream_duration=env.duration(
            "BOBRAVOZ_HUB_MAX_STREAM_DURATION", defaults.max_stream_duration
        ),
        boundary=boundary_settings(environ),
        identity=identity,
        tls_reload_interval=env.duration(
            "BOBRAVOZ_TLS_RELOAD_INTERVAL", defaults.tls_reload_interval
        )
        or defaults.tls_reload_interval,
    )


def hub_tls(
    environ: Mapping[str, str], listen: Endpoint, *, cluster: bool = False
) -> ReloadingContext | None:
    """The hub's server TLS context, or None to serve plaintext.

    TLS is required in ``cluster`` mode (the manager), with ``BUBU_TRANSPORT_SECURITY_MODE=tls``
    or ``BUBU_HUB_REQUIRE_TLS=true``, and on whenever a ``BUBU_HUB_TLS_*`` variable or the
    default mount is there; then a missing or unloadable file is a ConfigError naming it.
    Plaintext is only served on loopback and unix sockets.
    """
    env = EnvReader(environ)
    required = cluster or security_mode(env) or env.flag("BUBU_HUB_REQUIRE_TLS")
    files = hub_server_files(env, required=required)
    if files is None:
        if not listen.is_local:
            raise ConfigError(
                f"refusing to serve plaintext on {listen} (not loopback or a unix socket): "
                "set BUBU_HUB_TLS_CERT_FILE, BUBU_HUB_TLS_KEY_FILE and BUBU_HUB_CA_FILE"
            )
        return None
    try:
        return ReloadingContext(files, "server")
    except (OSError, ssl.SSLError) as error:
        raise ConfigError(
            f"hub TLS files {files.cert}, {files.key}, {files.ca} do not load: {error}"
        ) from None


#: Local mode's StoryRun ``spec.inputs`` (a JSON object), the templates' ``inputs`` root.
INPUTS_ENV: Final = "BOBRAVOZ_STORYRUN_INPUTS"


def storyrun_inputs(environ: Mapping[str, str]) -> dict[str, Any]:
    """The StoryRun inputs of local mode from ``BOBRAVOZ_STORYRUN_INPUTS``; ConfigError when
    it is not a JSON object."""
    text = environ.get(INPUTS_ENV, "").strip()
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError as error:
        raise ConfigError(f"{INPUTS_ENV} is not JSON: {error}") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{INPUTS_ENV} must be a JSON object")
    return value


def load_topology(path: str, inputs: Mapping[str, Any] | None = None) -> Topology:
    """The topology of the Story at ``path``; raises StoryError/TopologyError with the path."""
    return streaming_topology(load_story(path), inputs=inputs)


def run_hub(options: HubOptions, environ: Mapping[str, str]) -> int:
    """Run the hub until interrupted; print one JSON readiness line on stdout when serving."""
    try:
        settings = hub_settings(environ)
        tls = hub_tls(environ, options.listen)
        topology = load_topology(options.story, storyrun_inputs(environ))
        # The hub's per-packet `hub.route` span (runtime/tracing.py hub_span) uses this.
        tracing = configure_tracing("bobravoz-hub", environ)
    except (ConfigError, StoryError, TopologyError) as error:
        print(f"bobravoz hub: {error}", file=sys.stderr)
        return 2
    # As Go's runtime does: the soft open-files limit up to the hard one (the server then
    # bounds its connections below it, so accept() keeps a descriptor to spare).
    open_files_limit(raise_soft=True)
    registry = CollectorRegistry()
    metrics = TransportMetrics(registry, component="hub")

    signals = TwoStageStop()

    async def main() -> None:
        async with open_grpc_loop(), trio.open_nursery() as nursery:
            await nursery.start(signals.watch, nursery.cancel_scope)
            stop = signals.requested

            async def serve_then_stop(
                task_status: trio.TaskStatus[Endpoint] = trio.TASK_STATUS_IGNORED,
            ) -> None:
                await serve_hub_until(
                    options.listen,
                    topology,
                    metrics,
                    settings,
                    stop,
                    tls=tls,
                    tracing=tracing,
                    task_status=task_status,
                )
                nursery.cancel_scope.cancel()  # drained: the metrics server and signals go too

            bound = await nursery.start(serve_then_stop)
            ready = {
                "event": "ready",
                "component": "hub",
                "listen": str(bound),
                "tls": "mtls" if tls is not None else "plaintext",
            }
            if options.metrics is not None:
                metrics_bound = await nursery.start(serve_metrics, options.metrics, registry)
                ready["metrics"] = str(metrics_bound)
            settle_heap()
            print(json.dumps(ready), flush=True)

    configure_logging("hub")
    try:
        trio.run(main)
    except KeyboardInterrupt:
        return 130
    finally:
        tracing.shutdown()  # spans still queued are exported before the process exits
    return signals.exit_status
