"""Cost of one template evaluation, as the hub pays it per packet (not a test).

Prints microseconds per evaluation (best of several timeit repeats) for a routing condition
and a small ``runtime`` object. Run: ``.venv/bin/python -m bobravoz.loadtests.template_cost``
or ``.venv/bin/python loadtests/template_cost.py``.
"""

from __future__ import annotations

import timeit
from collections.abc import Callable
from typing import Any

from bobravoz.runtime.template import TemplateSyntaxError, compile_template, compile_value

DATA: dict[str, Any] = {
    "inputs": {"greeting": "hello", "limit": 3},
    "steps": {"transcribe": {"text": "good morning", "confidence": 0.93}},
    "packet": {
        "type": "speech.final",
        "count": 7,
        "text": "turn on the lights",
        "metadata": {"lang": "en", "storyrun-name": "demo"},
    },
}


def measure(label: str, evaluate: Callable[[], object], number: int = 20_000) -> float:
    """Best per-call time of ``evaluate`` in microseconds, printed with ``label``."""
    evaluate()
    best = min(timeit.repeat(evaluate, number=number, repeat=5)) / number * 1e6
    print(f"{label:<58} {best:7.2f} µs")
    return best


def main() -> None:
    """Measure the routing condition, a text template and a 2-key runtime object."""
    builtin_only = compile_template('{{ eq (index packet.metadata "lang") "en" }}')
    prompt = compile_template("Reply in {{ packet.metadata.lang }}: {{ steps.transcribe.text }}")
    measure('condition, builtins only: eq (index ...) "en"', lambda: builtin_only.condition(DATA))
    measure("text: two fields in a sentence", lambda: prompt.render(DATA))
    try:
        condition = compile_template('{{ eq (default "" packet.metadata.lang) "en" }}')
        runtime = compile_value(
            {
                "userPrompt": "{{ steps.transcribe.text }}",
                "language": '{{ default "en" packet.metadata.lang }}',
                "model": "small",
            },
            name="respond.runtime",
        )
    except TemplateSyntaxError as exc:
        print(f"Sprig functions not available ({exc}): skipping the rest")
        return
    print(f"condition -> {condition.condition(DATA)}; runtime -> {runtime.render(DATA)}")
    measure(
        'condition: eq (default "" packet.metadata.lang) "en"',
        lambda: condition.condition(DATA),
    )
    measure("render of the same template (text)", lambda: condition.render(DATA))
    measure("runtime object: 2 template keys + 1 static key", lambda: runtime.render(DATA))
    primitive_path()


#: The hop bench's templated sink step: one ``if`` and one ``runtime`` reading ``packet``.
_STORY = """
metadata: {name: cost, namespace: default}
spec:
  pattern: realtime
  steps:
    - {name: source, ref: {name: e}}
    - name: sink
      ref: {name: e}
      needs: [source]
      if: '{{ ne (default "" packet.metadata.drop) "yes" }}'
      runtime:
        seen: '{{ index packet.metadata "bobravoz.example/source" }}'
        n: '{{ len packet.metadata }}'
"""


def primitive_path() -> None:
    """The hub's whole per-packet work for such a step, against plain forwarding: the
    compiled scan, :func:`evaluate` (decode, templates, rewrite plan) and the one-pass
    rewrite-and-stamp, on the hop bench's 256-byte packet."""
    from bobravoz.protocol.gen.transport.v1 import BinaryFrame, DataPacket, ProcessRequest
    from bobravoz.protocol.scan import TargetStamp, scan_process, stamp_scanned
    from bobravoz.runtime.hub.primitives import RunState, StoryPlan, evaluate
    from bobravoz.runtime.story import parse_story
    from bobravoz.runtime.topology import streaming_topology

    state = RunState("default", "r", StoryPlan(streaming_topology(parse_story(_STORY))), float)
    raw = bytes(
        ProcessRequest(
            packet=DataPacket(
                metadata={"bobravoz.example/source": "source"},
                binary=BinaryFrame(payload=b"x" * 256, mime_type="application/octet-stream"),
            )
        )
    )
    stamp = TargetStamp(
        metadata_updates={"storyrun-name": "r", "storyrun-namespace": "default"},
        stream_id="default/r/sink",
    )

    def plain() -> bytes:
        _, start, end, envelope, _ = scan_process(raw, 1 << 20, ())
        return stamp_scanned(stamp, raw, start, end, envelope, 7)

    def primitives() -> bytes:
        _, start, end, _, _ = scan_process(raw, 1 << 20, ())
        (delivery,) = evaluate(state, "source", raw[start:end], heartbeat=False).deliveries
        return delivery.stamp(stamp, 7)

    base = measure("hub per packet, plain forwarding (scan + stamp)", plain)
    cost = measure("hub per packet, if + runtime (scan + evaluate + stamp)", primitives)
    print(f"{'primitive path / plain forwarding':<58} {cost / base:7.1f} x")


if __name__ == "__main__":
    main()
