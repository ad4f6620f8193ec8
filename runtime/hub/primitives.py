"""Story primitives on live packets: what the hub decides for one packet, before stamping.

A :class:`StoryPlan` is compiled once per topology (templates parsed once). For a packet
from step X it walks X's compiled :class:`Route` list (one per engram target reached,
through primitive steps) and answers with :class:`Outcome`: the rewritten packets to hand
to each target, now or after a ``sleep``, and what was decided not to be delivered, by
reason. Per-StoryRun state (latest step outputs, join caches, cancelPrevious cycles, hooks
sent) lives in :class:`RunState`, owned by the hub's task like every other hub state.

The rules follow the Go hub (reference notes A4-A7, A11, A13, A17) where they are known:

- ``condition`` and ``parallel`` pass packets through; ``sleep`` delays them by
  ``with.duration`` (or ``with.for``); ``stop`` ends the path (filtered ``stop``);
  ``executeStory``, and a packet for a ``job``-mode engram step (the topology's
  ``job_steps``), are reported as run requests (counted, logged as a JSON event);
- an ``if`` that mentions neither ``packet`` nor ``steps`` is static: evaluated once per
  StoryRun; a runtime ``if`` is evaluated per packet; heartbeats bypass runtime ``if`` and
  routing rules;
- routing rules of X's transport: any matching ``deny`` rule that applies to the target
  blocks the packet (``rule_denied``); if ``allow`` rules apply to it, one must match
  (``not_allowed``);
- a target with more than one ``needs`` joins packets carrying ``bubu.join.key`` (fanIn);
- the target's ``runtime`` is rendered per packet and replaces the packet's ``inputs``;
- X's transport ``partitioning`` sets ``envelope.partition``;
- ``spec.concurrency.mode: cancelPrevious``: a new packet from X (and the same participant,
  with scope ``participant``) cancels what an earlier one still had waiting in a ``sleep``
  (filtered ``cancelled``).

A template that fails for one packet withholds that packet from that target only (counted
``template_errors`` by reason and lost as ``template_error``); the binding keeps running.
"""

from __future__ import annotations

import collections
import datetime
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, final

from bobravoz.protocol.packets import (
    PacketParts,
    parse_envelope,
    read_parts,
    rewrite_packet,
)
from bobravoz.protocol.scan import TargetStamp, packet_parts, restamp, stamp_rewritten
from bobravoz.protocol.structs import decode_struct, encode_struct
from bobravoz.protocol.wire import (
    PacketLayout,
    WireFormatError,
    encode_len_field,
    encode_string_field,
)
from bobravoz.runtime.envconfig import parse_duration
from bobravoz.runtime.joins import JoinCache, Joined, JoinPolicy
from bobravoz.runtime.partitioning import PartitionPolicy, choose_partition
from bobravoz.runtime.settings import StreamingSettings
from bobravoz.runtime.story import Step
from bobravoz.runtime.template import (
    CompiledValue,
    Template,
    TemplateError,
    compile_template,
    compile_value,
)
from bobravoz.runtime.topology import Topology

log = logging.getLogger(__name__)

_DATA: Final = PacketLayout.DATA_PACKET
JOIN_KEY: Final = "bubu.join.key"
JOIN_PARTS: Final = "bubu.join.parts"
JOIN_COMPLETE: Final = "bubu.join.complete"
#: Lifecycle hook events the hub emits (reference notes A17).
STORYRUN_READY: Final = "storyrun.ready"
STEPRUN_READY: Final = "steprun.ready"
#: Roots a template reads per packet: one that mentions neither is static.
_RUNTIME_ROOTS: Final = frozenset({"packet", "steps"})
#: Output cap and evaluation budget of one template evaluation (the Go hub caps at 64 KiB).
MAX_TEMPLATE_OUTPUT: Final = 64 * 1024
TEMPLATE_BUDGET: Final = 100_000
#: Recently completed join keys remembered per target, so a late part is told apart.
_RECENT_JOINS: Final = 1024
#: ``routing.maxDownstreams`` is clamped to this (the Go hub's hard cap).
MAX_DOWNSTREAMS_HARD_CAP: Final = 64
#: Rendered inputs of a run request are at most this many bytes of JSON by default
#: (``BUBU_HUB_INPUTS_MAX_BYTES``).
DEFAULT_INPUTS_MAX_BYTES: Final = 1024 * 1024
#: Chunk sets whose decision is remembered at once (per StoryRun).
_CHUNK_DECISIONS: Final = 1024


@final
@dataclass(frozen=True, slots=True)
class Rule:
    """One compiled ``routing.rules[]`` entry."""

    name: str
    allow: bool
    when: Template | None
    targets: frozenset[str]

    def applies_to(self, step: str) -> bool:
        """Whether the rule covers ``step`` (no target steps: every step)."""
        return not self.targets or step in self.targets


@final
@dataclass(frozen=True, slots=True)
class Route:
    """One path from a source step to an engram target (or to a terminal primitive)."""

    target: str
    #: Primitive steps crossed, in order.
    via: tuple[str, ...]
    #: ``(step, template)`` of every ``if`` on the way, the target's last.
    conditions: tuple[tuple[str, Template], ...]
    delay: float
    #: ``stop``, ``executeStory`` or ``job`` (a job-mode engram): the packet ends here as a
    #: stop or a run request (not streamed to ``target``).
    terminal: str | None
    rules: tuple[Rule, ...]
    runtime: CompiledValue | None
    #: The target's upstream steps when it joins (more than one ``needs``).
    join_needs: tuple[str, ...]
    join_policy: JoinPolicy | None
    partition: PartitionPolicy | None

    @property
    def plain(self) -> bool:
        """Whether a packet goes to ``target`` untouched (no primitive work on this path)."""
        return (
            not self.conditions
            and self.delay == 0
            and self.terminal is None
            and not self.rules
            and self.runtime is None
            and not self.join_needs
            and self.partition is None
        )


def _sleep_seconds(step: Step) -> float:
    config = step.with_ or {}
    text = config.get("duration", config.get("for", ""))
    if text in ("", None):
        return 0.0
    return max(0.0, parse_duration(str(text)))


def _rules(settings: StreamingSettings, step_ids: Mapping[str, str]) -> tuple[Rule, ...]:
    routing = settings.routing
    rules: list[Rule] = []
    for position, rule in enumerate((routing.rules or ()) if routing else ()):
        targets = frozenset(step_ids.get(s, s) for s in (rule.target.steps if rule.target else ()))
        when = (
            compile_template(rule.when, name=f"rule {rule.name or position}.when")
            if rule.when
            else None
        )
        rules.append(
            Rule(
                name=rule.name or str(position),
                allow=(rule.action or "allow") == "allow",
                when=when,
                targets=targets,
            )
        )
    return tuple(rules)


def _partition(settings: StreamingSettings) -> PartitionPolicy | None:
    part = settings.partitioning
    if part is None or part.mode in (None, "none"):
        return None
    return PartitionPolicy(
        mode=part.mode, key=part.key, partitions=part.partitions, sticky=bool(part.sticky)
    )


def _join_policy(settings: StreamingSettings) -> JoinPolicy:
    fan_in = settings.fan_in
    if fan_in is None:
        return JoinPolicy()
    return JoinPolicy(
        mode=fan_in.mode or "all",
        quorum=fan_in.quorum,
        timeout=float(fan_in.timeout_seconds) if fan_in.timeout_seconds else None,
        max_entries=fan_in.max_entries,
    )


@final
class StoryPlan:
    """A Story's primitives, compiled once for one topology."""

    def __init__(
        self, topology: Topology, *, inputs_max_bytes: int = DEFAULT_INPUTS_MAX_BYTES
    ) -> None:
        story = topology.story
        assert story is not None
        self.topology = topology
        self.inputs_max_bytes = inputs_max_bytes
        self.inputs: Mapping[str, Any] = frozen(dict(topology.inputs))
        self.steps: dict[str, Step] = {step.step_id: step for step in story.spec.steps}
        self.names: dict[str, str] = {step.step_id: step.name for step in story.spec.steps}
        step_ids = {step.name: step.step_id for step in story.spec.steps}
        concurrency = story.spec.concurrency
        self.cancel_previous = concurrency is not None and concurrency.mode == "cancelPrevious"
        self.per_participant = concurrency is not None and concurrency.scope == "participant"
        self._conditions: dict[str, Template] = {
            step_id: compile_template(step.if_, name=f"{step.name}.if")
            for step_id, step in self.steps.items()
            if step.if_ and step.if_.strip()
        }
        self._runtime: dict[str, CompiledValue] = {
            step_id: compile_value(step.runtime, name=f"{step.name}.runtime")
            for step_id, step in self.steps.items()
            if step.runtime not in (None, "", {}, [])
        }
        settings = {edge.source: edge.settings for edge in topology.edges}
        self.routes: dict[str, tuple[Route, ...]] = {}
        #: How many engram targets a packet from each step may reach (maxDownstreams).
        self.max_downstreams: dict[str, int] = {}
        for node in topology.steps:
            source_settings = settings.get(node.id, StreamingSettings())
            self.routes[node.id] = self._walk(
                node.id,
                _rules(source_settings, step_ids),
                _partition(source_settings),
                settings,
            )
            routing = source_settings.routing
            wanted = routing.max_downstreams if routing and routing.max_downstreams else 0
            self.max_downstreams[node.id] = (
                min(wanted, MAX_DOWNSTREAMS_HARD_CAP) if wanted > 0 else MAX_DOWNSTREAMS_HARD_CAP
            )
        #: Sources whose packets need the primitive path (else the hub forwards bytes).
        self.evaluates: frozenset[str] = frozenset(
            source
            for source, routes in self.routes.items()
            if self.cancel_previous
            or any(not route.plain for route in routes)
            or len(self.targets(source)) > self.max_downstreams[source]
        )
        self.engram_steps: frozenset[str] = frozenset(
            node.id for node in topology.steps if node.engram is not None
        )
        #: Static ``if`` results (they read only ``inputs``), computed once.
        self._static: dict[str, bool] = {}

    def _walk(
        self,
        source: str,
        rules: tuple[Rule, ...],
        partition: PartitionPolicy | None,
        settings: Mapping[str, StreamingSettings],
    ) -> tuple[Route, ...]:
        found: dict[str, Route] = {}
        # (step, primitives crossed, conditions so far, delay so far)
        stack: list[tuple[str, tuple[str, ...], tuple[tuple[str, Template], ...], float]] = [
            (source, (), (), 0.0)
        ]
        while stack:
            step, via, conditions, delay = stack.pop(0)
            for edge in self.topology.downstream_of(step):
                node = self.topology.step(edge.target)
                if node.id in found or node.id == source:
                    continue
                here = conditions
                if node.id in self._conditions:
                    here = (*conditions, (node.id, self._conditions[node.id]))
                if node.primitive is None and node.id in self.topology.job_steps:
                    # A job-mode engram: each packet asks for a batch StepRun ("hybrid").
                    found[node.id] = Route(
                        target=node.id,
                        via=via,
                        conditions=here,
                        delay=delay,
                        terminal="job",
                        rules=tuple(rule for rule in rules if rule.applies_to(node.id)),
                        runtime=self._runtime.get(node.id),
                        join_needs=(),
                        join_policy=None,
                        partition=None,
                    )
                elif node.primitive is None:
                    needs = node.needs if len(node.needs) > 1 else ()
                    found[node.id] = Route(
                        target=node.id,
                        via=via,
                        conditions=here,
                        delay=delay,
                        terminal=None,
                        rules=tuple(rule for rule in rules if rule.applies_to(node.id)),
                        runtime=self._runtime.get(node.id),
                        join_needs=needs,
                        join_policy=(
                            _join_policy(settings.get(needs[0], StreamingSettings()))
                            if needs
                            else None
                        ),
                        partition=partition,
                    )
                elif node.primitive in ("condition", "parallel", "sleep"):
                    extra = _sleep_seconds(self.steps[node.id]) if node.primitive == "sleep" else 0
                    stack.append((node.id, (*via, node.id), here, delay + extra))
                elif node.primitive in ("stop", "executeStory"):
                    found[node.id] = Route(
                        target=node.id,
                        via=via,
                        conditions=here,
                        delay=delay,
                        terminal=node.primitive,
                        rules=(),
                        runtime=self._runtime.get(node.id),
                        join_needs=(),
                        join_policy=None,
                        partition=None,
                    )
        return tuple(found.values())

    def targets(self, source: str) -> tuple[str, ...]:
        """The engram steps packets from ``source`` may be delivered to."""
        return tuple(r.target for r in self.routes.get(source, ()) if r.terminal is None)

    def hook_consumers(self, event: str) -> tuple[str, ...]:
        """Engram steps whose ``if`` mentions ``event`` (case-insensitive), in Story order."""
        wanted = event.lower()
        return tuple(
            step_id
            for step_id in self.engram_steps_in_order()
            if wanted in (self.steps[step_id].if_ or "").lower()
        )

    def engram_steps_in_order(self) -> tuple[str, ...]:
        """The engram steps in Story order."""
        return tuple(node.id for node in self.topology.steps if node.engram is not None)

    def condition(self, step: str) -> Template | None:
        """``step``'s compiled ``if``, if it has one."""
        return self._conditions.get(step)

    def static_truth(self, step: str, template: Template) -> bool:
        """A static ``if`` (reads only ``inputs``), evaluated once; TemplateError as any."""
        cached = self._static.get(step)
        if cached is None:
            cached = self._static[step] = template.condition(
                {"inputs": self.inputs}, max_output=MAX_TEMPLATE_OUTPUT, budget=TEMPLATE_BUDGET
            )
        return cached


@final
@dataclass(frozen=True, slots=True)
class Rewrite:
    """How a packet changes on its way to one target (None: unchanged)."""

    metadata: Mapping[str, str] = field(default_factory=dict)
    inputs: bytes | None = None
    payload: bytes | None = None
    partition: str | None = None

    @property
    def keys(self) -> tuple[bytes, ...]:
        """The metadata keys set, encoded."""
        return tuple(key.encode() for key in self.metadata)

    @property
    def entries(self) -> bytes:
        """The metadata set, as encoded map-entry fields of a DataPacket."""
        return b"".join(
            encode_len_field(1, encode_string_field(1, key) + encode_string_field(2, value))
            for key, value in self.metadata.items()
        )


#: A packet that goes to its target unchanged.
UNCHANGED: Final = Rewrite()


@final
@dataclass(slots=True)
class Delivery:
    """A packet for ``target``: the source's DataPacket bytes and how they change for the
    target (:meth:`stamp` writes both in one pass), now or ``delay`` seconds later."""

    target: str
    packet: bytes
    delay: float = 0.0
    #: (cycle key, token) when cancelPrevious may still cancel it while it waits.
    cycle: tuple[str, int] | None = None
    #: What changes from the source's packet (the same for every chunk of a set).
    rewrite: Rewrite = UNCHANGED

    def stamp(self, stamp: TargetStamp, sequence: int) -> bytes:
        """The ``ProcessResponse`` for the target: the rewrite, the target's identity and
        the envelope stamp ``sequence`` (0: a heartbeat, left unstamped), in one pass."""
        rewrite = self.rewrite
        if rewrite is UNCHANGED:
            return restamp(stamp, self.packet, sequence or None)
        return stamp_rewritten(
            stamp,
            self.packet,
            rewrite.entries,
            rewrite.keys,
            rewrite.inputs,
            rewrite.payload,
            rewrite.partition,
            sequence,
        )


@final
@dataclass(slots=True)
class Outcome:
    """What the plan decided for one packet."""

    deliveries: list[Delivery] = field(default_factory=list)
    filtered: collections.Counter[str] = field(default_factory=collections.Counter)
    template_errors: collections.Counter[str] = field(default_factory=collections.Counter)
    run_requests: collections.Counter[str] = field(default_factory=collections.Counter)
    #: Joins that left a cache without completing: (reason, the partial join).
    abandoned: list[tuple[str, Joined[bytes]]] = field(default_factory=list)


@final
class RunState:
    """What the hub remembers of one StoryRun between packets (owned by the hub's task)."""

    def __init__(
        self, namespace: str, storyrun: str, plan: StoryPlan, clock: Callable[[], float]
    ) -> None:
        self.namespace = namespace
        #: The clock of join timeouts (the hub's trio clock).
        self.clock = clock
        self.storyrun = storyrun
        self.plan = plan
        #: ``steps.<name>``: the latest outputs (payload over inputs) of each step.
        self.steps: dict[str, Any] = {}
        self.joins: dict[str, JoinCache[bytes]] = {}
        self._recent_joins: dict[str, collections.OrderedDict[str, None]] = {}
        #: cancelPrevious: the newest cycle token per key.
        self.cycles: dict[str, int] = {}
        #: Hook keys sent (cleared when a stream of the run ends, so a reconnect re-sends).
        self.hooks_sent: set[str] = set()
        self.ready = False
        self.terminated = False
        #: Chunked packets: the decision made for a chunk set's first chunk, by
        #: (source, stream id, chunk id), applied to its other chunks (bounded).
        self.chunk_decisions: collections.OrderedDict[tuple[str, str, str], Outcome] = (
            collections.OrderedDict()
        )

    def join_cache(self, target: str, policy: JoinPolicy) -> JoinCache[bytes]:
        """The join cache of ``target``, created on first use."""
        cache = self.joins.get(target)
        if cache is None:
            cache = self.joins[target] = JoinCache(policy, clock=self.clock)
        return cache

    def remember_join(self, target: str, key: str) -> None:
        """Note a completed join key (bounded), so later parts are recognised as late."""
        recent = self._recent_joins.setdefault(target, collections.OrderedDict())
        recent[key] = None
        if len(recent) > _RECENT_JOINS:
            recent.popitem(last=False)

    def close_joins(self) -> list[tuple[str, Joined[bytes]]]:
        """Empty every join cache: (target, join) for each join left unfinished."""
        left = [(target, join) for target, cache in self.joins.items() for join in cache.clear()]
        self.joins.clear()
        return left

    def join_parts_waiting(self) -> int:
        """Parts waiting in this StoryRun's join caches."""
        return sum(cache.waiting for cache in self.joins.values())

    def join_completed(self, target: str, key: str) -> bool:
        """Whether ``key`` completed a join for ``target`` recently."""
        return key in self._recent_joins.get(target, ())


def packet_view(payload: Mapping[str, Any], metadata: Mapping[str, str]) -> Mapping[str, Any]:
    """The ``packet`` root of a template (read-only): the payload's fields, ``metadata``,
    and ``type`` / ``kind`` from the metadata when the payload has none."""
    view: dict[str, Any] = dict(payload)
    view["metadata"] = MappingProxyType(dict(metadata))
    for key in ("type", "kind"):
        if key not in view and key in metadata:
            view[key] = metadata[key]
    return MappingProxyType(view)


def frozen(value: Any) -> Any:
    """``value`` with every dict inside it read-only (``MappingProxyType``): the hub hands
    templates its shared state (inputs, step outputs), and Sprig's ``set``/``merge`` change
    maps in place, so a template could otherwise change what later packets see."""
    if isinstance(value, dict):
        return MappingProxyType({key: frozen(item) for key, item in value.items()})
    if isinstance(value, list):
        return [frozen(item) for item in value]
    return value


def _parts(packet: bytes) -> PacketParts:
    """:func:`read_parts` in one compiled walk (:func:`packet_parts`) when it answers."""
    metadata, p_start, p_end, i_start, i_end, e_start, e_end = packet_parts(packet)
    if p_start == -2:
        return read_parts(packet, _DATA)
    pairs = iter(metadata)
    return PacketParts(
        metadata=dict(zip(pairs, pairs, strict=True)),
        payload=packet[p_start:p_end] if p_start >= 0 else None,
        inputs=packet[i_start:i_end] if i_start >= 0 else None,
        envelope=parse_envelope(packet[e_start:e_end]) if e_start >= 0 else None,
        frame_bytes=0,
    )


def _decode(data: bytes | None) -> dict[str, Any]:
    return decode_struct(data) if data else {}


def _condition_holds(
    plan: StoryPlan, step: str, template: Template, data: Mapping[str, Any], heartbeat: bool
) -> bool:
    if not (template.roots & _RUNTIME_ROOTS):
        return plan.static_truth(step, template)
    if heartbeat:
        return True  # heartbeats bypass runtime predicates (Go)
    return template.condition(data, max_output=MAX_TEMPLATE_OUTPUT, budget=TEMPLATE_BUDGET)


def _rules_allow(route: Route, data: Mapping[str, Any]) -> str | None:
    """None when the rules let the packet through to ``route.target``, else the reason."""
    allows = [rule for rule in route.rules if rule.allow]
    for rule in route.rules:
        if not rule.allow and (
            rule.when is None
            or rule.when.condition(data, max_output=MAX_TEMPLATE_OUTPUT, budget=TEMPLATE_BUDGET)
        ):
            return "rule_denied"
    if allows and not any(
        rule.when is None
        or rule.when.condition(data, max_output=MAX_TEMPLATE_OUTPUT, budget=TEMPLATE_BUDGET)
        for rule in allows
    ):
        return "not_allowed"
    return None


def evaluate(
    state: RunState,
    source: str,
    packet: bytes,
    *,
    heartbeat: bool,
) -> Outcome:
    """Decide what happens to ``packet`` (DataPacket bytes, validated) from ``source``.

    Raises only WireFormatError for a payload that is not a Struct (the caller counts it).
    """
    routes = state.plan.routes.get(source, ())
    if not routes:
        return Outcome()
    parts = _parts(packet)
    envelope = parts.envelope
    chunk: tuple[str, str, str] | None = None
    if envelope is not None and envelope.chunk_count > 0 and not heartbeat:
        # Every chunk of a set gets the decision of the first one seen: a set is never
        # split between targets, cancelled in part, or joined chunk by chunk.
        chunk = (source, envelope.stream_id, envelope.chunk_id)
        decided = state.chunk_decisions.get(chunk)
        if decided is not None:
            if envelope.chunk_index + 1 >= envelope.chunk_count:
                del state.chunk_decisions[chunk]
            return _same_decision(decided, packet)
    outcome = _evaluate(state, source, packet, parts, routes, heartbeat, chunk)
    if chunk is not None and envelope is not None and envelope.chunk_count > 1:
        state.chunk_decisions[chunk] = outcome
        if len(state.chunk_decisions) > _CHUNK_DECISIONS:
            state.chunk_decisions.popitem(last=False)
    return outcome


def _same_decision(first: Outcome, packet: bytes) -> Outcome:
    """The first chunk's decision for a later chunk: the same targets, delays, cycle and
    rewrite (inputs, partition, join metadata), applied to this chunk's bytes."""
    outcome = Outcome()
    outcome.filtered.update(first.filtered)
    for delivery in first.deliveries:
        outcome.deliveries.append(
            Delivery(
                target=delivery.target,
                packet=packet,
                delay=delivery.delay,
                cycle=delivery.cycle,
                rewrite=delivery.rewrite,
            )
        )
    return outcome


def _evaluate(
    state: RunState,
    source: str,
    packet: bytes,
    parts: Any,
    routes: tuple[Route, ...],
    heartbeat: bool,
    chunk: tuple[str, str, str] | None,
) -> Outcome:
    plan = state.plan
    outcome = Outcome()
    metadata = parts.metadata
    payload = frozen(_decode(parts.payload))
    if not heartbeat and (payload or parts.inputs):
        outputs = MappingProxyType({**frozen(_decode(parts.inputs)), **payload})
        state.steps[plan.names.get(source, source)] = outputs
    view = packet_view(payload, metadata)
    data: Mapping[str, Any] = MappingProxyType(
        {"inputs": plan.inputs, "steps": MappingProxyType(state.steps), "packet": view}
    )
    cycle: tuple[str, int] | None = None
    if plan.cancel_previous and not heartbeat:
        key = f"{state.namespace}/{state.storyrun}:{source}"
        if plan.per_participant:
            participant = metadata.get("participant") or metadata.get("participant.id")
            if participant:
                key += f":{participant}"
        token = state.cycles.get(key, 0) + 1
        state.cycles[key] = token
        cycle = (key, token)
    for route in routes:
        try:
            reason = _decide(plan, route, data, heartbeat)
            if reason is not None:
                outcome.filtered[reason] += 1
                continue
            if route.terminal is not None:
                if route.terminal == "stop":
                    outcome.filtered["stop"] += 1
                else:
                    _report_run_request(state, source, route, data, outcome)
                continue
            out = _deliver(state, source, route, parts, payload, data, heartbeat, chunk)
        except TemplateError as error:
            outcome.template_errors[error.reason] += 1
            if outcome.template_errors[error.reason] in (1, 100, 10000):
                log.warning(
                    "template for %s/%s step %s failed: %s",
                    state.namespace,
                    state.storyrun,
                    route.target,
                    error,
                )
            continue
        if isinstance(out, str):
            outcome.filtered[out] += 1
            continue
        if isinstance(out, tuple):
            joined, abandoned, absorbed = out
            for reason, join in abandoned:
                if reason == "join_replaced":
                    # the join keeps each upstream's latest part: declared, not lost
                    outcome.filtered[reason] += 1
                else:
                    outcome.abandoned.append((reason, join))
            if absorbed:
                # The parts a completed join absorbed (every part but this one) end here.
                outcome.filtered["joined"] += absorbed
            if joined is None:
                continue  # waiting in the join cache (reported by its gauge)
            out = joined
        if len(outcome.deliveries) >= plan.max_downstreams.get(source, MAX_DOWNSTREAMS_HARD_CAP):
            outcome.filtered["max_downstreams"] += 1
            continue
        outcome.deliveries.append(
            Delivery(
                target=route.target,
                packet=packet,
                delay=route.delay,
                cycle=cycle if route.delay > 0 else None,
                rewrite=out,
            )
        )
    return outcome


def _decide(plan: StoryPlan, route: Route, data: Mapping[str, Any], heartbeat: bool) -> str | None:
    for step, template in route.conditions:
        if not _condition_holds(plan, step, template, data, heartbeat):
            return "if_false"
    if route.rules and not heartbeat:
        return _rules_allow(route, data)
    return None


def _deliver(
    state: RunState,
    source: str,
    route: Route,
    parts: Any,
    payload: Mapping[str, Any],
    data: Mapping[str, Any],
    heartbeat: bool,
    chunk: tuple[str, str, str] | None,
) -> Rewrite | str | tuple[Rewrite | None, list[tuple[str, Joined[bytes]]], int]:
    """How the packet changes for ``route.target``; a filtered reason; or, for a join, the
    joined packet's rewrite (None while this part waits in the cache), the joins abandoned
    meanwhile and how many earlier parts the completed join absorbed. A part is counted
    once: ``joined`` when a completed join absorbs it, lost ``join_expired`` /
    ``join_evicted`` when its join never completes. Chunked packets are not joined (a join
    would need the whole payload)."""
    metadata = parts.metadata
    updates: dict[str, str] = {}
    new_payload: bytes | None = None
    abandoned: list[tuple[str, Joined[bytes]]] = []
    absorbed = 0
    key = metadata.get(JOIN_KEY, "")
    if route.join_needs and key and not heartbeat and chunk is None:
        if state.join_completed(route.target, key):
            return "join_late"
        assert route.join_policy is not None
        cache = state.join_cache(route.target, route.join_policy)
        replaced = cache.counts["replaced"]
        offered = cache.offer(key, source, route.join_needs, parts.payload or b"")
        if cache.counts["replaced"] > replaced:
            # This upstream's earlier part for the key gave way to this one: it ends here.
            abandoned.append(("join_replaced", _replaced_part(key, source, route.join_needs)))
        abandoned.extend(("join_evicted", join) for join in offered.evicted)
        abandoned.extend(("join_expired", join) for join in offered.expired)
        if offered.joined is None:
            return (None, abandoned, 0)
        state.remember_join(route.target, key)
        joined = offered.joined
        absorbed = len(joined.parts) - 1
        names = plan_names(state.plan, route.join_needs)
        merged = {
            names[need]: _decode(joined.parts[need])
            for need in route.join_needs
            if need in joined.parts
        }
        new_payload = encode_struct({"joined": merged})
        updates[JOIN_KEY] = key
        updates[JOIN_PARTS] = ",".join(names[n] for n in route.join_needs if n in joined.parts)
        updates[JOIN_COMPLETE] = "true" if joined.complete else "false"
        data = MappingProxyType(
            {**data, "packet": packet_view({"joined": merged}, {**metadata, **updates})}
        )
    inputs: bytes | None = None
    if route.runtime is not None and not heartbeat:
        rendered = route.runtime.render(
            data, max_output=MAX_TEMPLATE_OUTPUT, budget=TEMPLATE_BUDGET
        )
        if not isinstance(rendered, Mapping):
            rendered = {"value": rendered}
        inputs = encode_struct(rendered)
    partition: str | None = None
    if route.partition is not None and not heartbeat:
        envelope = parts.envelope
        chosen = choose_partition(
            route.partition,
            existing=envelope.partition if envelope else "",
            metadata=metadata,
            payload=payload,
            inputs=_decode(parts.inputs),
            stream_id=envelope.stream_id if envelope else "",
            sequence=envelope.sequence if envelope else 0,
        )
        if chosen != (envelope.partition if envelope else ""):
            partition = chosen
    if not updates and inputs is None and new_payload is None and partition is None:
        out = UNCHANGED
    else:
        out = Rewrite(metadata=updates, inputs=inputs, payload=new_payload, partition=partition)
    return (out, abandoned, absorbed) if abandoned or absorbed else out


def _replaced_part(key: str, upstream: str, needs: tuple[str, ...]) -> Joined[bytes]:
    """The record of one part a later part of the same upstream replaced."""
    return Joined(key=key, parts={upstream: b""}, complete=False, needs=needs)


def plan_names(plan: StoryPlan, steps: tuple[str, ...]) -> dict[str, str]:
    """Step id → step name for ``steps``."""
    return {step: plan.names.get(step, step) for step in steps}


def _report_run_request(
    state: RunState, source: str, route: Route, data: Mapping[str, Any], outcome: Outcome
) -> None:
    step = state.plan.steps[route.target]
    config = step.with_ or {}
    inputs: Any = None
    if route.runtime is not None:
        inputs = route.runtime.render(data, max_output=MAX_TEMPLATE_OUTPUT, budget=TEMPLATE_BUDGET)
    elif route.terminal == "job":
        inputs = config  # the Go hub copies the step's `with` when there are no inputs
    encoded = json.dumps(inputs, default=str)
    if len(encoded.encode()) > state.plan.inputs_max_bytes:
        outcome.template_errors["inputs_too_large"] += 1
        log.warning(
            "run request of step %s refused: inputs of %d bytes exceed %d "
            "(BUBU_HUB_INPUTS_MAX_BYTES; pass large data by reference)",
            step.name,
            len(encoded.encode()),
            state.plan.inputs_max_bytes,
        )
        return
    outcome.run_requests[route.terminal or "run"] += 1
    now = datetime.datetime.now(datetime.UTC)
    now_ms = int(now.timestamp() * 1000)
    event = {
        "event": "run_request",
        "kind": route.terminal,
        "namespace": state.namespace,
        "storyrun": state.storyrun,
        "step": step.name,
        "upstream": state.plan.names.get(source, source),
        "storyRef": config.get("storyRef") if route.terminal == "executeStory" else None,
        "stepRun": f"{state.storyrun}-{step.name}-{now_ms}" if route.terminal == "job" else None,
        "inputs": inputs,
        "at": now.isoformat(),
    }
    log.info("%s", json.dumps(event, default=str))


def hook_packet(event: str, namespace: str, storyrun: str, step: str) -> tuple[bytes, str]:
    """The DataPacket bytes of lifecycle hook ``event`` (origin ``step``) and its message id."""
    message_id = f"{namespace}/{storyrun}:{event}" + (f":{step}" if event == STEPRUN_READY else "")
    metadata = {
        "type": event,
        "kind": "hook",
        "hook.event": event,
        "hook.source": "hub",
        "hook.step": step,
        "source": "hub",
        "provider": "hub",
        "bubu.envelope.message_id": message_id,
    }
    payload = {
        "kind": "hook",
        "type": event,
        "hook": {
            "version": "v1",
            "event": event,
            "source": "hub",
            "data": {
                "timestamp": datetime.datetime.now(datetime.UTC).isoformat(),
                "storyRun": {"name": storyrun, "namespace": namespace},
                "step": {"name": step},
            },
        },
    }
    body = rewrite_packet(
        b"", layout=_DATA, metadata_updates=metadata, payload=encode_struct(payload)
    )
    return body, message_id


def hook_allowed(plan: StoryPlan, step: str, packet: bytes) -> bool:
    """Whether ``step``'s ``if`` accepts hook ``packet`` (False on a template error)."""
    template = plan.condition(step)
    if template is None:
        return True
    parts = read_parts(packet, _DATA)
    view = packet_view(_decode(parts.payload), parts.metadata)
    try:
        return template.condition(
            MappingProxyType(
                {"inputs": plan.inputs, "steps": MappingProxyType({}), "packet": view}
            ),
            max_output=MAX_TEMPLATE_OUTPUT,
            budget=TEMPLATE_BUDGET,
        )
    except TemplateError as error:
        log.warning("hook condition of step %s failed: %s", step, error)
        return False


__all__ = [
    "Delivery",
    "Outcome",
    "Route",
    "RunState",
    "StoryPlan",
    "WireFormatError",
    "evaluate",
    "hook_allowed",
    "hook_packet",
]
