"""Which topology routes each StoryRun, and the one way other components change that.

The registry is hub state: only the hub's own task reads or changes it. Other components
(the controller) send :class:`SetTopology` / :class:`RemoveTopology` over a
:class:`TopologyFeed`; the hub applies them in order, and releases a removed StoryRun's
bindings. Routing targets are computed once per topology and live on the :class:`RunRoutes`
built from it, so a new topology object can never be answered from a stale cache.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Final, final

import trio

from bobravoz.runtime.channel import ChannelLimits, DropPolicy
from bobravoz.runtime.hub.primitives import DEFAULT_INPUTS_MAX_BYTES, StoryPlan
from bobravoz.runtime.topology import Topology

#: Primitive steps the hub passes packets through (the Go hub's behaviour for these types).
PASS_THROUGH_PRIMITIVES: Final = frozenset({"condition", "parallel", "sleep"})


def engram_targets(topology: Topology, step: str) -> tuple[str, ...]:
    """The engram steps a packet from ``step`` reaches, walking through primitive steps.

    ``condition``, ``parallel`` and ``sleep`` pass packets on (the primitive path of
    :mod:`~bobravoz.runtime.hub.primitives` evaluates and delays them); ``stop`` and every
    other primitive end the path. Order follows the Story;
    each target appears once.
    """
    found: list[str] = []
    for edge in topology.downstream_of(step):
        node = topology.step(edge.target)
        if node.primitive is None:
            candidates: tuple[str, ...] = (node.id,)
        elif node.primitive in PASS_THROUGH_PRIMITIVES:
            candidates = engram_targets(topology, node.id)
        else:
            candidates = ()
        found.extend(target for target in candidates if target not in found)
    return tuple(found)


def step_limits(topology: Topology, step: str) -> ChannelLimits:
    """The buffer bound and drop policy of ``step``'s inbound edge (defaults without one)."""
    edges = topology.upstream_of(step)
    if not edges:
        return ChannelLimits()
    buffer = edges[0].buffer
    return ChannelLimits(
        max_messages=buffer.max_messages,
        max_bytes=buffer.max_bytes,
        policy=DropPolicy(buffer.drop_policy),
    )


@final
class RunRoutes:
    """One topology with everything the hub derives from it, computed once."""

    __slots__ = ("_limits", "_targets", "plan", "topology")

    def __init__(self, topology: Topology, *, inputs_max_bytes: int | None = None) -> None:
        self.topology = topology
        #: The Story's compiled primitives (None: a topology without its Story forwards only).
        self.plan = (
            StoryPlan(topology, inputs_max_bytes=inputs_max_bytes or DEFAULT_INPUTS_MAX_BYTES)
            if topology.story is not None
            else None
        )
        self._targets = {node.id: engram_targets(topology, node.id) for node in topology.steps}
        if self.plan is not None:
            for step in self.plan.evaluates:
                self._targets[step] = self.plan.targets(step)
        self._limits = {node.id: step_limits(topology, node.id) for node in topology.steps}

    def evaluates(self, step: str) -> bool:
        """Whether packets from ``step`` take the primitive path (templates, sleeps, joins)."""
        return self.plan is not None and step in self.plan.evaluates

    def has_step(self, step: str) -> bool:
        """Whether ``step`` is a step of this topology."""
        return step in self._targets

    def targets(self, step: str) -> tuple[str, ...]:
        """The engram steps ``step``'s packets go to (empty for an unknown step)."""
        return self._targets.get(step, ())

    def limits(self, step: str) -> ChannelLimits:
        """The buffer limits of ``step``."""
        return self._limits.get(step) or ChannelLimits()


@final
@dataclass(frozen=True, slots=True)
class SetTopology:
    """Route StoryRun ``namespace/storyrun`` by ``topology`` (replacing any earlier one)."""

    namespace: str
    storyrun: str
    topology: Topology


@final
@dataclass(frozen=True, slots=True)
class RemoveTopology:
    """Forget StoryRun ``namespace/storyrun``: its streams end and its buffers are released."""

    namespace: str
    storyrun: str


TopologyChange = SetTopology | RemoveTopology


@final
class TopologyRegistry:
    """Which :class:`RunRoutes` routes each StoryRun (owned by the hub's task).

    Local mode has one Story: every StoryRun in its namespace uses it (``fixed``). In a
    cluster the controller's changes arrive through a :class:`TopologyFeed`.
    """

    def __init__(self, fixed: Topology | None = None) -> None:
        #: Run requests' largest inputs (the hub sets it from its settings when it opens).
        self.inputs_max_bytes: int | None = None
        self._fixed_topology = fixed
        self._fixed: RunRoutes | None = None
        self._runs: dict[tuple[str, str], RunRoutes] = {}

    def __len__(self) -> int:
        return len(self._runs)

    def apply(self, change: TopologyChange) -> None:
        """Apply one change from the feed."""
        key = (change.namespace, change.storyrun)
        if isinstance(change, SetTopology):
            current = self._runs.get(key)
            if current is None or current.topology != change.topology:
                self._runs[key] = RunRoutes(change.topology, inputs_max_bytes=self.inputs_max_bytes)
        else:
            self._runs.pop(key, None)

    @property
    def fixed(self) -> RunRoutes | None:
        """Local mode's routes (built on first use, with the hub's settings)."""
        if self._fixed is None and self._fixed_topology is not None:
            self._fixed = RunRoutes(self._fixed_topology, inputs_max_bytes=self.inputs_max_bytes)
        return self._fixed

    def lookup(self, namespace: str, storyrun: str) -> RunRoutes | None:
        """The routes of that StoryRun, or None."""
        found = self._runs.get((namespace, storyrun))
        if found is None and self.fixed is not None and self.fixed.topology.namespace == namespace:
            return self.fixed
        return found


@final
class TopologyFeed:
    """A bounded, ordered channel of topology changes from other tasks to one hub."""

    def __init__(self, capacity: int = 1024) -> None:
        self._send, self._receive = trio.open_memory_channel[TopologyChange](capacity)

    async def set(self, namespace: str, storyrun: str, topology: Topology) -> None:
        """Ask the hub to route StoryRun ``namespace/storyrun`` by ``topology``."""
        await self._send.send(SetTopology(namespace, storyrun, topology))

    async def remove(self, namespace: str, storyrun: str) -> None:
        """Ask the hub to forget StoryRun ``namespace/storyrun``."""
        await self._send.send(RemoveTopology(namespace, storyrun))

    def close(self) -> None:
        """No more changes; the consumer ends after the queued ones."""
        self._send.close()

    async def changes(self) -> AsyncIterator[TopologyChange]:
        """The changes in order, until :meth:`close` (one consumer: the hub)."""
        async for change in self._receive:
            yield change
