"""Unit: which engram steps the hub delivers a step's packets to, through primitive steps."""

from __future__ import annotations

from bobravoz.runtime.hub import engram_targets
from bobravoz.runtime.story import parse_story
from bobravoz.runtime.topology import compute_topology

STORY = """
metadata: {name: p}
spec:
  pattern: realtime
  steps:
    - {name: src, ref: {name: e}}
    - {name: gate, type: condition, needs: [src]}
    - {name: fan, type: parallel, needs: [gate]}
    - {name: a, ref: {name: e}, needs: [fan]}
    - {name: b, ref: {name: e}, needs: [fan, src]}
    - {name: halt, type: stop, needs: [src]}
    - {name: after-stop, ref: {name: e}, needs: [halt]}
"""


def test_primitives_pass_through_or_end_the_path() -> None:
    topology = compute_topology(parse_story(STORY))
    assert engram_targets(topology, "src") == ("a", "b")
    assert engram_targets(topology, "a") == ()
    assert engram_targets(topology, "halt") == ("after-stop",)
