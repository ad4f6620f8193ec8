"""The deploy check renders and validates the real overlays and catches broken objects."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def load_check(root: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("deploy_check", root / "check.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_overlay_validates() -> None:
    check = load_check(DEPLOY)
    for overlay in ("dev", "production", "local-cluster"):
        assert check.check_overlay(DEPLOY / "overlays" / overlay) == []


def test_an_invalid_object_is_reported_with_its_path(tmp_path: Path) -> None:
    copy = tmp_path / "deploy"
    shutil.copytree(DEPLOY, copy)
    manager = copy / "base" / "manager.yaml"
    manager.write_text(manager.read_text().replace("replicas: 1", "replicas: one"))
    problems = load_check(copy).check_overlay(copy / "overlays" / "dev")
    assert len(problems) == 1
    assert "Deployment/bobravoz-manager: spec/replicas" in problems[0]


def test_the_engram_namespace_template_follows_its_namespace(tmp_path: Path) -> None:
    check = load_check(DEPLOY)
    assert check.check_overlay(DEPLOY / "components/cert-manager/engram-namespace") == []
    copy = tmp_path / "engram-namespace"
    shutil.copytree(DEPLOY / "components/cert-manager/engram-namespace", copy)
    kustomization = copy / "kustomization.yaml"
    kustomization.write_text(
        kustomization.read_text().replace("namespace: demo", "namespace: voice")
    )
    rendered = subprocess.run(
        ["kubectl", "kustomize", str(copy)], capture_output=True, text=True, check=True
    )
    certificate = yaml.safe_load(rendered.stdout)
    assert certificate["metadata"]["namespace"] == "voice"
    assert certificate["spec"]["uris"] == ["spiffe://cluster.local/ns/voice/sa/default"]
    assert certificate["spec"]["dnsNames"] == ["*.voice.svc", "*.voice.svc.cluster.local"]
    assert certificate["spec"]["secretName"] == "engram-tls"
    assert set(certificate["spec"]["usages"]) >= {"client auth", "server auth"}


def test_the_hub_certificate_and_its_mount_are_wired() -> None:
    check = load_check(DEPLOY)
    documents = rendered_overlay(DEPLOY / "overlays" / "production")
    hub = find(documents, "Certificate", "hub-tls")
    assert hub["metadata"]["namespace"] == "bobravoz-system"
    assert "bobravoz-grpc-hub.bobravoz-system.svc" in hub["spec"]["dnsNames"]
    assert "bobravoz-grpc-hub.bobravoz-system.svc.cluster.local" in hub["spec"]["dnsNames"]
    assert hub["spec"]["uris"] == ["spiffe://cluster.local/ns/bobravoz-system/sa/bobravoz-manager"]
    assert hub["spec"]["privateKey"]["rotationPolicy"] == "Always"
    assert hub["spec"]["issuerRef"] == {
        "group": "cert-manager.io",
        "kind": "ClusterIssuer",
        "name": "bobravoz-ca-issuer",
    }
    manager = find(documents, "Deployment", "bobravoz-manager")["spec"]["template"]["spec"]
    mounts = {m["name"]: m for m in manager["containers"][0]["volumeMounts"]}
    assert mounts["hub-tls"] == {
        "name": "hub-tls",
        "mountPath": "/var/run/hub-tls",
        "readOnly": True,
    }
    volumes = {v["name"]: v for v in manager["volumes"]}
    assert volumes["hub-tls"]["secret"]["secretName"] == "hub-tls"
    assert check.check_cert_manager(documents) == []


def test_a_broken_certificate_is_reported(tmp_path: Path) -> None:
    copy = tmp_path / "deploy"
    shutil.copytree(DEPLOY, copy)
    hub = copy / "components" / "cert-manager" / "certificate-hub.yaml"
    hub.write_text(
        hub.read_text()
        .replace("name: bobravoz-ca-issuer", "name: bobravoz-ca-isuer")
        .replace("- client auth", "- client-auth")
        .replace("/ns/bobravoz-system/", "/ns/demo/")
    )
    problems = load_check(copy).check_overlay(copy / "overlays" / "production")
    assert len(problems) == 3, problems
    assert all("Certificate/bobravoz-system/hub-tls" in p for p in problems)
    assert "ClusterIssuer bobravoz-ca-isuer, not rendered here" in problems[0]
    assert "unknown usages ['client-auth']" in problems[1]
    assert "spiffe://cluster.local/ns/demo/sa/bobravoz-manager must be" in problems[2]


def test_a_mounted_secret_nothing_writes_is_reported(tmp_path: Path) -> None:
    copy = tmp_path / "deploy"
    shutil.copytree(DEPLOY, copy)
    dev = copy / "overlays" / "dev" / "kustomization.yaml"
    dev.write_text(dev.read_text().replace("  - ../../components/cert-manager\n", ""))
    problems = load_check(copy).check_overlay(copy / "overlays" / "dev")
    assert len(problems) == 2, problems
    assert "mounts Secret bobravoz-system/bobravoz-webhook-tls" in problems[0]
    assert "mounts Secret bobravoz-system/hub-tls" in problems[1]


def test_issuer_and_certificate_rules() -> None:
    check = load_check(DEPLOY)
    documents = component_documents()
    hub = find(documents, "Certificate", "hub-tls")
    hub["spec"]["renewBefore"] = "2160h"  # not shorter than the duration
    hub["spec"]["privateKey"]["size"] = 255
    webhook = find(documents, "Certificate", "bobravoz-webhook-tls")
    webhook["spec"]["secretName"] = "hub-tls"  # two writers of one Secret
    webhook["spec"]["duration"] = "90 days"
    issuer = find(documents, "Issuer", "bobravoz-selfsigned")
    issuer["spec"]["ca"] = {"secretName": "x"}  # selfSigned and ca at once
    del find(documents, "ClusterIssuer", "bobravoz-ca-issuer")["spec"]["ca"]["secretName"]
    assert check.check_cert_manager(documents) == [
        "Issuer/cert-manager/bobravoz-selfsigned: needs exactly one of "
        "ca, selfSigned, acme, vault, venafi",
        "ClusterIssuer/bobravoz-ca-issuer: missing spec.ca.secretName",
        "Certificate/bobravoz-system/hub-tls: privateKey.size 255 for ECDSA",
        "Certificate/bobravoz-system/hub-tls: renewBefore is not shorter than duration",
        "Certificate/bobravoz-system/bobravoz-webhook-tls: duration '90 days' is not a "
        "duration (e.g. 2160h)",
        "Certificate/bobravoz-system/bobravoz-webhook-tls: Secret bobravoz-system/hub-tls is "
        "also written by Certificate/bobravoz-system/hub-tls",
    ]


def test_the_ca_secret_must_be_where_the_cluster_issuer_reads_it() -> None:
    check = load_check(DEPLOY)
    documents = component_documents()
    find(documents, "Certificate", "bobravoz-ca")["metadata"]["namespace"] = "bobravoz-system"
    find(documents, "Issuer", "bobravoz-selfsigned")["metadata"]["namespace"] = "bobravoz-system"
    assert check.check_cert_manager(documents) == [
        "ClusterIssuer/bobravoz-ca-issuer: CA Secret bobravoz-ca is written in "
        "bobravoz-system/bobravoz-ca, but a ClusterIssuer reads it from cert-manager"
    ]


def test_a_certificate_without_its_required_fields_is_reported() -> None:
    check = load_check(DEPLOY)
    documents = component_documents()
    del find(documents, "Certificate", "hub-tls")["spec"]["secretName"]
    del find(documents, "Certificate", "bobravoz-webhook-tls")["metadata"]["namespace"]
    assert check.check_documents("x", documents) == [
        "x: Certificate/hub-tls: missing spec.secretName",
        "x: Certificate/bobravoz-webhook-tls: missing metadata.namespace",
    ]


def rendered_overlay(path: Path) -> list[dict[str, Any]]:
    done = subprocess.run(
        ["kubectl", "kustomize", str(path)], capture_output=True, text=True, check=True
    )
    return [document for document in yaml.safe_load_all(done.stdout) if document]


def component_documents() -> list[dict[str, Any]]:
    folder = DEPLOY / "components" / "cert-manager"
    return [
        document
        for name in ("ca.yaml", "certificate-hub.yaml", "certificate-webhook.yaml")
        for document in yaml.safe_load_all((folder / name).read_text())
        if document
    ]


def find(documents: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(d for d in documents if d["kind"] == kind and d["metadata"]["name"] == name)
