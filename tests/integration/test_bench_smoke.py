"""Smoke: ``make bench`` in its quick peak mode, hub, baseline relay and NATS, end to end."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from procs import REPO

pytestmark = pytest.mark.integration


def test_quick_peak_bench_prints_ratios_and_receives_every_packet(tmp_path: Path) -> None:
    results = tmp_path / "results"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "loadtests.bench",
            "--quick",
            "--modes",
            "peak,nats",
            "--count",
            "10000",
            "--results-dir",
            str(results),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    for kind in ("baseline", "hub", "nats"):
        assert [line for line in lines if re.match(rf"round 1 {kind} +peak .*\(10000/10000 ", line)]
    header = next(line for line in lines if "hub/base" in line)
    assert header.split() == ["baseline", "hub", "hub/base", "nats"]
    rate = next(line for line in lines if line.strip().startswith("packets/s"))
    baseline, hub, ratio, nats = rate.split()[1:]
    assert float(ratio) == pytest.approx(
        float(hub.replace(",", "")) / float(baseline.replace(",", "")), abs=0.01
    )
    assert float(nats.replace(",", "")) > 0
    assert [line for line in lines if line.strip().startswith("consumer CPU us/packet")]
    assert not [line for line in lines if line.startswith("FAILED")]
    saved = json.loads((results / "bench.json").read_text())
    for kind in ("baseline", "hub", "nats"):
        (run,) = saved["rounds"]["peak"][kind]
        assert run["consumer"]["received"] == run["expected"] == 10000
        assert run["producer"]["sent"] == 10000
