"""The transport controller: watches StoryRuns and TransportBindings, reconciles through a
work queue, applies :func:`~bobravoz.controllers.reconcile.plan_reconcile` plans with
conflict retries, and hands each realtime StoryRun's topology to the hub. Only the replica
holding the leader Lease acts.
"""

from __future__ import annotations

import datetime
import logging
import time
from dataclasses import dataclass
from typing import Any, Final, final

import msgspec
import trio
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from bobravoz.controllers.kube import (
    ENGRAMS,
    STORIES,
    STORYRUNS,
    TRANSPORTBINDINGS,
    ApiError,
    Kube,
)
from bobravoz.controllers.leader import LeaderElector
from bobravoz.controllers.reconcile import (
    FINALIZER,
    Plan,
    condition_patch,
    failure_plan,
    plan_reconcile,
)
from bobravoz.controllers.watch import watch_forever
from bobravoz.controllers.workqueue import WorkQueue
from bobravoz.runtime.hub import TopologyFeed
from bobravoz.runtime.models import ResourceError
from bobravoz.runtime.resources import Engram, StoryRun, TransportBinding, parse_resource
from bobravoz.runtime.story import Story, parse_story

log = logging.getLogger(__name__)

CONFLICT_RETRIES: Final = 5


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _age(timestamp: str | None) -> float:
    if not timestamp:
        return 0.0
    moment = datetime.datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    return max(0.0, (datetime.datetime.now(datetime.UTC) - moment).total_seconds())


@final
class ControllerMetrics:
    """Reconcile counters, errors, queue depth and durations on an injected registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.reconciles = Counter(
            "bobravoz_controller_reconciles", "Reconciles run.", ["result"], registry=registry
        )
        self.errors = Counter(
            "bobravoz_controller_errors",
            "Reconcile failures by reason.",
            ["reason"],
            registry=registry,
        )
        self.queue_depth = Gauge(
            "bobravoz_controller_queue_depth", "Keys waiting.", registry=registry
        )
        self.duration = Histogram(
            "bobravoz_controller_reconcile_seconds", "Reconcile duration.", registry=registry
        )
        self.leader = Gauge(
            "bobravoz_controller_leader", "1 while this replica leads.", registry=registry
        )


@final
@dataclass
class TransportController:
    """Reconciles realtime StoryRuns (see the module docstring)."""

    kube: Kube
    hub_endpoint: str
    #: Where topology changes go: the hub applies them in its own task (never from a thread).
    topologies: TopologyFeed
    metrics: ControllerMetrics
    workers: int = 2

    def __post_init__(self) -> None:
        self.queue = WorkQueue()

    def on_storyrun(self, kind: str, obj: dict[str, Any]) -> None:
        """Watch callback: queue the StoryRun."""
        meta = obj.get("metadata", {})
        self.queue.add(f"{meta.get('namespace', 'default')}/{meta.get('name')}")

    def on_binding(self, kind: str, obj: dict[str, Any]) -> None:
        """Watch callback: queue the StoryRun a TransportBinding belongs to."""
        ref = obj.get("spec", {}).get("storyRunRef") or {}
        if ref.get("name"):
            namespace = ref.get("namespace") or obj["metadata"].get("namespace", "default")
            self.queue.add(f"{namespace}/{ref['name']}")

    def reconcile(self, key: str) -> Plan | None:
        """Reconcile one StoryRun (blocking; run in a thread). Returns the applied plan, None
        when the StoryRun is gone. Touches no hub state: see :meth:`hand_over`."""
        namespace, _, name = key.partition("/")
        for _ in range(CONFLICT_RETRIES):
            raw = self.kube.get(STORYRUNS, namespace, name)
            if raw is None:
                return None
            run = parse_resource(raw, source=f"StoryRun {key}")
            assert isinstance(run, StoryRun)
            story = self._story(run)
            bindings = self._bindings(namespace)
            transport_ready = next(
                (c for c in run.status.conditions if c.type == "TransportReady"), None
            )
            waiting = (
                _age(transport_ready.last_transition_time)
                if transport_ready is not None and transport_ready.reason == "AwaitingTransport"
                else 0.0
            )
            plan = plan_reconcile(
                run,
                story,
                bindings,
                hub_endpoint=self.hub_endpoint,
                now=_now(),
                waiting_seconds=waiting,
                job_steps=self._job_steps(run, story),
            )
            try:
                self._apply(run, raw, plan)
            except ApiError as error:
                if error.status == 409:
                    continue  # someone wrote in between: read again and re-plan
                raise
            return plan
        raise ApiError(409, f"StoryRun {key} kept changing during {CONFLICT_RETRIES} tries")

    async def hand_over(self, key: str, plan: Plan | None) -> None:
        """Send the hub the topology change a reconcile decided (from the trio task)."""
        namespace, _, name = key.partition("/")
        if plan is None or plan.deleting:
            await self.topologies.remove(namespace, name)
        elif plan.topology is not None:
            await self.topologies.set(namespace, name, plan.topology)

    def report_failure(self, key: str, error: str) -> None:
        """Best effort: TransportReady=False/TransportFailed and a Warning event on the run."""
        namespace, _, name = key.partition("/")
        try:
            raw = self.kube.get(STORYRUNS, namespace, name)
            if raw is None:
                return
            run = parse_resource(raw, source=f"StoryRun {key}")
            assert isinstance(run, StoryRun)
            self._apply(run, raw, failure_plan(run, f"transport reconcile failed: {error}", _now()))
        except Exception as failure:  # noqa: BLE001 - reporting must not mask the retry
            log.info("could not report the failure of %s: %r", key, failure)

    def _story(self, run: StoryRun) -> Story | None:
        namespace = run.spec.story_ref.namespace or run.metadata.namespace
        raw = self.kube.get(STORIES, namespace, run.spec.story_ref.name)
        if raw is None:
            return None
        return parse_story(
            msgspec.json.encode(raw), source=f"Story {namespace}/{run.spec.story_ref.name}"
        )

    def _job_steps(self, run: StoryRun, story: Story | None) -> frozenset[str]:
        """The engram steps of ``story`` whose Engram runs in ``job`` mode (an Engram that is
        missing or unreadable counts as streaming)."""
        if story is None:
            return frozenset()
        found: set[str] = set()
        for step in story.spec.steps:
            if not step.is_engram or step.ref is None:
                continue
            namespace = step.ref.namespace or run.metadata.namespace
            raw = self.kube.get(ENGRAMS, namespace, step.ref.name)
            if raw is None:
                continue
            try:
                engram = parse_resource(raw, source=f"Engram {namespace}/{step.ref.name}")
            except ResourceError as error:
                log.warning("ignoring invalid Engram: %s", error)
                continue
            if isinstance(engram, Engram) and engram.spec.mode == "job":
                found.add(step.step_id)
        return frozenset(found)

    def _bindings(self, namespace: str) -> dict[str, TransportBinding]:
        items, _ = self.kube.list(TRANSPORTBINDINGS, namespace)
        found: dict[str, TransportBinding] = {}
        for item in items:
            try:
                binding = parse_resource(item, source="TransportBinding")
            except ResourceError as error:
                log.warning("ignoring invalid TransportBinding: %s", error)
                continue
            if isinstance(binding, TransportBinding):
                found[binding.metadata.name] = binding
        return found

    def _apply(self, run: StoryRun, raw: dict[str, Any], plan: Plan) -> None:
        meta = run.metadata
        version = meta.resource_version
        if plan.add_finalizer or plan.remove_finalizer:
            finalizers = [f for f in meta.finalizers if f != FINALIZER]
            if plan.add_finalizer:
                finalizers.append(FINALIZER)
            result = self.kube.patch(
                STORYRUNS,
                meta.namespace,
                meta.name,
                {"metadata": {"finalizers": finalizers, "resourceVersion": version}},
            )
            version = result["metadata"]["resourceVersion"]
        if plan.conditions:
            self.kube.patch(
                STORYRUNS,
                meta.namespace,
                meta.name,
                {
                    "metadata": {"resourceVersion": version},
                    "status": {
                        "conditions": condition_patch(plan.conditions, run.status.conditions)
                    },
                },
                status=True,
            )
        for binding in plan.bindings:
            ready = binding.ready
            self.kube.patch(
                TRANSPORTBINDINGS,
                binding.namespace,
                binding.name,
                {
                    "status": {
                        "endpoint": binding.endpoint,
                        "conditions": [
                            {
                                k: v
                                for k, v in {
                                    "type": "Ready",
                                    "status": ready.status,
                                    "reason": ready.reason,
                                    "message": ready.message,
                                    "lastTransitionTime": ready.last_transition_time,
                                }.items()
                                if v is not None
                            }
                        ],
                    }
                },
                status=True,
            )
        for event in plan.events:
            self.kube.record_event(
                meta.namespace,
                {
                    "apiVersion": "v1",
                    "kind": "Event",
                    "metadata": {"generateName": f"{meta.name}.", "namespace": meta.namespace},
                    "involvedObject": {
                        "apiVersion": run.api_version,
                        "kind": "StoryRun",
                        "name": meta.name,
                        "namespace": meta.namespace,
                        "uid": meta.uid or "",
                    },
                    "type": event.type,
                    "reason": event.reason,
                    "message": event.message,
                    "source": {"component": "bobravoz-transport-reconciler"},
                },
            )

    async def _work(self) -> None:
        while True:
            try:
                key = await self.queue.get()
            except trio.EndOfChannel:
                return
            started = time.perf_counter()
            try:
                plan = await trio.to_thread.run_sync(self.reconcile, key)
            except Exception as error:  # noqa: BLE001 - retried with backoff, counted
                reason = (
                    f"http_{error.status}" if isinstance(error, ApiError) else type(error).__name__
                )
                self.metrics.errors.labels(reason).inc()
                self.metrics.reconciles.labels("error").inc()
                log.warning("reconcile of %s failed (%r); retrying", key, error)
                self.queue.retry(key)
                await trio.to_thread.run_sync(self.report_failure, key, repr(error))
            else:
                await self.hand_over(key, plan)
                self.metrics.reconciles.labels("ok").inc()
                self.queue.forget(key)
                if plan is not None and plan.requeue_after is not None:
                    self.queue.add_after(key, plan.requeue_after)
            finally:
                self.metrics.duration.observe(time.perf_counter() - started)
                self.queue.done(key)
                self.metrics.queue_depth.set(self.queue.statistics().depth)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Watch and reconcile until cancelled."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.queue.run_timers)
            await nursery.start(watch_forever, self.kube, STORYRUNS, self.on_storyrun)
            await nursery.start(watch_forever, self.kube, TRANSPORTBINDINGS, self.on_binding)
            for _ in range(self.workers):
                nursery.start_soon(self._work)
            task_status.started()


async def run_when_leading(
    elector: LeaderElector | None,
    controller: TransportController,
    metrics: ControllerMetrics,
) -> None:
    """Run ``controller`` while this replica leads (always, without an elector)."""
    if elector is None:
        metrics.leader.set(1)
        await controller.run()
        return
    async with trio.open_nursery() as nursery:
        await nursery.start(elector.run)
        while True:
            await elector.wait_leading()
            metrics.leader.set(1)
            async with trio.open_nursery() as leading:
                leading.start_soon(controller.run)
                while elector.leading:
                    await elector.changed.wait()
                leading.cancel_scope.cancel()
            metrics.leader.set(0)
