"""Manager configuration: the connector image's precedence and the binding envelope built
from a TransportBinding object."""

from __future__ import annotations

import json

from bobravoz.controllers.main import binding_envelope, connector_image


def test_connector_image_precedence() -> None:
    config = {"connector.image": "from-configmap"}
    assert connector_image("from-flag", {"CONNECTOR_IMAGE": "from-env"}, config) == "from-flag"
    assert connector_image(None, {"CONNECTOR_IMAGE": "from-env"}, config) == "from-env"
    assert connector_image(None, {}, config) == "from-configmap"
    assert connector_image(None, {}, {}) == ""


def test_binding_envelope_from_a_transport_binding() -> None:
    envelope = binding_envelope(
        {
            "metadata": {"name": "r1-sink-transport", "namespace": "demo"},
            "spec": {
                "transportRef": "grpc-default",
                "driver": "bobravoz-grpc",
                "connectorEndpoint": "127.0.0.1:50051",
                "audio": {"direction": "bidirectional", "codecs": ["opus"]},
                "binary": {"direction": "bidirectional", "mimeTypes": ["application/json"]},
                "rawSettings": {"env": {"BUBU_DEBUG": "true"}},
            },
        }
    )
    assert envelope.reference == "demo/r1-sink-transport"
    assert envelope.info.audio_codecs == ("opus",)
    assert envelope.info.binary_types == ("application/json",)
    assert envelope.settings() == {"env": {"BUBU_DEBUG": "true"}}
    assert json.loads(envelope.info.payload)["env"]["BUBU_DEBUG"] == "true"


def test_hub_settings_from_the_operator_configmap() -> None:
    from bobravoz.controllers.main import hub_settings_from

    settings = hub_settings_from({"hub.max-active-streams": "50", "hub.heartbeat-interval": "2s"})
    assert (settings.max_streams, settings.heartbeat_interval) == (50, 2.0)
    assert hub_settings_from({"hub.max-active-streams": "many"}).max_streams == 2000
