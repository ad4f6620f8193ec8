"""The connector-injection webhook over real HTTPS, with AdmissionReviews built from fixture
pods; every patched pod must validate against the Kubernetes Pod schema."""

from __future__ import annotations

import base64
import copy
import json
import ssl
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jsonpatch
import kubernetes_validate
import pytest
import trio
import trustme
import yaml

from bobravoz.controllers.injection import InjectionConfig
from bobravoz.controllers.webhook import MUTATE_PATH, Lookups, review, serve_webhook
from bobravoz.runtime.binding_envelope import BindingEnvelope, BindingInfo
from bobravoz.runtime.endpoints import Endpoint

PODS = Path(__file__).resolve().parents[1] / "fixtures" / "pods"
CONFIG = InjectionConfig(
    image="ghcr.io/bubustack/bobravoz-connector:0.1.0", hub_namespace="bobravoz-system"
)
BINDINGS = {
    ("demo", "r1-transcribe-transport"): BindingEnvelope(
        name="r1-transcribe-transport",
        namespace="demo",
        info=BindingInfo(
            endpoint="127.0.0.1:50051",
            transport_ref="livekit",
            driver="livekit",
            audio_codecs=("opus", "pcm16"),
        ),
    )
}
ENGRAMS = {("demo", "openai-stt"): {}, ("demo", "text-emitter"): {}}


def engram_annotations(namespace: str, name: str) -> Mapping[str, str]:
    return ENGRAMS[(namespace, name)]


def binding(namespace: str, name: str) -> BindingEnvelope:
    return BINDINGS[(namespace, name)]


LOOKUPS = Lookups(engram_annotations=engram_annotations, binding=binding)


def pod(name: str) -> dict[str, Any]:
    loaded = yaml.safe_load((PODS / name).read_text())
    assert isinstance(loaded, dict)
    return loaded


def admission(obj: dict[str, Any], operation: str = "CREATE") -> bytes:
    return json.dumps(
        {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "u-1",
                "operation": operation,
                "namespace": "demo",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "object": obj,
            },
        }
    ).encode()


def patched(obj: dict[str, Any], answer: dict[str, Any]) -> dict[str, Any]:
    operations = json.loads(base64.b64decode(answer["response"]["patch"]))
    result: dict[str, Any] = jsonpatch.apply_patch(copy.deepcopy(obj), operations)
    return result


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item.get("value", "<from>") for item in container["env"]}


@pytest.fixture
def certificates() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    authority = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(server)
    client = ssl.create_default_context()
    authority.configure_trust(client)
    return server, client


async def post(
    address: Endpoint, client: ssl.SSLContext, body: bytes, path: str = MUTATE_PATH
) -> tuple[int, dict[str, Any]]:
    def call() -> tuple[int, dict[str, Any]]:
        request = urllib.request.Request(
            f"https://{address.host}:{address.port}{path}",
            data=body,
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, context=client, timeout=10) as response:  # noqa: S310
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    return await trio.to_thread.run_sync(call)


async def with_webhook(
    certificates: tuple[ssl.SSLContext, ssl.SSLContext],
    body: Callable[[Endpoint, ssl.SSLContext], Any],
) -> None:
    server, client = certificates
    async with trio.open_nursery() as nursery:
        address = await nursery.start(serve_webhook, Endpoint(port=0), server, CONFIG, LOOKUPS)
        await body(address, client)
        nursery.cancel_scope.cancel()


async def test_hub_routed_pod_gets_the_sidecar_and_stays_valid(
    certificates: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    async def check(address: Endpoint, client: ssl.SSLContext) -> None:
        original = pod("engram-hub.yaml")
        status, answer = await post(address, client, admission(original))
        assert status == 200
        assert answer["response"]["allowed"] is True
        result = patched(original, answer)
        kubernetes_validate.validate(result, "1.30.0", strict=True)
        sidecar = result["spec"]["containers"][-1]
        assert sidecar["name"] == "transport-connector"
        assert sidecar["image"] == CONFIG.image
        env = env_of(sidecar)
        assert (
            env["BUBU_HUB_ENDPOINT"] == "bobravoz-grpc-hub.bobravoz-system.svc.cluster.local:9000"
        )
        assert env["BUBU_STORYRUN_ID"] == "r1"
        assert env["BUBU_STEP_NAME"] == "transcribe"
        assert env["BUBU_CONNECTOR_GENERATION"] == "4"
        assert env["BUBU_GRPC_MESSAGE_TIMEOUT"] == "20s"
        assert env["BUBU_GRPC_LOCAL_ENDPOINT"] == "127.0.0.1:50051"
        assert env["BUBU_TRANSPORT_AUDIO_CODECS"] == "opus,pcm16"
        assert json.loads(env["BUBU_TRANSPORT_BINDING"])["name"] == "r1-transcribe-transport"
        assert env["BUBU_POD_NAMESPACE"] == "<from>"
        security = sidecar["securityContext"]
        assert security["capabilities"] == {"drop": ["ALL"]}
        assert security["runAsNonRoot"] is True
        assert security["allowPrivilegeEscalation"] is False
        annotations = result["metadata"]["annotations"]
        assert annotations["transport.bobravoz.bubustack.io/connector-injected"] == "true"
        assert result["metadata"]["labels"]["transport.bobravoz.bubustack.io/connector"] == "true"
        again, second = await post(address, client, admission(result))
        assert again == 200
        assert "patch" not in second["response"]  # idempotent

    await with_webhook(certificates, check)


async def test_p2p_pod_links_to_its_downstream_connector_over_a_shared_socket(
    certificates: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    async def check(address: Endpoint, client: ssl.SSLContext) -> None:
        original = pod("engram-p2p-inline.yaml")
        _, answer = await post(address, client, admission(original))
        result = patched(original, answer)
        kubernetes_validate.validate(result, "1.30.0", strict=True)
        sidecar = result["spec"]["containers"][-1]
        env = env_of(sidecar)
        assert env["BUBU_HUB_ENDPOINT"] == "r1-enricher.demo.svc.cluster.local:50051"
        assert env["BUBU_GRPC_LOCAL_ENDPOINT"] == "unix:///var/run/bubu/connector.sock"
        assert env["BUBU_DEBUG"] == "true"  # BUBU_ override from the binding payload
        assert "OTHER" not in env  # not BUBU_ and not already set
        mounts = [c["volumeMounts"][0]["mountPath"] for c in result["spec"]["containers"]]
        assert mounts == ["/var/run/bubu", "/var/run/bubu"]

    await with_webhook(certificates, check)


async def test_pods_it_does_not_own_pass_and_bad_reviews_get_errors(
    certificates: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    async def check(address: Endpoint, client: ssl.SSLContext) -> None:
        status, answer = await post(address, client, admission(pod("plain.yaml")))
        assert (status, answer["response"]) == (200, {"uid": "u-1", "allowed": True})
        status, answer = await post(address, client, admission(pod("engram-hub.yaml"), "UPDATE"))
        assert "patch" not in answer["response"]
        status, answer = await post(address, client, b"{not json")
        assert status == 400
        assert "malformed AdmissionReview" in answer["error"]
        status, answer = await post(address, client, b"{}", path="/elsewhere")
        assert status == 404
        status, answer = await post(address, client, admission(pod("plain.yaml")))
        assert status == 200  # still serving after bad input

    await with_webhook(certificates, check)


def test_refusals_name_the_problem() -> None:
    foreign = pod("engram-hub.yaml")
    foreign["metadata"]["annotations"]["transport.bubustack.io/binding"] = "other/some-binding"
    answer = review(admission(foreign), CONFIG, LOOKUPS).body["response"]
    assert answer["allowed"] is False
    assert "cross-namespace" in answer["status"]["message"]
    unknown = pod("engram-hub.yaml")
    unknown["metadata"]["labels"]["bubustack.io/engram"] = "ghost"
    answer = review(admission(unknown), CONFIG, LOOKUPS).body["response"]
    assert answer["allowed"] is False
    assert "demo/ghost" in answer["status"]["message"]
    unbound = pod("engram-hub.yaml")
    del unbound["metadata"]["annotations"]["transport.bubustack.io/binding"]
    answer = review(admission(unbound), CONFIG, LOOKUPS).body["response"]
    assert answer["allowed"] is True
    assert "patch" not in answer
