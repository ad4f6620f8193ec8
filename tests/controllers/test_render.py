"""``bobravoz render``: bindings, routing annotations and sidecar patches computed offline with
the same rule as the runtime, checked on the reference P2P chain (§5.3) and its variants."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from bobravoz.controllers.injection import InjectionConfig
from bobravoz.controllers.render import load_transports, render
from bobravoz.runtime.resources import TransportBinding, parse_resource
from bobravoz.runtime.story import load_story, parse_story

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
TRANSPORT = FIXTURES / "resources" / "transport-grpc-default.yaml"
CONFIG = InjectionConfig(image="connector:test")


def bindings(documents: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {d["spec"]["stepName"]: d for d in documents if d["kind"] == "TransportBinding"}


def test_p2p_chain_renders_the_reference_routing() -> None:
    story = load_story(FIXTURES / "stories" / "p2p-chain.yaml")
    documents = render(story, "r1", load_transports(TRANSPORT), CONFIG)
    found = bindings(documents)
    assert sorted(found) == ["consumer", "enricher", "producer"]
    svc = ".demo.svc.cluster.local:50051"
    producer, enricher, consumer = found["producer"], found["enricher"], found["consumer"]
    assert producer["metadata"]["name"] == "r1-producer-transport"
    assert producer["metadata"]["annotations"] == {
        "transport.bubustack.io/routing-mode": "p2p",
        "transport.bubustack.io/downstream-steps": "enricher",
    }
    assert producer["status"]["upstreamHost"] == "r1-enricher" + svc
    assert "downstreamHost" not in producer["status"]
    assert enricher["status"]["upstreamHost"] == "r1-consumer" + svc
    assert enricher["status"]["downstreamHost"] == "r1-enricher" + svc
    assert consumer["metadata"]["annotations"] == {"transport.bubustack.io/routing-mode": "hub"}
    assert consumer["status"]["downstreamHost"] == "r1-consumer" + svc
    assert "upstreamHost" not in consumer["status"]
    for document in found.values():
        parsed = parse_resource(document)  # what we render is a valid TransportBinding
        assert isinstance(parsed, TransportBinding)
        assert parsed.spec.driver == "bobravoz-grpc"
        assert parsed.spec.raw_settings is not None
        assert parsed.spec.raw_settings["backpressure"]["buffer"]["maxMessages"] == 500
    patches = [d for d in documents if d["kind"] == "ConnectorSidecarPatch"]
    sidecar = patches[0]["patch"][-1]["value"]
    env = {item["name"]: item.get("value") for item in sidecar["env"]}
    assert env["BUBU_HUB_ENDPOINT"] == "r1-enricher" + svc


def test_routing_mode_hub_forces_every_step_onto_the_hub() -> None:
    text = (
        (FIXTURES / "stories" / "p2p-chain.yaml")
        .read_text()
        .replace(
            "- {name: fast, transportRef: grpc-default}",
            "- {name: fast, transportRef: grpc-default, streaming: {routing: {mode: hub}}}",
        )
    )
    found = bindings(render(parse_story(text), "r1", load_transports(TRANSPORT), CONFIG))
    for document in found.values():
        assert document["metadata"]["annotations"]["transport.bubustack.io/routing-mode"] == "hub"
        assert "upstreamHost" not in document["status"]
        assert "downstreamHost" not in document["status"]


def test_render_command_prints_yaml() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bobravoz.sdk.cli",
            "render",
            str(FIXTURES / "stories" / "voice-pipeline.yaml"),
            "--storyrun",
            "r1",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    kinds = [d["kind"] for d in yaml.safe_load_all(done.stdout)]
    assert kinds.count("TransportBinding") == 5
    assert kinds.count("ConnectorSidecarPatch") == 5


def test_render_refuses_a_batch_story(tmp_path: Path) -> None:
    batch = tmp_path / "batch.yaml"
    batch.write_text(
        "metadata: {name: b}\nspec:\n  pattern: batch\n  steps:\n    - {name: a, ref: {name: e}}\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "bobravoz.sdk.cli", "render", str(batch), "--storyrun", "r1"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "$.spec.pattern" in done.stderr
