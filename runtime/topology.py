"""A Story's streaming graph: steps, edges, and each edge's mode and settings. Pure.

Routing follows the Go hub: a packet from step X goes, in Story order, to every step that
needs X (a ``needs`` may name a step declared later; the graph is acyclic); a step with an
empty ``needs`` depends on every earlier step; when X names a
``transport``, only steps on that same transport are candidates. The per-step mode follows
the BubuStack operator's topology analysis (reference notes §2.5): X is ``p2p`` iff neither X
nor its single downstream needs the hub (``if`` or ``runtime``), X has exactly one downstream,
and every upstream of X is itself ``p2p`` with X as its only downstream. Like the operator,
primitives are not special-cased. One deliberate difference: the operator reads ``needs``
literally, so a step feeding a later step with empty ``needs`` could come out ``p2p`` there
although the hub also routes its packets to that step; here it stays ``hub``.
``routing.mode`` in the merged settings forces ``hub``; a ``p2p`` request is honoured only
where the rule already gives p2p.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal, final

import msgspec

from bobravoz.runtime.settings import (
    ResolvedBuffer,
    StreamingSettings,
    merge_settings,
    resolve_buffer,
)
from bobravoz.runtime.story import Step, Story, upstream_steps

EdgeMode = Literal["hub", "p2p"]


@final
class TopologyError(ValueError):
    """The Story cannot be wired as asked (the message names the step)."""


@final
class StepNode(msgspec.Struct, frozen=True, kw_only=True):
    """One step as the transport sees it."""

    id: str
    name: str
    index: int
    engram: str | None = None
    primitive: str | None = None
    transport: str | None = None
    needs: tuple[str, ...] = ()
    mode: EdgeMode = "hub"
    mode_reason: str = ""


@final
class Edge(msgspec.Struct, frozen=True, kw_only=True):
    """A stream from ``source`` to ``target`` (step ids) and how it is carried."""

    source: str
    target: str
    mode: EdgeMode
    mode_reason: str
    transport: str | None
    settings: StreamingSettings
    buffer: ResolvedBuffer


@final
class Topology(msgspec.Struct, frozen=True, kw_only=True):
    """The graph of one Story: steps in Story order and every edge between them."""

    story_name: str
    namespace: str
    steps: tuple[StepNode, ...]
    edges: tuple[Edge, ...]
    #: The Story itself, for the primitives the hub evaluates (None: forward only).
    story: Story | None = None
    #: The StoryRun's ``spec.inputs`` (the templates' ``inputs`` root).
    inputs: dict[str, Any] = {}
    #: Engram steps whose Engram runs in ``job`` mode: a packet for one is a run request
    #: (a batch StepRun per packet, "hybrid"), not a stream.
    job_steps: frozenset[str] = frozenset()

    def has_step(self, step_id: str) -> bool:
        """Whether ``step_id`` is a step of this Story."""
        return any(node.id == step_id for node in self.steps)

    def step(self, step_id: str) -> StepNode:
        """The step ``step_id``; KeyError naming it when absent."""
        for node in self.steps:
            if node.id == step_id:
                return node
        raise KeyError(f"step {step_id!r} is not in Story {self.story_name!r}")

    def downstream_of(self, step_id: str) -> tuple[Edge, ...]:
        """Edges leaving ``step_id``, in Story order of their targets."""
        return tuple(edge for edge in self.edges if edge.source == step_id)

    def upstream_of(self, step_id: str) -> tuple[Edge, ...]:
        """Edges arriving at ``step_id``, in Story order of their sources."""
        return tuple(edge for edge in self.edges if edge.target == step_id)

    def streaming_steps(self) -> tuple[StepNode, ...]:
        """The engram steps: each gets a connector and a running engram."""
        return tuple(node for node in self.steps if node.engram is not None)


def _needs_hub(step: Step) -> bool:
    return bool((step.if_ or "").strip()) or step.runtime not in (None, "", {}, [])


def _step_settings(
    story: Story, step: Step, defaults: Mapping[str, StreamingSettings]
) -> StreamingSettings:
    if step.transport is None:
        return StreamingSettings()
    declared = next(t for t in story.spec.transports if t.name == step.transport)
    base = defaults.get(declared.transport_ref or "", None)
    return merge_settings(base, declared.streaming)


def compute_topology(
    story: Story,
    *,
    transport_defaults: Mapping[str, StreamingSettings] | None = None,
    inputs: Mapping[str, Any] | None = None,
    job_steps: Iterable[str] = (),
) -> Topology:
    """The topology of ``story`` (checked by :func:`~bobravoz.runtime.story.parse_story`).

    ``transport_defaults`` maps a Transport's name to its ``spec.streaming`` defaults;
    ``inputs`` are the StoryRun's; ``job_steps`` the engram steps whose Engram is a ``job``.
    """
    defaults = transport_defaults or {}
    steps = story.spec.steps
    upstream = upstream_steps(story)
    targets: dict[str, list[str]] = {step.step_id: [] for step in steps}
    for step in steps:
        for other in steps:
            if step.step_id not in upstream[other.step_id]:
                continue
            if step.transport is not None and other.transport != step.transport:
                continue
            targets[step.step_id].append(other.step_id)
    literal_downstream = {
        step.step_id: [s.step_id for s in steps if step.name in s.needs or step.step_id in s.needs]
        for step in steps
    }
    by_id = {step.step_id: step for step in steps}
    settings = {step.step_id: _step_settings(story, step, defaults) for step in steps}
    modes: dict[str, tuple[EdgeMode, str]] = {}
    for step in steps:
        mode = _mode(step, by_id, literal_downstream, modes, settings[step.step_id])
        if mode[0] == "p2p" and len(targets[step.step_id]) != 1:
            # The operator's analysis reads `needs` literally, the hub's routing does not:
            # a later step with empty `needs` also receives X's packets, so X stays on the hub.
            mode = ("hub", "a later step with empty needs also receives its packets")
        modes[step.step_id] = mode
    nodes = tuple(
        StepNode(
            id=step.step_id,
            name=step.name,
            index=index,
            engram=step.ref.name if step.is_engram and step.ref is not None else None,
            primitive=step.type,
            transport=step.transport,
            needs=upstream[step.step_id],
            mode=modes[step.step_id][0],
            mode_reason=modes[step.step_id][1],
        )
        for index, step in enumerate(steps)
    )
    edges = tuple(
        Edge(
            source=step.step_id,
            target=target,
            mode=modes[step.step_id][0],
            mode_reason=modes[step.step_id][1],
            transport=step.transport,
            settings=settings[step.step_id],
            buffer=resolve_buffer(settings[step.step_id]),
        )
        for step in steps
        for target in targets[step.step_id]
    )
    return Topology(
        story_name=story.metadata.name,
        namespace=story.metadata.namespace,
        steps=nodes,
        edges=edges,
        story=story,
        inputs=dict(inputs or {}),
        job_steps=frozenset(job_steps),
    )


def _mode(
    step: Step,
    by_id: Mapping[str, Step],
    downstream: Mapping[str, list[str]],
    decided: Mapping[str, tuple[EdgeMode, str]],
    settings: StreamingSettings,
) -> tuple[EdgeMode, str]:
    forced = settings.routing.mode if settings.routing else None
    if forced == "hub":
        return "hub", "routing.mode forces hub"
    reason = _p2p_obstacle(step, by_id, downstream, decided)
    if reason is not None:
        if forced == "p2p":
            return "hub", f"routing.mode p2p not possible: {reason}"
        return "hub", reason
    return "p2p", "single downstream, no per-packet templating"


def _p2p_obstacle(
    step: Step,
    by_id: Mapping[str, Step],
    downstream: Mapping[str, list[str]],
    decided: Mapping[str, tuple[EdgeMode, str]],
) -> str | None:
    if _needs_hub(step):
        return "the step has per-packet templating (if/runtime)"
    targets = downstream[step.step_id]
    if not targets:
        return "terminal step (no downstream)"
    if len(targets) > 1:
        return f"fan-out to {len(targets)} steps"
    target = by_id[targets[0]]
    if _needs_hub(target):
        return f"downstream step {target.name!r} needs the hub"
    for upstream_id, outs in downstream.items():
        if step.step_id in outs and (
            decided.get(upstream_id, ("hub", ""))[0] != "p2p" or len(outs) != 1
        ):
            return f"fan-in from hub-routed step {by_id[upstream_id].name!r}"
    return None


def streaming_topology(
    story: Story, *, inputs: Mapping[str, Any] | None = None, job_steps: Iterable[str] = ()
) -> Topology:
    """:func:`compute_topology` for a Story the transport serves: ``pattern: realtime`` only."""
    return streaming_topology_with(story, inputs=inputs, job_steps=job_steps)


def streaming_topology_with(
    story: Story,
    *,
    transport_defaults: Mapping[str, StreamingSettings] | None = None,
    inputs: Mapping[str, Any] | None = None,
    job_steps: Iterable[str] = (),
) -> Topology:
    """:func:`streaming_topology` with the Transports' streaming defaults by name."""
    if story.spec.pattern != "realtime":
        raise TopologyError(
            f"Story {story.metadata.name!r} has pattern {story.spec.pattern!r} at $.spec.pattern; "
            "bobravoz streams realtime Stories only"
        )
    return compute_topology(
        story, transport_defaults=transport_defaults, inputs=inputs, job_steps=job_steps
    )


def describe_topology(topology: Topology) -> str:
    """One line per step, in Story order: its id, what it runs (engram or primitive), its
    routing mode with the reason (the P2P rule of the reference notes §2.5) and the steps
    its packets go to."""
    width = max(len(node.id) for node in topology.steps)
    lines = [f"Story {topology.story_name} (namespace {topology.namespace})"]
    for node in topology.steps:
        runs = f"engram {node.engram}" if node.engram else f"{node.primitive} primitive"
        targets = ", ".join(edge.target for edge in topology.downstream_of(node.id)) or "-"
        lines.append(
            f"  {node.id:<{width}}  {node.mode:<3}  {runs}; -> {targets}  ({node.mode_reason})"
        )
    return "\n".join(lines) + "\n"
