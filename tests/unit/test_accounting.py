"""Unit: the packet accounting of ``bobravoz up`` and ``make loadtest`` keeps declared drops
apart from every other loss, so no lossless gate passes with real loss."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from bobravoz.runtime.metrics import TransportMetrics
from bobravoz.sdk.accounting import (
    Accounting,
    TransportLoss,
    exposition_samples,
    transport_loss,
    transport_loss_from_text,
    undeclared_loss,
)
from bobravoz.sdk.local_runner import Summary

REPO = Path(__file__).resolve().parents[2]

# A hub exposition under the metric contract: the dropped family carries policy drops only,
# everything else the hub could not deliver is in the lost family.
CONTRACT_HUB = """\
# HELP bobravoz_packets_dropped_total Packets dropped by a declared drop policy.
# TYPE bobravoz_packets_dropped_total counter
bobravoz_packets_dropped_total{component="hub",binding="default/r/sink",reason="drop_oldest"} 7
bobravoz_packets_dropped_total{component="hub",binding="default/r/alt",reason="drop_newest"} 2
# HELP bobravoz_packets_lost_total Packets the transport could not deliver.
# TYPE bobravoz_packets_lost_total counter
bobravoz_packets_lost_total{component="hub",binding="default/r/sink",reason="oversize"} 1
bobravoz_packets_lost_total{component="hub",binding="default/r/sink",reason="stream_broken"} 4
# HELP bobravoz_packets_rejected_total Packets refused for breaking the wire contract.
# TYPE bobravoz_packets_rejected_total counter
bobravoz_packets_rejected_total{component="hub",binding="default/r/src",reason="too_long"} 3
# HELP bobravoz_packets_in_flight Packets taken from a buffer, not yet written.
# TYPE bobravoz_packets_in_flight gauge
bobravoz_packets_in_flight{component="hub",binding="default/r/sink"} 5
# HELP bobravoz_buffer_depth Packets waiting in a binding's buffer.
# TYPE bobravoz_buffer_depth gauge
bobravoz_buffer_depth{component="hub",binding="default/r/sink"} 6
"""


def old_hub_exposition(dropped: dict[str, int], rejected: dict[str, int]) -> str:
    """What the current hub serves: its real collector, where the dropped family still carries
    broken streams and oversize packets, and there is no lost family."""
    registry = CollectorRegistry()
    metrics = TransportMetrics(registry, component="hub")
    counters = metrics.binding("default/local/sink")
    counters.dropped.update(dropped)
    counters.rejected.update(rejected)
    return generate_latest(registry).decode()


def test_a_stream_broken_drop_sample_is_loss_not_a_declared_drop() -> None:
    text = old_hub_exposition({"stream_broken": 3, "drop_oldest": 5}, {"too_long": 1})
    loss = transport_loss_from_text(text)
    assert loss.declared_drops == 5
    assert loss.lost == {"stream_broken": 3}
    assert loss.lost_counted == 3
    assert loss.rejected_total == 1


def test_every_non_policy_reason_of_the_dropped_family_is_loss() -> None:
    reasons = {
        "stream_broken": 1,
        "link_broken": 2,
        "engram_stream_broken": 3,
        "oversize": 4,
        "closed": 5,
        "control_error": 6,
    }
    loss = transport_loss_from_text(old_hub_exposition(reasons, {}))
    assert loss.declared_drops == 0
    assert loss.lost == reasons


def test_the_lost_family_is_loss_and_a_missing_one_is_zero() -> None:
    loss = transport_loss_from_text(CONTRACT_HUB)
    assert loss.dropped == {"drop_oldest": 7, "drop_newest": 2}
    assert loss.lost == {"oversize": 1, "stream_broken": 4}
    assert loss.rejected == {"too_long": 3}
    nothing = transport_loss_from_text(old_hub_exposition({}, {}))
    assert (nothing.declared_drops, nothing.lost_counted, nothing.rejected_total) == (0, 0, 0)


def test_scrapes_of_several_processes_add_up() -> None:
    total = TransportLoss()
    total.add(transport_loss_from_text(CONTRACT_HUB))
    connector = [
        ("bobravoz_packets_dropped_total", {"reason": "link_broken"}, 2.0),
        ("bobravoz_packets_lost_total", {"reason": "stream_broken"}, 1.0),
    ]
    total.add(transport_loss(connector))
    assert total.declared_drops == 9
    assert total.lost == {"oversize": 1, "stream_broken": 5, "link_broken": 2}


def test_lost_never_subtracts_counted_losses() -> None:
    assert undeclared_loss(expected=100, delivered=90, declared_drops=10) == 0
    assert undeclared_loss(expected=100, delivered=90, declared_drops=4) == 6
    # More delivered than expected (a late sink's count) is not negative loss.
    assert undeclared_loss(expected=10, delivered=12, declared_drops=0) == 0


def summary_from(text: str, *, expected: int, delivered: int) -> Summary:
    summary = Summary(sent=expected, expected=expected, delivered=delivered)
    summary.loss.add(transport_loss_from_text(text))
    return summary


def test_up_fails_when_a_broken_stream_lost_packets() -> None:
    # The old accounting called these 3 "dropped" and reported lost 0 with exit status 0.
    summary = summary_from(old_hub_exposition({"stream_broken": 3}, {}), expected=100, delivered=97)
    assert summary.dropped == 0
    assert summary.lost == 3
    assert summary.lost_counted == 3
    assert summary.exit_status == 1
    lines = summary.render().splitlines()
    assert "dropped    0 (by declared policy)" in lines
    assert "lost       3 (expected - delivered - declared drops)" in lines
    assert "  counted by the transport: 3 (stream_broken=3)" in lines


def test_up_passes_when_a_declared_policy_explains_every_missing_packet() -> None:
    summary = summary_from(old_hub_exposition({"drop_oldest": 10}, {}), expected=100, delivered=90)
    assert summary.dropped == 10
    assert summary.lost == 0
    assert summary.exit_status == 0
    lines = summary.render().splitlines()
    assert "dropped    10 (by declared policy)" in lines
    assert "lost       0 (expected - delivered - declared drops)" in lines
    assert not [line for line in lines if "counted by the transport" in line]


def test_up_reports_declared_drops_and_counted_losses_on_separate_lines() -> None:
    # 100 expected, 7 + 2 dropped by policy, 5 counted lost, 86 delivered: 5 lost.
    summary = summary_from(CONTRACT_HUB, expected=100, delivered=86)
    assert (summary.dropped, summary.lost, summary.rejected) == (9, 5, 3)
    assert summary.exit_status == 1
    lines = summary.render().splitlines()
    assert "dropped    9 (by declared policy)" in lines
    assert "rejected   3 (broke the wire contract)" in lines
    assert "lost       5 (expected - delivered - declared drops)" in lines
    assert "  counted by the transport: 5 (stream_broken=4, oversize=1)" in lines


def test_up_loss_nobody_counted_still_fails() -> None:
    summary = summary_from(old_hub_exposition({}, {}), expected=50, delivered=48)
    assert summary.lost == 2
    assert summary.exit_status == 1
    assert not [line for line in summary.render().splitlines() if "counted" in line]


def test_up_fails_when_the_transport_counted_a_loss_the_sinks_did_not_notice() -> None:
    # Every packet arrived (a cutover delivered a batch twice), yet the hub counted one lost:
    # loss no policy declared is reported and fails the run even when the totals match.
    summary = summary_from(CONTRACT_HUB, expected=100, delivered=100 - 9)
    assert summary.lost == 0
    assert summary.lost_counted == 5
    assert summary.exit_status == 1


@pytest.fixture
def loadtest_run(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(REPO))
    return importlib.import_module("loadtests.run")


def test_loadtest_counts_a_stream_broken_drop_as_loss_and_fails_lossless(
    loadtest_run: ModuleType,
) -> None:
    hub = exposition_samples(old_hub_exposition({"stream_broken": 4}, {}))
    connector = exposition_samples(old_hub_exposition({"link_broken": 1}, {}))
    result = loadtest_run.accounting(100.0, 195.0, 2, [hub, connector])
    assert isinstance(result, Accounting)
    assert (result.expected, result.delivered, result.dropped, result.lost) == (200, 195, 0, 5)
    assert result.lines() == [
        "dropped 0 (by declared policy)",
        "rejected 0 (broke the wire contract)",
        "lost 5 (expected - delivered - declared drops)",
        "  counted by the transport: 5 (stream_broken=4, link_broken=1)",
    ]
    problems = loadtest_run.threshold_problems(
        {"lossless": True}, result, failure_ratio=0.0, p99_ms=1.0
    )
    assert problems == [
        "lost 5 packets no declared policy dropped on a lossless edge "
        "(stream_broken=4, link_broken=1)"
    ]


def test_loadtest_lossless_holds_when_declared_drops_explain_the_gap(
    loadtest_run: ModuleType,
) -> None:
    hub = exposition_samples(old_hub_exposition({"drop_newest": 5}, {}))
    result = loadtest_run.accounting(100.0, 95.0, 1, [hub])
    assert (result.dropped, result.lost) == (5, 0)
    assert (
        loadtest_run.threshold_problems({"lossless": True}, result, failure_ratio=0.0, p99_ms=1.0)
        == []
    )


def test_loadtest_lossless_fails_on_loss_nobody_counted(loadtest_run: ModuleType) -> None:
    hub = exposition_samples(old_hub_exposition({}, {}))
    result = loadtest_run.accounting(100.0, 99.0, 1, [hub])
    assert result.lost == 1
    assert result.lines()[-1] == "lost 1 (expected - delivered - declared drops)"
    problems = loadtest_run.threshold_problems(
        {"lossless": True}, result, failure_ratio=0.0, p99_ms=1.0
    )
    assert problems == [
        "lost 1 packets no declared policy dropped on a lossless edge "
        "(none counted by the transport)"
    ]
