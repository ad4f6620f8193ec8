"""Smoke: ``make bench`` in its quick peak mode, hub, baseline relay and NATS, end to end; and
how the hop mode reads ``bobravoz up``'s summary."""

from __future__ import annotations

import importlib
import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path
from types import ModuleType

import pytest
from procs import REPO

from bobravoz.sdk.accounting import TransportLoss
from bobravoz.sdk.local_runner import Summary

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


@pytest.fixture
def bench(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(REPO))
    return importlib.import_module("loadtests.bench")


def _up_summary(*, delivered: int, primitives: bool, **loss: Counter[str]) -> str:
    """The closing block ``bobravoz up`` prints, rendered by its own Summary."""
    summary = Summary(
        sent=100,
        expected=100,
        delivered=delivered,
        latencies_ms=[1.0, 2.0, 3.0],
        story_accounting=primitives,
        loss=TransportLoss(**loss),
    )
    return summary.render()


def test_templated_hop_fails_on_template_errors_filtering_loss_or_a_plain_summary(
    bench: ModuleType,
) -> None:
    def problems(text: str, *, templated: bool = True) -> list[str]:
        summary = bench.hop_summary(text)
        assert summary is not None
        return list(bench.hop_problems(summary, 100, templated=templated))

    clean = _up_summary(delivered=100, primitives=True)
    assert problems(clean) == []
    assert bench.hop_summary(clean)["p50_ms"] == 2.0
    errors = _up_summary(
        delivered=97,
        primitives=True,
        template_errors=Counter({"missing_key": 3}),
        lost=Counter({"template_error": 3}),
    )
    assert problems(errors) == [
        "the sink received 97/100",
        "bobravoz up reported 3 lost",
        "3 template evaluations failed",
    ]
    filtered = _up_summary(delivered=100, primitives=True, filtered=Counter({"if_false": 2}))
    assert problems(filtered) == ["the Story filtered 2 (its `if` is always true)"]
    plain = _up_summary(delivered=100, primitives=False)
    assert problems(plain, templated=False) == []
    assert problems(plain) == ["bobravoz up did not account the run as a Story with primitives"]
    short = _up_summary(delivered=90, primitives=False)
    assert problems(short, templated=False) == [
        "the sink received 90/100",
        "bobravoz up reported 10 lost",
    ]
