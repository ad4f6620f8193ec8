"""``bobravoz hub``: a standalone hub whose topology comes from a Story file (local mode)."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass

import trio
from prometheus_client import CollectorRegistry

from bobravoz.runtime.endpoints import Endpoint
from bobravoz.runtime.envconfig import ConfigError, EnvReader
from bobravoz.runtime.grpc_bridge import open_grpc_loop
from bobravoz.runtime.heap import settle_heap
from bobravoz.runtime.hub.service import HubSettings, serve_hub_until
from bobravoz.runtime.logs import configure_logging
from bobravoz.runtime.metrics import TransportMetrics
from bobravoz.runtime.metrics_http import serve_metrics
from bobravoz.runtime.shutdown import set_on_signals
from bobravoz.runtime.story import StoryError, load_story
from bobravoz.runtime.topology import Topology, TopologyError, streaming_topology

_TLS_VARIABLES = (
    "BUBU_HUB_TLS_CERT_FILE",
    "BUBU_HUB_TLS_KEY_FILE",
    "BUBU_HUB_CA_FILE",
)


@dataclass(frozen=True, slots=True)
class HubOptions:
    """Command-line options of ``bobravoz hub``."""

    listen: Endpoint
    story: str
    metrics: Endpoint | None


def hub_settings(environ: Mapping[str, str]) -> HubSettings:
    """Hub tunables from the environment (Go hub names); TLS settings are refused for now."""
    env = EnvReader(environ)
    if env.flag("BUBU_HUB_REQUIRE_TLS") or any(env.optional(name) for name in _TLS_VARIABLES):
        raise ConfigError(
            "TLS is configured (BUBU_HUB_TLS_* / BUBU_HUB_REQUIRE_TLS) but this hub build "
            "serves plaintext only; refusing to start rather than fall back to plaintext"
        )
    defaults = HubSettings()
    return HubSettings(
        max_streams=env.integer("BOBRAVOZ_HUB_MAX_STREAMS", 2000, minimum=1),
        max_bindings=env.integer("BOBRAVOZ_HUB_MAX_BINDINGS", defaults.max_bindings, minimum=1),
        max_buffered_bytes=env.integer(
            "BOBRAVOZ_HUB_MAX_BUFFERED_BYTES", defaults.max_buffered_bytes, minimum=1
        ),
        binding_ttl=env.duration("BOBRAVOZ_HUB_BINDING_TTL", defaults.binding_ttl)
        or defaults.binding_ttl,
        shutdown_grace=env.duration("BOBRAVOZ_HUB_SHUTDOWN_GRACE", defaults.shutdown_grace),
        heartbeat_interval=env.duration("BUBU_HUB_HEARTBEAT_INTERVAL", 10.0) or 10.0,
        max_packet_bytes=env.integer("BUBU_HUB_MAX_RECV_BYTES", 10 * 1024 * 1024, minimum=1),
    )


def load_topology(path: str) -> Topology:
    """The topology of the Story at ``path``; raises StoryError/TopologyError with the path."""
    return streaming_topology(load_story(path))


def run_hub(options: HubOptions, environ: Mapping[str, str]) -> int:
    """Run the hub until interrupted; print one JSON readiness line on stdout when serving."""
    try:
        settings = hub_settings(environ)
        topology = load_topology(options.story)
    except (ConfigError, StoryError, TopologyError) as error:
        print(f"bobravoz hub: {error}", file=sys.stderr)
        return 2
    registry = CollectorRegistry()
    metrics = TransportMetrics(registry, component="hub")

    async def main() -> None:
        stop = trio.Event()
        async with open_grpc_loop(), trio.open_nursery() as nursery:
            await nursery.start(set_on_signals, stop)

            async def serve_then_stop(
                task_status: trio.TaskStatus[Endpoint] = trio.TASK_STATUS_IGNORED,
            ) -> None:
                await serve_hub_until(
                    options.listen, topology, metrics, settings, stop, task_status=task_status
                )
                nursery.cancel_scope.cancel()  # drained: the metrics server and signals go too

            bound = await nursery.start(serve_then_stop)
            ready = {"event": "ready", "component": "hub", "listen": str(bound)}
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
    return 0
