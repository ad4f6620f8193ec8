"""The transport reconciler's pure decisions on fixture resources, including refusals and the
guarantee that reconciling unchanged input again plans no write."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from bobravoz.controllers.reconcile import (
    FINALIZER,
    Plan,
    pending_backoff,
    plan_reconcile,
)
from bobravoz.runtime.models import ObjectMeta
from bobravoz.runtime.resources import (
    BinaryLane,
    ObjectRef,
    StoryRun,
    StoryRunSpec,
    TransportBinding,
    TransportBindingSpec,
)
from bobravoz.runtime.story import Story, load_story

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "stories"
HUB = "bobravoz-grpc-hub.bobravoz-system.svc.cluster.local:9000"
NOW = "2026-11-24T03:00:00Z"
LATER = "2026-11-24T03:05:00Z"


def story(annotation: str | None = None) -> Story:
    loaded = load_story(FIXTURES / "p2p-chain.yaml")
    if annotation is None:
        return loaded
    meta = msgspec.structs.replace(
        loaded.metadata, annotations={"bobravoz.bubustack.io/transport": annotation}
    )
    return msgspec.structs.replace(loaded, metadata=meta)


def run(**meta: object) -> StoryRun:
    return StoryRun(
        metadata=ObjectMeta(name="r1", namespace="demo", **meta),  # type: ignore[arg-type]
        spec=StoryRunSpec(story_ref=ObjectRef(name="p2p-chain")),
    )


def binding(step: str) -> TransportBinding:
    return TransportBinding(
        metadata=ObjectMeta(name=f"r1-{step}-transport", namespace="demo"),
        spec=TransportBindingSpec(
            transport_ref="grpc-default",
            driver="bobravoz-grpc",
            step_name=step,
            engram_name=f"r1-{step}",
            binary=BinaryLane(direction="bidirectional"),
        ),
    )


ALL = {b.metadata.name: b for b in map(binding, ("producer", "enricher", "consumer"))}


def apply(
    current: StoryRun, bindings: dict[str, TransportBinding], plan: Plan
) -> tuple[StoryRun, dict[str, TransportBinding]]:
    """What the watch loop's writes do to the objects."""
    finalizers = set(current.metadata.finalizers)
    if plan.add_finalizer:
        finalizers.add(FINALIZER)
    if plan.remove_finalizer:
        finalizers.discard(FINALIZER)
    merged = {c.type: c for c in current.status.conditions}
    merged.update({c.type: c for c in plan.conditions})
    status = msgspec.structs.replace(current.status, conditions=tuple(merged.values()))
    meta = msgspec.structs.replace(current.metadata, finalizers=tuple(sorted(finalizers)))
    updated = dict(bindings)
    for patch in plan.bindings:
        old = updated[patch.name]
        updated[patch.name] = msgspec.structs.replace(
            old,
            status=msgspec.structs.replace(
                old.status, endpoint=patch.endpoint, conditions=(patch.ready,)
            ),
        )
    return msgspec.structs.replace(current, metadata=meta, status=status), updated


def conditions(plan: Plan) -> dict[str, tuple[str, str]]:
    return {c.type: (c.status, c.reason) for c in plan.conditions}


def test_missing_bindings_wait_with_backoff_then_become_ready_once() -> None:
    first = plan_reconcile(run(), story(), {}, hub_endpoint=HUB, now=NOW)
    assert first.add_finalizer
    assert conditions(first) == {
        "TransportReady": ("False", "AwaitingTransport"),
        "Ready": ("False", "AwaitingTransport"),
    }
    assert first.pending == (
        "r1-producer-transport",
        "r1-enricher-transport",
        "r1-consumer-transport",
    )
    assert first.requeue_after == 2
    current, bindings = apply(run(), {}, first)
    again = plan_reconcile(current, story(), bindings, hub_endpoint=HUB, now=LATER)
    assert not again.writes  # idempotent while still waiting
    bound = plan_reconcile(current, story(), ALL, hub_endpoint=HUB, now=LATER, waiting_seconds=12)
    assert conditions(bound) == {
        "TransportReady": ("True", "TransportReady"),
        "Ready": ("True", "TransportReady"),
    }
    assert {b.name for b in bound.bindings} == set(ALL)
    assert all(b.endpoint == HUB and b.ready.status == "True" for b in bound.bindings)
    assert [e.reason for e in bound.events] == ["TransportReady"]
    assert bound.topology is not None
    current, bindings = apply(current, ALL, bound)
    assert current.status.conditions[0].last_transition_time == LATER
    settled = plan_reconcile(
        current, story(), bindings, hub_endpoint=HUB, now="2026-11-24T04:00:00Z"
    )
    assert not settled.writes


def test_other_transport_annotation_is_refused_once() -> None:
    plan = plan_reconcile(run(), story("nats"), {}, hub_endpoint=HUB, now=NOW)
    assert conditions(plan)["TransportReady"] == ("False", "InvalidConfiguration")
    assert [e.reason for e in plan.events] == ["InvalidTransportAnnotation"]
    assert "'nats'" in plan.events[0].message
    current, bindings = apply(run(), {}, plan)
    assert not plan_reconcile(current, story("nats"), bindings, hub_endpoint=HUB, now=LATER).writes


def test_deletion_cleans_up_and_releases_the_finalizer() -> None:
    deleting = run(finalizers=(FINALIZER,), deletion_timestamp=NOW)
    plan = plan_reconcile(deleting, story(), ALL, hub_endpoint=HUB, now=NOW)
    assert plan.remove_finalizer
    assert conditions(plan)["TransportReady"] == ("False", "TransportCleaned")
    assert [e.reason for e in plan.events] == ["TransportCleanupComplete"]
    released = run(deletion_timestamp=NOW)
    assert not plan_reconcile(released, story(), ALL, hub_endpoint=HUB, now=NOW).writes


def test_missing_story_and_batch_stories() -> None:
    plan = plan_reconcile(run(), None, {}, hub_endpoint=HUB, now=NOW)
    assert [e.reason for e in plan.events] == ["ParentStoryMissing"]
    batch = msgspec.structs.replace(
        story(), spec=msgspec.structs.replace(story().spec, pattern="batch")
    )
    assert not plan_reconcile(run(), batch, {}, hub_endpoint=HUB, now=NOW).writes


@pytest.mark.parametrize(
    ("waited", "delay"), [(0, 2), (9, 2), (10, 4), (25, 8), (35, 16), (45, 30), (600, 30)]
)
def test_pending_backoff(waited: float, delay: float) -> None:
    assert pending_backoff(waited) == delay


@pytest.mark.parametrize(
    "fixture",
    [
        "voice-pipeline.yaml",
        "fanout-rules-fanin.yaml",
        "p2p-chain.yaml",
        "hook-primitive-hybrid.yaml",
    ],
)
def test_every_fixture_story_waits_for_its_bindings_then_becomes_ready(fixture: str) -> None:
    loaded = load_story(FIXTURES / fixture)
    name = loaded.metadata.name
    runs = StoryRun(
        metadata=ObjectMeta(name="r1", namespace=loaded.metadata.namespace),
        spec=StoryRunSpec(story_ref=ObjectRef(name=name)),
    )
    waiting = plan_reconcile(runs, loaded, {}, hub_endpoint=HUB, now=NOW)
    assert waiting.topology is not None
    steps = [node.id for node in waiting.topology.streaming_steps()]
    assert waiting.pending == tuple(f"r1-{step}-transport" for step in steps)
    present = {
        f"r1-{step}-transport": TransportBinding(
            metadata=ObjectMeta(name=f"r1-{step}-transport", namespace=loaded.metadata.namespace),
            spec=TransportBindingSpec(
                transport_ref="t",
                driver="bobravoz-grpc",
                step_name=step,
                engram_name=f"r1-{step}",
                binary=BinaryLane(direction="bidirectional"),
            ),
        )
        for step in steps
    }
    current, _ = apply(runs, {}, waiting)
    ready = plan_reconcile(current, loaded, present, hub_endpoint=HUB, now=LATER)
    assert conditions(ready)["TransportReady"] == ("True", "TransportReady")
    assert len(ready.bindings) == len(steps)


def test_failures_become_transport_failed_once() -> None:
    from bobravoz.controllers.reconcile import failure_plan

    plan = failure_plan(run(), "API unavailable", NOW)
    assert conditions(plan)["TransportReady"] == ("False", "TransportFailed")
    assert [e.reason for e in plan.events] == ["TransportReconcileFailed"]
    current, _ = apply(run(), {}, plan)
    assert not failure_plan(current, "API unavailable", LATER).conditions
