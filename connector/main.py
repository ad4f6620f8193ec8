"""``bobravoz connector``: run one connector sidecar from its environment until stopped."""

from __future__ import annotations

import functools
import json
import logging
import os
import ssl
import sys
from collections.abc import Mapping

import trio
from prometheus_client import CollectorRegistry

from bobravoz.connector.binding_status import StatusReporter
from bobravoz.connector.config import ConnectorConfig, load_config
from bobravoz.connector.hub_link import HubLink
from bobravoz.connector.service import LOCAL_METHODS, METHODS, ConnectorService
from bobravoz.protocol.constants import PROCESS_METHOD
from bobravoz.runtime.endpoints import Endpoint
from bobravoz.runtime.envconfig import ConfigError
from bobravoz.runtime.grpc_bridge import open_grpc_loop, serve_grpc
from bobravoz.runtime.heap import settle_heap
from bobravoz.runtime.logs import configure_logging
from bobravoz.runtime.metrics import TransportMetrics, watch_tls
from bobravoz.runtime.metrics_http import serve_metrics
from bobravoz.runtime.shutdown import TwoStageStop
from bobravoz.runtime.status import StatusCode
from bobravoz.runtime.supervisor import Restart, open_supervisor
from bobravoz.runtime.tls import ReloadingContext
from bobravoz.runtime.tracing import DISABLED, Tracing, configure_tracing

log = logging.getLogger(__name__)


async def run_connector(
    config: ConnectorConfig,
    metrics: TransportMetrics,
    registry: CollectorRegistry,
    *,
    tracing: Tracing = DISABLED,
    stop: trio.Event | None = None,
    task_status: trio.TaskStatus[dict[str, str]] = trio.TASK_STATUS_IGNORED,
) -> str | None:
    """Serve the local engram and keep the hub link until cancelled (packets carrying a
    trace context get ``connector.send``/``connector.deliver`` spans from ``tracing``).

    ``task_status.started`` receives the bound addresses (``listen``, ``metrics``). Returns the
    reason when the hub link failed for good (the caller exits non-zero); None once ``stop``
    was set and the connector drained (:meth:`ConnectorService.drain`, at most
    ``config.stop_grace`` seconds); else runs until cancelled.
    """
    client_tls, server_tls = tls_contexts(config)
    async with open_supervisor(
        "connector", on_failure=metrics.failure_hook("connector")
    ) as supervisor:
        link = HubLink(config, metrics, client_tls, tracing)
        service = ConnectorService(link, metrics, supervisor)
        server = await supervisor.start_child_ready(
            "local-server",
            functools.partial(serve_grpc, refusals=metrics.boundary_refusals),
            config.listen,
            METHODS if client_tls is None else LOCAL_METHODS,
            service.accept,
            restart=Restart.TEMPORARY,
        )
        addresses = {"listen": str(server.endpoint)}
        if config.p2p_listen is not None:
            peer_server = await supervisor.start_child_ready(
                "p2p-server",
                functools.partial(serve_grpc, tls=server_tls, refusals=metrics.boundary_refusals),
                config.p2p_listen,
                (PROCESS_METHOD,),
                service.accept,
                restart=Restart.TEMPORARY,
            )
            addresses["p2p"] = str(peer_server.endpoint)
        for name, context in (("client", client_tls), ("server", server_tls)):
            if context is not None:
                supervisor.start_child(
                    f"tls-{name}-reload",
                    watch_tls,
                    context,
                    config.tls_reload_interval,
                    metrics,
                    restart=Restart.PERMANENT,
                )
        addresses["tls"] = "mtls" if client_tls is not None else "plaintext"
        if config.metrics_listen is not None:
            bound: Endpoint = await supervisor.start_child_ready(
                "metrics",
                serve_metrics,
                config.metrics_listen,
                registry,
                restart=Restart.PERMANENT,
            )
            addresses["metrics"] = str(bound)
        task_status.started(addresses)
        reporter = None
        if config.binding is not None:
            reporter = StatusReporter.from_environment(
                os.environ,
                config.binding.namespace or config.identity.namespace,
                config.binding.name,
            )
        if reporter is not None:
            service.negotiated = reporter.negotiated
            supervisor.start_child(
                "binding-status",
                _report_status,
                link,
                reporter,
                config.heartbeat_interval,
                restart=Restart.PERMANENT,
            )
        drained: list[bool] = []
        async with trio.open_nursery() as lifetime:
            if stop is not None:
                lifetime.start_soon(
                    _drain_when_stopped, stop, service, config, drained, lifetime.cancel_scope
                )
            await link.run()
            lifetime.cancel_scope.cancel()
        if drained:
            supervisor.cancel()
            return None
        reason = link.fatal or "hub link ended"
        service.broadcast_error(StatusCode.UNAVAILABLE, reason, {"reason": "hub_link_failed"})
        await trio.sleep(0.2)  # let the ERROR reach open Control streams
        supervisor.cancel()
        return reason


async def _drain_when_stopped(
    stop: trio.Event,
    service: ConnectorService,
    config: ConnectorConfig,
    drained: list[bool],
    link_scope: trio.CancelScope,
) -> None:
    """Once ``stop`` is set: drain, note whether it finished in ``drained``, and cancel
    ``link_scope`` (the hub link's)."""
    await stop.wait()
    log.info(
        "stopping: serving the engram until its Data stream ends (at most %.1fs)",
        config.stop_grace,
    )
    drained.append(await service.drain(config.stop_grace))
    if not drained[-1]:
        log.warning(
            "stop grace of %.1fs over before the engram's Data stream ended and its packets "
            "left for the hub: stopping",
            config.stop_grace,
        )
    link_scope.cancel()


def tls_contexts(
    config: ConnectorConfig,
) -> tuple[ReloadingContext | None, ReloadingContext | None]:
    """The client (hub or peer) and peer-to-peer server contexts the configuration asks for;
    ConfigError naming the files when they do not load."""
    contexts: list[ReloadingContext | None] = []
    for files, role in ((config.client_tls, "client"), (config.server_tls, "server")):
        if files is None:
            contexts.append(None)
            continue
        try:
            contexts.append(ReloadingContext(files, role))  # type: ignore[arg-type]
        except (OSError, ssl.SSLError) as error:
            raise ConfigError(
                f"{role} TLS files {files.cert}, {files.key}, {files.ca} do not load: {error}"
            ) from None
    return contexts[0], contexts[1]


async def _report_status(link: HubLink, reporter: StatusReporter, interval: float) -> None:
    """Report Ready on every link change and a heartbeat every ``interval`` seconds."""
    while True:
        message = (
            "connector heartbeat (source=connector)"
            if link.up
            else f"hub link to {link.config.hub} is down"
        )
        await reporter.report(ready=link.up, message=message)
        with trio.move_on_after(interval):
            await link.changed.wait()


def main(environ: Mapping[str, str] | None = None) -> int:
    """Entry point: configure from the environment, print a readiness line, run."""
    configure_logging("connector")
    env = os.environ if environ is None else environ
    try:
        config = load_config(env)
        tls_contexts(config)  # unloadable files are a start-up error, not a retry loop
        tracing = configure_tracing(
            "bobravoz-connector", env, resource_attributes={"bobravoz.step": config.identity.step}
        )
    except ConfigError as error:
        print(f"bobravoz connector: {error}", file=sys.stderr)
        return 2
    registry = CollectorRegistry()
    metrics = TransportMetrics(registry, component="connector")
    outcome: list[str | None] = []

    signals = TwoStageStop()

    async def run() -> None:
        async with open_grpc_loop(), trio.open_nursery() as nursery:
            await nursery.start(signals.watch, nursery.cancel_scope)

            async def serve(task_status: trio.TaskStatus[dict[str, str]]) -> None:
                outcome.append(
                    await run_connector(
                        config,
                        metrics,
                        registry,
                        tracing=tracing,
                        stop=signals.requested,
                        task_status=task_status,
                    )
                )
                nursery.cancel_scope.cancel()

            addresses = await nursery.start(serve)
            settle_heap()
            print(json.dumps({"event": "ready", "component": "connector", **addresses}), flush=True)

    try:
        trio.run(run)
    except KeyboardInterrupt:
        return 130
    finally:
        tracing.shutdown()  # spans still queued are exported before the process exits
    if outcome and outcome[0] is not None:
        print(f"bobravoz connector: {outcome[0]}", file=sys.stderr)
        return 3
    return signals.exit_status
