"""TLS wiring of the injected connector: security mode forced to ``tls``, ``engram-tls`` mounts
copied from the main container, the Go fallbacks, the default ``engram-tls`` Secret, and a
sidecar environment the connector actually accepts once the kubelet has expanded it."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import jsonpatch
import kubernetes_validate
import trustme
import yaml

from bobravoz.connector.config import load_config
from bobravoz.controllers.injection import InjectionConfig, connector_patch
from bobravoz.runtime.binding_envelope import BindingEnvelope, BindingInfo, encode_binding
from bobravoz.runtime.endpoints import Endpoint

PODS = Path(__file__).resolve().parents[1] / "fixtures" / "pods"
CONFIG = InjectionConfig(image="ghcr.io/bubustack/bobravoz-connector:0.1.0")
TCP = BindingEnvelope(
    name="r1-transcribe-transport",
    namespace="demo",
    info=BindingInfo(endpoint="127.0.0.1:50051", transport_ref="grpc", driver="bobravoz-grpc"),
)
SOCKET = BindingEnvelope(
    name="r1-transcribe-transport",
    namespace="demo",
    info=BindingInfo(
        endpoint="unix:///var/run/bubu/connector.sock", transport_ref="grpc", driver="x"
    ),
)


def hub_pod() -> dict[str, Any]:
    loaded = yaml.safe_load((PODS / "engram-hub.yaml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def inject(
    pod: dict[str, Any], binding: BindingEnvelope = TCP, config: InjectionConfig = CONFIG
) -> dict[str, Any]:
    """The pod as the API server stores it after the patch; it must be a valid Pod."""
    operations = connector_patch(
        pod,
        binding_value=encode_binding(binding),
        binding=binding,
        engram_annotations={},
        config=config,
    )
    result: dict[str, Any] = jsonpatch.apply_patch(copy.deepcopy(pod), operations)
    kubernetes_validate.validate(result, "1.30.0", strict=True)
    return result


def sidecar(pod: dict[str, Any]) -> dict[str, Any]:
    container: dict[str, Any] = pod["spec"]["containers"][-1]
    assert container["name"] == "transport-connector"
    return container


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container["env"] if "value" in item}


def kubelet_env(container: dict[str, Any], fields: dict[str, str]) -> dict[str, str]:
    """What the process sees: fieldRefs resolved, ``$(VAR)`` expanded from earlier entries."""
    env: dict[str, str] = {}
    for item in container["env"]:
        if "valueFrom" in item:
            env[item["name"]] = fields[item["valueFrom"]["fieldRef"]["fieldPath"]]
        else:
            env[item["name"]] = re.sub(
                r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                lambda m: env.get(m.group(1), m.group(0)),
                item["value"],
            )
    return env


def with_main(pod: dict[str, Any], env: dict[str, str], mounts: list[dict[str, Any]]) -> None:
    main = pod["spec"]["containers"][0]
    main["env"] = main.get("env", []) + [{"name": k, "value": v} for k, v in env.items()]
    main["volumeMounts"] = mounts
    pod["spec"]["volumes"] = [
        {"name": m["name"], "secret": {"secretName": m["name"]}}
        for m in mounts
        if m["name"] not in {v["name"] for v in pod["spec"].get("volumes", [])}
    ] + pod["spec"].get("volumes", [])


def test_a_pod_without_tls_gets_the_default_engram_tls_secret_and_the_fallbacks() -> None:
    result = inject(hub_pod())
    connector = sidecar(result)
    env = env_of(connector)
    assert env["BUBU_TRANSPORT_SECURITY_MODE"] == "tls"
    assert env["BUBU_GRPC_TLS_CERT_FILE"] == "/var/run/tls/tls.crt"
    assert env["BUBU_GRPC_TLS_KEY_FILE"] == "/var/run/tls/tls.key"
    assert env["BUBU_GRPC_CA_FILE"] == "/var/run/tls/ca.crt"
    assert env["BUBU_GRPC_CLIENT_CERT_FILE"] == "/var/run/tls/tls.crt"
    assert env["BUBU_GRPC_CLIENT_KEY_FILE"] == "/var/run/tls/tls.key"
    assert env["BUBU_HUB_TLS_CERT_FILE"] == "/var/run/tls/tls.crt"
    assert env["BUBU_HUB_CA_FILE"] == "/var/run/tls/ca.crt"
    assert connector["volumeMounts"] == [
        {"name": "engram-tls", "mountPath": "/var/run/tls", "readOnly": True}
    ]
    assert result["spec"]["volumes"] == [
        {"name": "engram-tls", "secret": {"secretName": "engram-tls"}}
    ]
    assert "volumeMounts" not in result["spec"]["containers"][0]  # the engram is untouched


def test_plaintext_is_overridden_from_the_pod_and_from_the_binding() -> None:
    pod = hub_pod()
    with_main(pod, {"BUBU_TRANSPORT_SECURITY_MODE": "plaintext"}, [])
    settings = BindingEnvelope(
        name=TCP.name,
        namespace=TCP.namespace,
        info=BindingInfo(
            endpoint="127.0.0.1:50051",
            transport_ref="grpc",
            driver="bobravoz-grpc",
            payload=b'{"env": {"BUBU_TRANSPORT_SECURITY_MODE": "plaintext"}}',
        ),
    )
    assert settings.settings()["env"]["BUBU_TRANSPORT_SECURITY_MODE"] == "plaintext"
    env = env_of(sidecar(inject(pod, settings)))
    assert env["BUBU_TRANSPORT_SECURITY_MODE"] == "tls"


def test_engram_tls_mounts_and_variables_are_copied_and_the_fallbacks_fill_the_rest() -> None:
    pod = hub_pod()
    mounts = [
        {"name": "engram-tls", "mountPath": "/etc/engram-tls", "readOnly": True},
        {"name": "data", "mountPath": "/data"},
        {"name": "engram-tls-ca", "mountPath": "/etc/ca/ca.crt", "subPath": "ca.crt"},
    ]
    with_main(
        pod,
        {
            "BUBU_GRPC_TLS_CERT_FILE": "/etc/engram-tls/tls.crt",
            "BUBU_GRPC_TLS_KEY_FILE": "/etc/engram-tls/tls.key",
            "BUBU_GRPC_CA_FILE": "/etc/ca/ca.crt",
            "BUBU_GRPC_CLIENT_CERT_FILE": "/etc/engram-tls/client.crt",
            "BUBU_GRPC_HUB_SERVER_NAME": "hub.example",
        },
        mounts,
    )
    volumes_before = copy.deepcopy(pod["spec"]["volumes"])
    result = inject(pod)
    connector = sidecar(result)
    assert connector["volumeMounts"] == [mounts[0], mounts[2]]  # not "data"
    env = env_of(connector)
    assert env["BUBU_GRPC_TLS_CERT_FILE"] == "/etc/engram-tls/tls.crt"
    assert env["BUBU_GRPC_CLIENT_CERT_FILE"] == "/etc/engram-tls/client.crt"  # set: kept
    assert env["BUBU_GRPC_CLIENT_KEY_FILE"] == "/etc/engram-tls/tls.key"  # ← GRPC TLS key
    assert env["BUBU_HUB_TLS_CERT_FILE"] == "/etc/engram-tls/tls.crt"  # ← GRPC TLS cert
    assert env["BUBU_HUB_TLS_KEY_FILE"] == "/etc/engram-tls/tls.key"
    assert env["BUBU_HUB_CA_FILE"] == "/etc/ca/ca.crt"  # ← GRPC CA
    assert env["BUBU_GRPC_HUB_SERVER_NAME"] == "hub.example"
    assert result["spec"]["volumes"] == volumes_before  # no default Secret added


def test_a_mount_without_variables_points_them_at_its_files() -> None:
    pod = hub_pod()
    with_main(pod, {}, [{"name": "engram-tls-spiffe", "mountPath": "/var/run/spiffe/"}])
    connector = sidecar(inject(pod))
    env = env_of(connector)
    assert env["BUBU_GRPC_CLIENT_CERT_FILE"] == "/var/run/spiffe/tls.crt"
    assert env["BUBU_GRPC_CLIENT_KEY_FILE"] == "/var/run/spiffe/tls.key"
    assert env["BUBU_GRPC_CA_FILE"] == "/var/run/spiffe/ca.crt"
    assert [m["name"] for m in connector["volumeMounts"]] == ["engram-tls-spiffe"]


def test_a_declared_engram_tls_volume_is_reused_not_duplicated() -> None:
    pod = hub_pod()
    declared = {"name": "engram-tls", "secret": {"secretName": "my-own-cert"}}
    pod["spec"]["volumes"] = [declared]
    result = inject(pod)  # a duplicate volume name would fail validation
    assert result["spec"]["volumes"] == [declared]
    assert sidecar(result)["volumeMounts"][0]["name"] == "engram-tls"


def test_a_socket_endpoint_adds_both_volumes_and_mounts_the_socket_first() -> None:
    result = inject(hub_pod(), SOCKET)
    assert [v["name"] for v in result["spec"]["volumes"]] == [
        "bobravoz-connector-socket",
        "engram-tls",
    ]
    mounts = sidecar(result)["volumeMounts"]
    assert [m["mountPath"] for m in mounts] == ["/var/run/bubu", "/var/run/tls"]
    engram_mounts = result["spec"]["containers"][0]["volumeMounts"]
    assert [m["name"] for m in engram_mounts] == ["bobravoz-connector-socket"]


def test_the_injected_environment_is_one_the_connector_accepts(tmp_path: Path) -> None:
    authority = trustme.CA()
    leaf = authority.issue_cert("*.demo.svc.cluster.local")
    leaf.cert_chain_pems[0].write_to_path(tmp_path / "tls.crt")
    leaf.private_key_pem.write_to_path(tmp_path / "tls.key")
    authority.cert_pem.write_to_path(tmp_path / "ca.crt")
    config = InjectionConfig(image="connector:test", tls_mount_path=str(tmp_path))
    connector = sidecar(inject(hub_pod(), config=config))
    env = kubelet_env(connector, {"metadata.namespace": "demo", "status.podIP": "fd00:10:244::7"})
    loaded = load_config(env)
    assert loaded.client_tls is not None
    assert loaded.client_tls.cert == str(tmp_path / "tls.crt")
    assert loaded.server_tls is not None
    assert loaded.server_tls.key == str(tmp_path / "tls.key")
    assert loaded.p2p_listen == Endpoint(host="fd00:10:244::7", port=50051)
    assert loaded.listen == Endpoint(host="127.0.0.1", port=50051)
    assert loaded.hub == Endpoint(
        host="bobravoz-grpc-hub.bobravoz-system.svc.cluster.local", port=9000
    )
    assert loaded.identity.namespace == "demo"
