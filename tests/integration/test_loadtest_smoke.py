"""Smoke: the steady-state locust scenario, shortened, against a real hub and connector."""

from __future__ import annotations

import subprocess
import sys

import pytest
from procs import REPO

pytestmark = pytest.mark.integration


def test_steady_state_smoke_passes_its_thresholds() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "loadtests.run", "steady", "--duration", "8"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "PASS" in done.stdout
    lines = done.stdout.splitlines()
    assert "lost 0 (expected - delivered - declared drops)" in lines
    assert not [line for line in lines if "counted by the transport" in line]
    results = REPO / "loadtests" / "results"
    assert (results / "steady_stats.csv").stat().st_size > 0
    assert (results / "steady.html").stat().st_size > 0
