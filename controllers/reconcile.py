"""The transport reconciler's decisions, as a pure function: resources in, a plan out.

:func:`plan_reconcile` looks at one StoryRun, its Story and the TransportBindings the
BubuStack operator created, and says what to write: the finalizer, the ``TransportReady`` and
``Ready`` conditions, each binding's ``status.endpoint`` and ``Ready`` condition, events, and
when to look again. Nothing is written for what is already as desired, so running it again
on unchanged input plans no write (idempotent). The watch loop applies the plan.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal, final

from bobravoz.runtime.naming import binding_name
from bobravoz.runtime.resources import Condition, StoryRun, TransportBinding
from bobravoz.runtime.story import Story
from bobravoz.runtime.topology import Topology, TopologyError, streaming_topology

FINALIZER: Final = "transport.bobravoz.bubustack.io/finalizer"
TRANSPORT_ANNOTATION: Final = "bobravoz.bubustack.io/transport"
SERVED_TRANSPORT: Final = "grpc"


@final
@dataclass(frozen=True, slots=True)
class Event:
    """A Kubernetes event to record on the StoryRun."""

    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@final
@dataclass(frozen=True, slots=True)
class BindingStatus:
    """The status fields bobravoz owns on one TransportBinding."""

    namespace: str
    name: str
    endpoint: str
    ready: Condition


@final
@dataclass(frozen=True, slots=True)
class Plan:
    """What one reconcile should write; empty fields mean nothing to write."""

    add_finalizer: bool = False
    remove_finalizer: bool = False
    conditions: tuple[Condition, ...] = ()
    bindings: tuple[BindingStatus, ...] = ()
    events: tuple[Event, ...] = ()
    requeue_after: float | None = None
    topology: Topology | None = None
    pending: tuple[str, ...] = field(default=())
    #: The StoryRun is being deleted: the hub forgets its topology.
    deleting: bool = False

    @property
    def writes(self) -> bool:
        """Whether applying the plan writes anything."""
        return bool(
            self.add_finalizer
            or self.remove_finalizer
            or self.conditions
            or self.bindings
            or self.events
        )


def pending_backoff(waiting_seconds: float) -> float:
    """Requeue delay while bindings are missing: 2 s * 2^(wait // 10 s, at most 4), ≤ 30 s."""
    return float(min(30, 2 * 2 ** min(4, int(waiting_seconds // 10))))


def _condition(
    current: tuple[Condition, ...],
    kind: str,
    status: Literal["True", "False"],
    reason: str,
    message: str,
    now: str,
) -> Condition | None:
    """The condition to write, or None when the current one already says the same."""
    existing = next((c for c in current if c.type == kind), None)
    if existing is not None and (existing.status, existing.reason, existing.message) == (
        status,
        reason,
        message,
    ):
        return None
    moved = existing is None or existing.status != status
    when = now if moved or existing is None else existing.last_transition_time
    return Condition(
        type=kind, status=status, reason=reason, message=message, last_transition_time=when
    )


def _conditions(
    run: StoryRun, status: Literal["True", "False"], reason: str, message: str, now: str
) -> tuple[Condition, ...]:
    current = run.status.conditions
    return tuple(
        condition
        for condition in (
            _condition(current, "TransportReady", status, reason, message, now),
            _condition(current, "Ready", status, reason, message, now),
        )
        if condition is not None
    )


def _changed(run: StoryRun, conditions: tuple[Condition, ...]) -> bool:
    return any(c.type == "TransportReady" for c in conditions)


def plan_reconcile(
    run: StoryRun,
    story: Story | None,
    bindings: Mapping[str, TransportBinding],
    *,
    hub_endpoint: str,
    now: str,
    waiting_seconds: float = 0.0,
    job_steps: frozenset[str] = frozenset(),
) -> Plan:
    """Decide one reconcile of ``run`` (see the module docstring).

    ``bindings`` maps TransportBinding names (in the run's namespace) to their objects;
    ``now`` is the RFC 3339 time used for new condition transitions; ``waiting_seconds`` is how
    long the run has been waiting for bindings (for the requeue backoff); ``job_steps`` are
    the engram steps whose Engram runs in ``job`` mode (the hub reports run requests for them).
    """
    plan = _plan(
        run,
        story,
        bindings,
        hub_endpoint=hub_endpoint,
        now=now,
        waiting_seconds=waiting_seconds,
        job_steps=job_steps,
    )
    if run.metadata.deletion_timestamp is not None:
        return dataclasses.replace(plan, deleting=True, topology=None)
    return plan


def _plan(
    run: StoryRun,
    story: Story | None,
    bindings: Mapping[str, TransportBinding],
    *,
    hub_endpoint: str,
    now: str,
    waiting_seconds: float = 0.0,
    job_steps: frozenset[str] = frozenset(),
) -> Plan:
    deleting = run.metadata.deletion_timestamp is not None
    has_finalizer = FINALIZER in run.metadata.finalizers
    if story is None:
        return Plan(
            remove_finalizer=deleting and has_finalizer,
            events=(
                Event(
                    "Warning", "ParentStoryMissing", f"Story {run.spec.story_ref.name!r} not found"
                ),
            ),
        )
    if story.spec.pattern != "realtime":
        return Plan(remove_finalizer=deleting and has_finalizer)
    choice = story.metadata.annotations.get(TRANSPORT_ANNOTATION, "").strip() or SERVED_TRANSPORT
    if choice != SERVED_TRANSPORT:
        message = (
            f"unsupported transport {choice!r} in annotation {TRANSPORT_ANNOTATION} of "
            f"Story {story.metadata.name!r}; bobravoz serves {SERVED_TRANSPORT!r}"
        )
        conditions = _conditions(run, "False", "InvalidConfiguration", message, now)
        warning = (Event("Warning", "InvalidTransportAnnotation", message),)
        return Plan(
            conditions=conditions,
            events=warning if conditions else (),
            remove_finalizer=deleting and has_finalizer,
        )
    if deleting:
        if not has_finalizer:
            return Plan()
        conditions = _conditions(run, "False", "TransportCleaned", "Transport cleaned up", now)
        return Plan(
            remove_finalizer=True,
            conditions=conditions,
            events=(Event("Normal", "TransportCleanupComplete", "transport resources released"),),
        )
    try:
        inputs = run.spec.inputs if isinstance(run.spec.inputs, dict) else None
        topology = streaming_topology(story, inputs=inputs, job_steps=job_steps)
    except TopologyError as error:
        conditions = _conditions(run, "False", "InvalidConfiguration", str(error), now)
        return Plan(
            add_finalizer=not has_finalizer,
            conditions=conditions,
            events=(Event("Warning", "TransportReconcileFailed", str(error)),)
            if conditions
            else (),
        )
    namespace = run.metadata.namespace
    statuses: list[BindingStatus] = []
    pending: list[str] = []
    for node in topology.streaming_steps():
        name = binding_name(run.metadata.name, node.id)
        binding = bindings.get(name)
        if binding is None:
            pending.append(name)
            continue
        ready = _condition(
            binding.status.conditions,
            "Ready",
            "True",
            "TransportReady",
            "Transport binding resolved",
            now,
        )
        if binding.status.endpoint != hub_endpoint or ready is not None:
            current = next((c for c in binding.status.conditions if c.type == "Ready"), None)
            statuses.append(
                BindingStatus(
                    namespace,
                    name,
                    hub_endpoint,
                    ready
                    or current
                    or Condition(
                        type="Ready",
                        status="True",
                        reason="TransportReady",
                        message="Transport binding resolved",
                        last_transition_time=now,
                    ),
                )
            )
    if pending:
        message = (
            "waiting for TransportBinding "
            + ", ".join(pending)
            + " (created by the BubuStack operator)"
        )
        conditions = _conditions(run, "False", "AwaitingTransport", message, now)
        return Plan(
            add_finalizer=not has_finalizer,
            conditions=conditions,
            bindings=tuple(statuses),
            requeue_after=pending_backoff(waiting_seconds),
            topology=topology,
            pending=tuple(pending),
        )
    conditions = _conditions(run, "True", "TransportReady", "Transport is ready", now)
    events: tuple[Event, ...] = ()
    if _changed(run, conditions):
        events = (
            Event(
                "Normal",
                "TransportReady",
                f"transport ready for {len(topology.streaming_steps())} streaming steps"
                + (f" after {waiting_seconds:.0f}s" if waiting_seconds else ""),
            ),
        )
    return Plan(
        add_finalizer=not has_finalizer,
        conditions=conditions,
        bindings=tuple(statuses),
        events=events,
        topology=topology,
    )


def failure_plan(run: StoryRun, error: str, now: str) -> Plan:
    """The plan after an unexpected failure: TransportFailed and a Warning event."""
    conditions = _conditions(run, "False", "TransportFailed", error[:2048], now)
    return Plan(
        conditions=conditions, events=(Event("Warning", "TransportReconcileFailed", error[:1024]),)
    )


def condition_patch(
    conditions: tuple[Condition, ...], current: tuple[Condition, ...]
) -> list[dict[str, Any]]:
    """The full ``status.conditions`` list with ``conditions`` merged in by type."""
    merged = {c.type: c for c in current}
    merged.update({c.type: c for c in conditions})
    return [
        {
            key: value
            for key, value in {
                "type": c.type,
                "status": c.status,
                "reason": c.reason,
                "message": c.message,
                "lastTransitionTime": c.last_transition_time,
            }.items()
            if value is not None
        }
        for c in merged.values()
    ]
