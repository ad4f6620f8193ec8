"""``bobravoz controller``: the manager process — transport reconciler, grpc hub and the
connector-injection webhook, with leader election, health and metrics endpoints."""

from __future__ import annotations

import functools
import json
import logging
import os
import ssl
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import trio
from prometheus_client import CollectorRegistry

from bobravoz.controllers.injection import InjectionConfig
from bobravoz.controllers.kube import ENGRAMS, TRANSPORTBINDINGS, Kube, client_for
from bobravoz.controllers.leader import LeaderElector
from bobravoz.controllers.manager import ControllerMetrics, TransportController, run_when_leading
from bobravoz.controllers.webhook import Lookups, serve_webhook
from bobravoz.runtime.binding_envelope import PROTOCOL_VERSION, BindingEnvelope, BindingInfo
from bobravoz.runtime.endpoints import Endpoint
from bobravoz.runtime.envconfig import ConfigError, parse_duration
from bobravoz.runtime.grpc_bridge import open_grpc_loop
from bobravoz.runtime.hub import HubSettings, TopologyFeed, TopologyRegistry, serve_hub
from bobravoz.runtime.hub.main import hub_tls
from bobravoz.runtime.logs import configure_logging
from bobravoz.runtime.metrics import TransportMetrics
from bobravoz.runtime.metrics_http import serve_metrics
from bobravoz.runtime.shutdown import cancel_on_signals
from bobravoz.runtime.tls import ReloadingContext

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ManagerOptions:
    """Flags of ``bobravoz controller``."""

    api_server: str | None
    hub_listen: Endpoint
    health_listen: Endpoint
    webhook_listen: Endpoint | None
    webhook_cert_dir: Path | None
    config_namespace: str
    config_name: str
    leader_elect: bool
    identity: str
    connector_image: str | None
    hub_service: str = "bobravoz-grpc-hub"


def connector_image(flag: str | None, environ: Mapping[str, str], config: Mapping[str, str]) -> str:
    """The sidecar image: flag, else ``CONNECTOR_IMAGE``, else ConfigMap ``connector.image``."""
    return flag or environ.get("CONNECTOR_IMAGE", "") or config.get("connector.image", "")


def binding_envelope(binding: Mapping[str, object]) -> BindingEnvelope:
    """A TransportBinding object as the ``BUBU_TRANSPORT_BINDING`` envelope."""
    meta = binding.get("metadata", {})
    spec = binding.get("spec", {})
    assert isinstance(meta, dict)
    assert isinstance(spec, dict)
    audio = spec.get("audio") or {}
    video = spec.get("video") or {}
    binary = spec.get("binary") or {}
    raw = spec.get("rawSettings")
    return BindingEnvelope(
        name=str(meta.get("name")),
        namespace=str(meta.get("namespace", "")),
        info=BindingInfo(
            endpoint=str(spec.get("connectorEndpoint") or "127.0.0.1:50051"),
            transport_ref=str(spec.get("transportRef", "")),
            driver=str(spec.get("driver", "")),
            audio_codecs=tuple(audio.get("codecs", [])),
            video_codecs=tuple(video.get("codecs", [])),
            binary_types=tuple(binary.get("mimeTypes", [])),
            payload=json.dumps(raw).encode() if raw else b"",
            protocol_version=PROTOCOL_VERSION,
        ),
    )


def hub_settings_from(config: Mapping[str, str]) -> HubSettings:
    """Hub tunables from the operator ConfigMap's ``hub.*`` keys (defaults otherwise)."""
    defaults = HubSettings()
    try:
        return HubSettings(
            max_streams=int(config.get("hub.max-active-streams", defaults.max_streams)),
            heartbeat_interval=parse_duration(config["hub.heartbeat-interval"])
            if "hub.heartbeat-interval" in config
            else defaults.heartbeat_interval,
        )
    except ValueError as error:
        log.warning("ignoring invalid hub.* settings in the operator ConfigMap: %s", error)
        return defaults


def kube_lookups(kube: Kube) -> Lookups:
    """Webhook lookups served by the API (Engram annotations, TransportBindings)."""

    def engram_annotations(namespace: str, name: str) -> Mapping[str, str]:
        found = kube.get(ENGRAMS, namespace, name)
        if found is None:
            raise LookupError("Engram not found")
        return dict(found.get("metadata", {}).get("annotations") or {})

    def binding(namespace: str, name: str) -> BindingEnvelope:
        found = kube.get(TRANSPORTBINDINGS, namespace, name)
        if found is None:
            raise LookupError(f"TransportBinding {namespace}/{name} not found")
        return binding_envelope(found)

    return Lookups(engram_annotations=engram_annotations, binding=binding)


def _ssl_context(cert_dir: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_dir / "tls.crt", cert_dir / "tls.key")
    return context


async def run_manager(
    options: ManagerOptions,
    hub_tls: ReloadingContext,
    *,
    task_status: trio.TaskStatus[dict[str, str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run everything until cancelled; ``task_status`` gets the bound addresses. The
    embedded hub serves mTLS only (``hub_tls``): a cluster never sees plaintext."""
    api = client_for(options.api_server)
    kube = Kube(api)
    registry = CollectorRegistry()
    hub_metrics = TransportMetrics(registry, component="hub")
    metrics = ControllerMetrics(registry)
    feed = TopologyFeed()
    namespace = options.config_namespace
    hub_endpoint = f"{options.hub_service}.{namespace}.svc.cluster.local:{options.hub_listen.port}"
    controller = TransportController(kube, hub_endpoint, feed, metrics)
    elector = (
        LeaderElector(kube, namespace, "bobravoz-transport-controller", options.identity)
        if options.leader_elect
        else None
    )
    config = await trio.to_thread.run_sync(kube.config_map_data, namespace, options.config_name)
    settings = hub_settings_from(config)
    async with trio.open_nursery() as nursery:
        hub = await nursery.start(
            functools.partial(serve_hub, feed=feed, tls=hub_tls),
            options.hub_listen,
            TopologyRegistry(),
            hub_metrics,
            settings,
        )
        health = await nursery.start(serve_metrics, options.health_listen, registry)
        addresses = {"hub": str(hub), "health": str(health)}
        image = connector_image(options.connector_image, os.environ, config)
        if options.webhook_listen is not None and options.webhook_cert_dir is not None:
            injection = InjectionConfig(
                image=image,
                pull_policy=config.get("connector.image-pull-policy", "IfNotPresent"),
                hub_service=options.hub_service,
                hub_namespace=namespace,
                hub_port=int(config.get("hub.port", options.hub_listen.port or 9000)),
            )
            webhook = await nursery.start(
                serve_webhook,
                options.webhook_listen,
                _ssl_context(options.webhook_cert_dir),
                injection,
                kube_lookups(kube),
            )
            addresses["webhook"] = str(webhook)
        nursery.start_soon(run_when_leading, elector, controller, metrics)
        task_status.started(addresses)


def main(options: ManagerOptions) -> int:
    """Entry point: run the manager, print a JSON readiness line, stop cleanly on signals."""
    configure_logging("controller")
    try:
        tls = hub_tls(os.environ, options.hub_listen, cluster=True)
    except ConfigError as error:
        print(f"bobravoz controller: {error}", file=sys.stderr)
        return 2
    assert tls is not None  # cluster mode: hub_tls never answers plaintext

    async def run() -> None:
        async with open_grpc_loop(), trio.open_nursery() as nursery:
            await nursery.start(cancel_on_signals, nursery.cancel_scope)
            addresses = await nursery.start(run_manager, options, tls)
            print(
                json.dumps({"event": "ready", "component": "controller", **addresses}), flush=True
            )

    try:
        trio.run(run)
    except KeyboardInterrupt:
        return 130
    return 0
