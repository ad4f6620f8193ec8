"""Smoke: the steady-state locust scenario, shortened, against a real hub and connector."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from procs import REPO

pytestmark = pytest.mark.integration


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folder`` with its size and modification time (empty if absent)."""
    if not folder.is_dir():
        return {}
    return {
        str(path.relative_to(folder)): (path.stat().st_size, path.stat().st_mtime_ns)
        for path in folder.rglob("*")
        if path.is_file()
    }


def test_steady_state_smoke_passes_its_thresholds(tmp_path: Path) -> None:
    in_repo = REPO / "loadtests" / "results"
    before = snapshot(in_repo)
    results = tmp_path / "results"
    environ = {k: v for k, v in os.environ.items() if k != "BOBRAVOZ_LOADTEST_RESULTS"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "loadtests.run",
            "steady",
            "--duration",
            "8",
            "--results-dir",
            str(results),
            # Latency is reported, not asserted: a test must not depend on this machine's speed.
            "--no-latency-threshold",
        ],
        cwd=REPO,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert "PASS" in lines
    assert "lost 0 (expected - delivered - declared drops)" in lines
    assert not [line for line in lines if "counted by the transport" in line]
    assert (results / "steady_stats.csv").stat().st_size > 0
    assert (results / "steady.html").stat().st_size > 0
    assert f"report: {results / 'steady'}.html, {results / 'steady'}_stats.csv" in lines
    assert snapshot(in_repo) == before  # nothing written into the repository's results
