"""``bobravoz render``: what bobravoz would create for a StoryRun, offline.

For each streaming step of the Story: the TransportBinding (spec as the BubuStack operator
fills it, and the status bobravoz would write), the step's routing annotations, and the JSON
patch the webhook would apply to its pod. Everything comes from the runtime's pure topology
code, the same rule the hub and ``bobravoz up`` use, so a user can review it without a cluster.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import msgspec
import yaml

from bobravoz.controllers.injection import (
    DOWNSTREAM_ANNOTATION,
    ENGRAM_LABEL,
    ROUTING_ANNOTATION,
    STORYRUN_LABEL,
    InjectionConfig,
    connector_patch,
)
from bobravoz.runtime.binding_envelope import BindingEnvelope, BindingInfo, encode_binding
from bobravoz.runtime.models import ObjectMeta
from bobravoz.runtime.naming import binding_name, workload_name
from bobravoz.runtime.resources import Transport, TransportSpec, load_resources
from bobravoz.runtime.settings import merge_settings
from bobravoz.runtime.story import Story
from bobravoz.runtime.topology import Topology, streaming_topology_with

DEFAULT_TRANSPORT: Final = Transport(
    metadata=ObjectMeta(name="bobravoz-grpc"),
    spec=TransportSpec(
        provider="grpc",
        driver="bobravoz-grpc",
        supported_binary=("application/json", "application/octet-stream"),
    ),
)
CONNECTOR_ENDPOINT: Final = "127.0.0.1:50051"


def load_transports(path: Path | None) -> dict[str, Transport]:
    """Transports by name from a YAML file (other kinds in it are ignored)."""
    if path is None:
        return {DEFAULT_TRANSPORT.metadata.name: DEFAULT_TRANSPORT}
    found = {r.metadata.name: r for r in load_resources(path) if isinstance(r, Transport)}
    return found or {DEFAULT_TRANSPORT.metadata.name: DEFAULT_TRANSPORT}


def _transport_for(
    story: Story, step_transport: str | None, transports: dict[str, Transport]
) -> Transport:
    if step_transport is not None:
        declared = next(t for t in story.spec.transports if t.name == step_transport)
        if declared.transport_ref and declared.transport_ref in transports:
            return transports[declared.transport_ref]
    return next(iter(transports.values()))


def _lanes(spec: TransportSpec) -> dict[str, Any]:
    lanes: dict[str, Any] = {}
    if spec.supported_audio:
        lanes["audio"] = {
            "direction": "bidirectional",
            "codecs": [codec.name for codec in spec.supported_audio],
        }
    if spec.supported_video:
        lanes["video"] = {
            "direction": "bidirectional",
            "codecs": [codec.name for codec in spec.supported_video],
        }
    if spec.supported_binary:
        lanes["binary"] = {"direction": "bidirectional", "mimeTypes": list(spec.supported_binary)}
    return lanes


def render(
    story: Story, storyrun: str, transports: dict[str, Transport], config: InjectionConfig
) -> list[dict[str, Any]]:
    """The documents ``bobravoz render`` prints (see the module docstring)."""
    defaults = {
        name: t.spec.streaming for name, t in transports.items() if t.spec.streaming is not None
    }
    topology: Topology = streaming_topology_with(story, transport_defaults=defaults)
    namespace = topology.namespace
    documents: list[dict[str, Any]] = []
    for node in topology.streaming_steps():
        transport = _transport_for(story, node.transport, transports)
        downstream = [edge.target for edge in topology.downstream_of(node.id)]
        annotations: dict[str, str] = {ROUTING_ANNOTATION: node.mode}
        if downstream:
            annotations[DOWNSTREAM_ANNOTATION] = ",".join(downstream)
        declared = next((t for t in story.spec.transports if t.name == node.transport), None)
        settings = merge_settings(
            transport.spec.streaming, declared.streaming if declared else None
        )
        raw_settings = {**(transport.spec.default_settings or {}), **msgspec.to_builtins(settings)}
        upstream_host = ""
        if node.mode == "p2p" and len(downstream) == 1:
            upstream_host = (
                f"{workload_name(storyrun, downstream[0])}.{namespace}.svc.cluster.local:50051"
            )
        downstream_host = ""
        if any(topology.step(e.source).mode == "p2p" for e in topology.upstream_of(node.id)):
            downstream_host = (
                f"{workload_name(storyrun, node.id)}.{namespace}.svc.cluster.local:50051"
            )
        name = binding_name(storyrun, node.id)
        spec: dict[str, Any] = {
            "transportRef": transport.metadata.name,
            "driver": transport.spec.driver,
            "stepName": node.name,
            "engramName": workload_name(storyrun, node.id),
            "storyRunRef": {"name": storyrun, "namespace": namespace},
            **_lanes(transport.spec),
            "connectorEndpoint": CONNECTOR_ENDPOINT,
            "rawSettings": raw_settings,
        }
        status: dict[str, Any] = {"endpoint": config.hub_endpoint()}
        if upstream_host:
            status["upstreamHost"] = upstream_host
        if downstream_host:
            status["downstreamHost"] = downstream_host
        status["conditions"] = [
            {
                "type": "Ready",
                "status": "False",
                "reason": "Reconciling",
                "message": "awaiting connector heartbeat",
            }
        ]
        documents.append(
            {
                "apiVersion": "transport.bubustack.io/v1alpha1",
                "kind": "TransportBinding",
                "metadata": {"name": name, "namespace": namespace, "annotations": annotations},
                "spec": spec,
                "status": status,
            }
        )
        envelope = BindingEnvelope(
            name=name,
            namespace=namespace,
            info=BindingInfo(
                endpoint=CONNECTOR_ENDPOINT,
                transport_ref=transport.metadata.name,
                driver=transport.spec.driver,
                binary_types=transport.spec.supported_binary,
                audio_codecs=tuple(c.name for c in transport.spec.supported_audio),
                video_codecs=tuple(c.name for c in transport.spec.supported_video),
            ),
        )
        pod = {
            "metadata": {
                "name": workload_name(storyrun, node.id),
                "namespace": namespace,
                "labels": {ENGRAM_LABEL: node.engram or "", STORYRUN_LABEL: storyrun},
                "annotations": {
                    **annotations,
                    "bubustack.io/step": node.name,
                    "bubustack.io/story": topology.story_name,
                },
            },
            "spec": {"containers": [{"name": "engram", "image": "ENGRAM_IMAGE"}]},
        }
        documents.append(
            {
                "kind": "ConnectorSidecarPatch",
                "step": node.id,
                "podAnnotations": annotations,
                "patch": connector_patch(
                    pod,
                    binding_value=encode_binding(envelope),
                    binding=envelope,
                    engram_annotations={},
                    config=config,
                ),
            }
        )
    return documents


def render_text(
    story: Story, storyrun: str, transport_file: Path | None, config: InjectionConfig
) -> str:
    """The YAML stream printed by ``bobravoz render``."""
    documents: Sequence[dict[str, Any]] = render(
        story, storyrun, load_transports(transport_file), config
    )
    return yaml.safe_dump_all(documents, sort_keys=False)
