"""The deploy check renders and validates the real overlays and catches broken objects."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from types import ModuleType

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
