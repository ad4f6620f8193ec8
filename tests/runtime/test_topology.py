"""Topology from Stories: the reference fixtures' routing (Go hub rule and the operator's
P2P/hub analysis), refusals with field paths, and routing invariants on random DAGs."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bobravoz.runtime.story import StoryError, load_story, parse_story
from bobravoz.runtime.topology import TopologyError, compute_topology, streaming_topology

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "stories"


def routing(name: str, text: str | None = None) -> tuple[dict[str, str], dict[str, list[str]]]:
    story = parse_story(text) if text is not None else load_story(FIXTURES / name)
    topology = compute_topology(story)
    modes = {node.id: node.mode for node in topology.steps}
    downstream = {
        node.id: [e.target for e in topology.downstream_of(node.id)] for node in topology.steps
    }
    return modes, downstream


def test_voice_pipeline() -> None:
    modes, downstream = routing("voice-pipeline.yaml")
    assert modes == {
        "ingress": "p2p",
        "transcribe": "hub",
        "respond": "hub",
        "synthesize": "hub",
        "playback": "hub",
    }
    assert downstream == {
        "ingress": ["transcribe"],
        "transcribe": ["respond"],
        "respond": ["synthesize"],
        "synthesize": ["playback"],
        "playback": [],
    }
    topology = compute_topology(load_story(FIXTURES / "voice-pipeline.yaml"))
    edge = topology.downstream_of("ingress")[0]
    assert edge.buffer.max_messages == 200
    assert edge.buffer.max_bytes == 4194304
    assert edge.buffer.drop_policy == "drop_oldest"


def test_fan_out_with_rules_and_fan_in() -> None:
    modes, downstream = routing("fanout-rules-fanin.yaml")
    assert set(modes.values()) == {"hub"}
    assert downstream["source"] == ["translate", "filter"]
    assert downstream["translate"] == ["archive"]
    assert downstream["filter"] == ["archive"]
    story = load_story(FIXTURES / "fanout-rules-fanin.yaml")
    routing_settings = compute_topology(story).downstream_of("source")[0].settings.routing
    assert routing_settings is not None
    assert (routing_settings.fan_out, routing_settings.max_downstreams) == ("parallel", 4)
    assert routing_settings.rules is not None
    assert [rule.name for rule in routing_settings.rules] == ["english-only", "drop-noise"]


def test_p2p_chain_and_its_variants() -> None:
    text = (FIXTURES / "p2p-chain.yaml").read_text()
    modes, _ = routing("p2p-chain.yaml")
    assert modes == {"producer": "p2p", "enricher": "p2p", "consumer": "hub"}
    forced = text.replace(
        "- {name: fast, transportRef: grpc-default}",
        "- {name: fast, transportRef: grpc-default, streaming: {routing: {mode: hub}}}",
    )
    assert set(routing("", forced)[0].values()) == {"hub"}
    templated = text.replace(
        "needs: [producer], transport: fast}",
        "needs: [producer], transport: fast, if: '{{ true }}'}",
    )
    assert routing("", templated)[0] == {"producer": "hub", "enricher": "hub", "consumer": "hub"}


def test_hook_primitive_hybrid_is_all_hub() -> None:
    modes, downstream = routing("hook-primitive-hybrid.yaml")
    assert set(modes.values()) == {"hub"}
    assert downstream["ingress"] == ["greet"]  # the transport filter: debounce has none
    topology = compute_topology(load_story(FIXTURES / "hook-primitive-hybrid.yaml"))
    assert topology.step("debounce").primitive == "sleep"
    assert [node.id for node in topology.streaming_steps()] == ["ingress", "greet", "summarize"]


def test_empty_needs_means_every_earlier_step() -> None:
    text = """
metadata: {name: s}
spec:
  pattern: realtime
  steps:
    - {name: a, ref: {name: e}}
    - {name: b, ref: {name: e}}
    - {name: c, ref: {name: e}}
"""
    _, downstream = routing("", text)
    assert downstream == {"a": ["b", "c"], "b": ["c"], "c": []}


def test_step_ids_are_used_when_set() -> None:
    text = """
metadata: {name: s}
spec:
  pattern: realtime
  steps:
    - {name: first, id: one, ref: {name: e}}
    - {name: second, id: two, needs: [first], ref: {name: e}}
"""
    _, downstream = routing("", text)
    assert downstream == {"one": ["two"], "two": []}


BASE = """
metadata: {name: s, namespace: demo}
spec:
  pattern: realtime
  transports: [{name: t, transportRef: grpc}]
  steps:
    - {name: a, ref: {name: e}, transport: t}
    - {name: b, ref: {name: e}, needs: [a], transport: t}
"""


@pytest.mark.parametrize(
    ("change", "path", "words"),
    [
        (("needs: [a]", "needs: [zzz]"), "$.spec.steps[1].needs[0]", "names no step"),
        (("needs: [a]", "needs: a"), "$.spec.steps[1].needs", "Expected `array`"),
        (
            ("transport: t}\n    - {name: b", "transport: missing}\n    - {name: b"),
            "$.spec.steps[0].transport",
            "not declared",
        ),
        (
            ("transports: [{name: t, transportRef: grpc}]", "transports: [{name: t}, {name: t}]"),
            "$.spec.transports[1].name",
            "duplicated",
        ),
        (
            ("{name: b, ref: {name: e}", "{name: a, ref: {name: e}"),
            "$.spec.steps[1].name",
            "name 'a' is used twice",
        ),
        (("needs: [a]", "needs: [b]"), "$.spec.steps[1].needs[0]", "'b' needs itself"),
        (
            ("{name: b, ref: {name: e}", "{name: b, type: wait"),
            "$.spec.steps[1].type",
            "batch stories",
        ),
        (("pattern: realtime", "pattern: sometimes"), "$.spec.pattern", "Invalid enum value"),
        (
            ("{name: a, ref: {name: e}, transport: t}", "{name: a, transport: t}"),
            "$.spec.steps[0]",
            "neither ref nor type",
        ),
    ],
)
def test_refusals_name_the_field(change: tuple[str, str], path: str, words: str) -> None:
    with pytest.raises(StoryError) as caught:
        parse_story(BASE.replace(*change), source="story.yaml")
    assert caught.value.path == path
    assert words in str(caught.value)
    assert str(caught.value).startswith("story.yaml: ")


def test_a_need_may_name_a_later_step() -> None:
    text = """
metadata: {name: s}
spec:
  pattern: realtime
  steps:
    - {name: source, ref: {name: e}}
    - {name: sink, ref: {name: e}, needs: [middle]}
    - {name: middle, ref: {name: e}, needs: [source]}
"""
    topology = compute_topology(parse_story(text))
    pairs = {(edge.source, edge.target) for edge in topology.edges}
    assert pairs == {("source", "middle"), ("middle", "sink")}
    assert topology.step("source").mode == "p2p"


def test_a_cycle_is_refused_with_its_path() -> None:
    text = BASE.replace(
        "- {name: a, ref: {name: e}, transport: t}",
        "- {name: a, ref: {name: e}, transport: t, needs: [b]}",
    )
    with pytest.raises(StoryError) as caught:
        parse_story(text, source="story.yaml")
    assert "cycle: a -> b -> a" in str(caught.value) or "cycle: b -> a -> b" in str(caught.value)
    assert caught.value.path.endswith(".needs")


def test_a_long_cycle_names_every_step() -> None:
    lines = [f"    - {{name: s{i}, ref: {{name: e}}, needs: [s{(i + 1) % 5}]}}" for i in range(5)]
    text = "metadata: {name: r}\nspec:\n  pattern: realtime\n  steps:\n" + "\n".join(lines)
    with pytest.raises(StoryError) as caught:
        parse_story(text)
    message = str(caught.value)
    cycle = message.split("cycle: ")[1].split(" -> ")
    assert cycle[0] == cycle[-1]
    assert sorted(cycle[:-1]) == [f"s{i}" for i in range(5)]


@settings(max_examples=150, deadline=None)
@given(st.integers(2, 7), st.data())
def test_any_cycle_is_found_and_real(size: int, data: st.DataObject) -> None:
    needs = [
        sorted(data.draw(st.sets(st.integers(0, size - 1).filter(lambda n, i=i: n != i))))
        for i in range(size)
    ]
    lines = [
        f"    - {{name: s{i}, ref: {{name: e}}, needs: [{', '.join(f's{n}' for n in need)}]}}"
        for i, need in enumerate(needs)
    ]
    text = "metadata: {name: r}\nspec:\n  pattern: realtime\n  steps:\n" + "\n".join(lines)
    upstream = {
        f"s{i}": {f"s{n}" for n in need} if need else {f"s{n}" for n in range(i)}
        for i, need in enumerate(needs)
    }
    try:
        parse_story(text)
    except StoryError as error:
        cycle = str(error).split("cycle: ")[1].split(" -> ")
        # each step of the printed cycle feeds the next one
        assert all(cycle[k] in upstream[cycle[k + 1]] for k in range(len(cycle) - 1))
    else:
        order: list[str] = []  # an acyclic graph has a topological order
        remaining = dict(upstream)
        while remaining:
            ready = [step for step, ups in remaining.items() if ups <= set(order)]
            assert ready, "parse_story accepted a cyclic graph"
            order.extend(sorted(ready))
            for step in ready:
                del remaining[step]


def test_batch_stories_are_not_streamed() -> None:
    with pytest.raises(TopologyError, match=r"\$\.spec\.pattern"):
        streaming_topology(parse_story(BASE.replace("realtime", "batch")))


def test_unknown_fields_are_ignored() -> None:
    story = parse_story(BASE.replace("pattern: realtime", "pattern: realtime\n  brandNew: 1"))
    assert story.spec.pattern == "realtime"


@st.composite
def dags(draw: st.DrawFn) -> tuple[int, list[list[int]]]:
    size = draw(st.integers(1, 7))
    needs = [
        sorted(draw(st.sets(st.integers(0, index - 1), max_size=index))) if index else []
        for index in range(size)
    ]
    return size, needs


@settings(max_examples=150, deadline=None)
@given(dags())
def test_routing_follows_the_go_hub_rule(dag: tuple[int, list[list[int]]]) -> None:
    size, needs = dag
    lines = [
        f"    - {{name: s{i}, ref: {{name: e}}, needs: [{', '.join(f's{n}' for n in need)}]}}"
        for i, need in enumerate(needs)
    ]
    text = "metadata: {name: r}\nspec:\n  pattern: realtime\n  steps:\n" + "\n".join(lines)
    topology = compute_topology(parse_story(text))
    for index in range(size):
        targets = [edge.target for edge in topology.downstream_of(f"s{index}")]
        expected = [
            f"s{later}"
            for later in range(index + 1, size)
            if not needs[later] or index in needs[later]
        ]
        assert targets == expected
        node = topology.step(f"s{index}")
        if node.mode == "p2p":
            assert len(targets) == 1


def test_bobravoz_topology_prints_each_steps_mode_and_reason(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from bobravoz.sdk.cli import main

    assert main(["topology", str(FIXTURES / "p2p-chain.yaml")]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: line for line in lines[1:]}
    assert rows["producer"].split()[1] == "p2p"
    assert "-> enricher" in rows["producer"]
    assert rows["consumer"].split()[1] == "hub"
    assert "terminal step (no downstream)" in rows["consumer"]
    assert main(["topology", str(FIXTURES / "voice-pipeline.yaml")]) == 0
    voice = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    assert "needs the hub" in voice["ingress"] or voice["ingress"].split()[1] == "p2p"
    assert "per-packet templating" in voice["respond"]


def test_bobravoz_topology_refuses_a_cyclic_story(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from bobravoz.sdk.cli import main

    path = tmp_path / "cyclic.yaml"
    path.write_text(
        BASE.replace(
            "- {name: a, ref: {name: e}, transport: t}",
            "- {name: a, ref: {name: e}, transport: t, needs: [b]}",
        )
    )
    assert main(["topology", str(path)]) == 2
    assert "cycle" in capsys.readouterr().err
