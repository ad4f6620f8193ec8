"""Unit: ``bobravoz up``'s summary for a Story whose primitives decide what reaches which step
(filtered by the Story is not loss; the verdict is the transport's lost count), and
``bobravoz up --inputs``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from bobravoz.runtime.story import parse_story
from bobravoz.sdk.accounting import (
    Accounting,
    TransportLoss,
    story_has_primitives,
    story_lines,
    transport_loss_from_text,
)
from bobravoz.sdk.cli import build_parser
from bobravoz.sdk.local_runner import (
    Child,
    Summary,
    UpOptions,
    _inputs_env,
    _read_lines,
    describe_report,
)

FILTERED = """\
# HELP bobravoz_packets_filtered_total Packets a Story primitive decided not to deliver.
# TYPE bobravoz_packets_filtered_total counter
bobravoz_packets_filtered_total{step="greet",reason="if_false"} 117
bobravoz_packets_filtered_total{step="respond",reason="cancelled"} 2
bobravoz_packets_filtered_total{step="archive",reason="rule_denied"} 12
bobravoz_packets_filtered_total{step="archive",reason="joined"} 16
bobravoz_packets_filtered_total{step="translate",reason="not_allowed"} 20
"""


def lost_family(count: int) -> str:
    return (
        "# TYPE bobravoz_packets_lost_total counter\n"
        'bobravoz_packets_lost_total{component="hub",binding="default/r/archive",'
        f'reason="join_expired"}} {count}\n'
    )


def story_summary(text: str, *, sent: int, delivered: int) -> Summary:
    summary = Summary(sent=sent, expected=sent * 2, delivered=delivered, story_accounting=True)
    summary.loss.add(transport_loss_from_text(text))
    return summary


def test_the_filtered_family_is_counted_by_reason_and_is_not_loss() -> None:
    loss = transport_loss_from_text(FILTERED + lost_family(0))
    assert loss.filtered == {
        "if_false": 117,
        "cancelled": 2,
        "rule_denied": 12,
        "joined": 16,
        "not_allowed": 20,
    }
    assert loss.filtered_total == 167
    assert (loss.lost_counted, loss.declared_drops, loss.rejected_total) == (0, 0, 0)
    total = TransportLoss()
    total.add(loss)
    total.add(transport_loss_from_text(FILTERED))
    assert total.filtered["if_false"] == 234


def test_story_lines_show_what_the_story_filtered_and_the_counted_loss() -> None:
    assert story_lines(transport_loss_from_text(FILTERED), width=10) == [
        "filtered   167 by the Story "
        "(if_false=117, not_allowed=20, joined=16, rule_denied=12, cancelled=2)",
        "dropped    0 (by declared policy)",
        "rejected   0 (broke the wire contract)",
        "lost       0 (counted by the transport)",
    ]
    errors = (
        "# TYPE bobravoz_template_errors_total counter\n"
        'bobravoz_template_errors_total{component="hub",binding="b",reason="type_error"} 2\n'
    )
    assert story_lines(transport_loss_from_text(errors))[1] == (
        "templates 2 evaluations failed, those packets not delivered (type_error=2)"
    )
    lines = story_lines(transport_loss_from_text(lost_family(3)))
    assert lines[0] == "filtered 0 by the Story"
    assert lines[-2:] == ["lost 3 (counted by the transport)", "  by reason: join_expired=3"]


def test_a_story_run_that_delivers_less_than_sent_is_lossless_when_nothing_was_lost() -> None:
    summary = story_summary(FILTERED + lost_family(0), sent=40, delivered=32)
    assert summary.lost == 0
    assert summary.exit_status == 0
    lines = summary.render().splitlines()
    assert "delivered  32 at the sinks (the Story decides what reaches them)" in lines
    assert "lost       0 (counted by the transport)" in lines
    assert not [line for line in lines if "expected" in line]


def test_a_story_run_fails_on_counted_loss_or_an_engram_that_did_not_finish() -> None:
    lossy = story_summary(FILTERED + lost_family(3), sent=40, delivered=32)
    assert (lossy.lost, lossy.exit_status) == (3, 1)
    unfinished = story_summary(FILTERED, sent=40, delivered=32)
    unfinished.failed.append("archive (did not finish)")
    assert unfinished.exit_status == 1


def test_what_an_engram_sdk_lost_before_its_handler_is_loss_and_is_shown_by_step() -> None:
    summary = story_summary(FILTERED + lost_family(0), sent=40, delivered=32)
    summary.engram_losses["sink"] = {"chunk_set_incomplete": 1, "undecodable": 2}
    assert (summary.engram_lost, summary.lost, summary.exit_status) == (3, 3, 1)
    assert (
        "engram     sink lost 3 in its SDK: chunk_set_incomplete=1, undecodable=2"
        in summary.render().splitlines()
    )
    # Without primitives the expected count already holds it; the run fails either way.
    plain = Summary(sent=2, expected=2, delivered=2)
    plain.engram_losses["sink"] = {"undecodable": 1}
    assert plain.exit_status == 1


async def test_a_losses_line_is_kept_apart_from_the_engram_reports() -> None:
    lines = [
        {"event": "ready", "step": "sink"},
        {"event": "summary", "step": "sink", "role": "sink", "received": 1},
        {"event": "losses", "step": "sink", "lost": 1, "reasons": {"chunk_set_incomplete": 1}},
    ]
    text = "".join(json.dumps(line) + "\n" for line in lines).encode()
    process = await trio.lowlevel.open_process(
        [sys.executable, "-c", f"import sys; sys.stdout.buffer.write({text!r})"],
        stdout=subprocess.PIPE,
    )
    child = Child("sink", "engram", process)
    await _read_lines(child, None)  # until the process closed its stdout
    assert await process.wait() == 0
    assert child.last["event"] == "summary"
    assert child.losses == {"chunk_set_incomplete": 1}


def test_a_run_cut_by_duration_is_judged_by_counted_loss_and_says_its_counts_are_partial() -> None:
    # Packets in flight when --duration stops every process, and progress reports that lag,
    # make expected - delivered meaningless either way (here 98 short).
    cut = Summary(sent=1005, expected=1005, delivered=907, cut="--duration 5s")
    assert (cut.lost, cut.exit_status) == (0, 0)
    lines = cut.render().splitlines()
    assert "delivered  907 (expected 1005; partial: the run was cut)" in lines
    assert "lost       0 (counted by the transport and the SDKs)" in lines
    assert any(line.startswith("cut        --duration 5s ended the run") for line in lines)
    # What was counted lost still fails it.
    cut.loss.add(transport_loss_from_text(lost_family(2)))
    cut.engram_losses["source"] = {"unsent": 3}
    assert (cut.lost, cut.exit_status) == (5, 1)
    # Not cut: the same shortfall is loss.
    whole = Summary(sent=1005, expected=1005, delivered=907)
    assert (whole.lost, whole.exit_status) == (98, 1)
    assert not [line for line in whole.render().splitlines() if line.startswith("cut")]


def test_a_run_whose_sources_were_stopped_early_is_judged_on_complete_counts() -> None:
    # --duration asked the sources to stop and every engram finished: nothing is partial,
    # so a shortfall at the sinks is loss again.
    stopped = Summary(sent=402, expected=402, delivered=402, stopped="--duration 4s")
    assert (stopped.lost, stopped.exit_status) == (0, 0)
    lines = stopped.render().splitlines()
    assert "delivered  402 (expected 402)" in lines
    assert any(
        line.startswith("stopped    --duration 4s asked the sources to stop") for line in lines
    )
    assert not [line for line in lines if line.startswith("cut")]
    short = Summary(sent=402, expected=402, delivered=400, stopped="--duration 4s")
    assert (short.lost, short.exit_status) == (2, 1)


def test_without_primitives_the_expected_count_still_decides() -> None:
    summary = Summary(sent=40, expected=80, delivered=32)
    summary.loss.add(transport_loss_from_text(FILTERED))
    assert summary.lost == 48
    assert summary.exit_status == 1
    # A filtered count is shown even then, apart from the loss.
    lines = Accounting(expected=80, delivered=32, loss=summary.loss).lines()
    assert lines[0].startswith("filtered 167 by the Story")


def test_step_lines_describe_each_engram_report() -> None:
    summary = story_summary(FILTERED, sent=110, delivered=204)
    summary.steps = {
        "ingress": {"event": "summary", "step": "ingress", "role": "source", "sent": 110},
        "playback": {
            "event": "summary",
            "received": 204,
            "texts": ["Hello!", "Hi bob"],
            "latencies_ms": [1.0, 2.0],
            "seconds": 3.5,
        },
    }
    lines = summary.render().splitlines()
    assert "step       ingress: sent=110" in lines
    assert 'step       playback: received=204 texts=["Hello!", "Hi bob"]' in lines
    assert describe_report({"langs": {"en": 20}, "ok": True, "many": list("abcdefghij")}) == (
        'langs={"en": 20} ok=true'
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("spec: {pattern: realtime, steps: [{name: a, ref: {name: a}}]}", False),
        ("spec: {pattern: realtime, steps: [{name: a, ref: {name: a}, if: '{{ true }}'}]}", True),
        ("spec: {pattern: realtime, steps: [{name: a, ref: {name: a}, runtime: {x: y}}]}", True),
        ("spec: {pattern: realtime, steps: [{name: a, type: sleep}]}", True),
        ("spec: {pattern: realtime, steps: [{name: a, type: parallel}]}", False),
        (
            "spec: {pattern: realtime, transports: [{name: t, streaming: {fanIn: {mode: all}}}],"
            " steps: [{name: a, ref: {name: a}}]}",
            True,
        ),
        (
            "spec: {pattern: realtime, transports: [{name: t, streaming: {routing: {rules: "
            "[{name: r, when: x, action: deny}]}}}], steps: [{name: a, ref: {name: a}}]}",
            True,
        ),
    ],
)
def test_story_has_primitives(text: str, expected: bool) -> None:
    story = parse_story("metadata: {name: s, namespace: default}\n" + text)
    assert story_has_primitives(story) is expected


def test_up_inputs_must_be_a_json_object_and_reach_the_hub(
    capsys: pytest.CaptureFixture[str],
) -> None:
    parser = build_parser()
    args = parser.parse_args(["up", "story.yaml", "--inputs", '{"persona": "brief"}'])
    assert args.inputs == '{"persona": "brief"}'
    options = UpOptions(story=Path("story.yaml"), inputs=args.inputs)
    assert _inputs_env(options) == {"BOBRAVOZ_STORYRUN_INPUTS": '{"persona": "brief"}'}
    assert _inputs_env(UpOptions(story=Path("story.yaml"))) == {}
    for bad in ("[1, 2]", "{not json"):
        with pytest.raises(SystemExit):
            parser.parse_args(["up", "story.yaml", "--inputs", bad])
    assert "--inputs" in capsys.readouterr().err
