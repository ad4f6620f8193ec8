"""One-for-one supervision on trio.

A :class:`Supervisor` owns a nursery; each child runs in its own cancel scope inside it. A
child that raises is restarted after an exponential backoff, alone; its siblings never notice.
Restarts are counted in a sliding window: the child that needs one restart more than
``max_restarts`` within ``within_seconds`` makes the supervisor escalate: it cancels every
child and the ``async with open_supervisor(...)`` block raises
:class:`~bobravoz.runtime.errors.SupervisorEscalation` from that child's error.
"""

from __future__ import annotations

import collections
import contextlib
import enum
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, final

import msgspec
import trio

from bobravoz.runtime.errors import SupervisorEscalation


@final
class RestartPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """Restart budget and backoff of a supervisor."""

    max_restarts: int = 5
    within_seconds: float = 30.0
    backoff_initial: float = 0.05
    backoff_max: float = 5.0
    backoff_multiplier: float = 2.0

    def __post_init__(self) -> None:
        if self.max_restarts < 0:
            raise ValueError(f"max_restarts must be >= 0, got {self.max_restarts}")
        if self.within_seconds <= 0:
            raise ValueError(f"within_seconds must be > 0, got {self.within_seconds}")
        if self.backoff_initial < 0 or self.backoff_max < self.backoff_initial:
            raise ValueError("backoff_initial must be >= 0 and <= backoff_max")
        if self.backoff_multiplier < 1:
            raise ValueError(f"backoff_multiplier must be >= 1, got {self.backoff_multiplier}")

    def backoff(self, consecutive: int) -> float:
        """Seconds to wait before the ``consecutive``-th restart in a row (1-based)."""
        delay = self.backoff_initial * self.backoff_multiplier ** max(0, consecutive - 1)
        return float(min(delay, self.backoff_max))


class Restart(enum.StrEnum):
    """When a child is restarted."""

    PERMANENT = "permanent"  # after any exit
    TRANSIENT = "transient"  # only after an exception
    TEMPORARY = "temporary"  # never


@final
class ChildStatistics(msgspec.Struct, frozen=True):
    """One child's restart count and last error."""

    name: str
    restarts: int
    last_error: str | None


@final
class SupervisorStatistics(msgspec.Struct, frozen=True):
    """A snapshot of a supervisor's children and restarts."""

    name: str
    children: tuple[ChildStatistics, ...]
    total_restarts: int
    escalated: bool


@final
class _Child:
    def __init__(self, name: str, restart: Restart) -> None:
        self.name = name
        self.restart = restart
        self.scope = trio.CancelScope()
        self.restarts = 0
        self.window: collections.deque[float] = collections.deque()
        self.last_error: BaseException | None = None
        self.stopped = False


@final
class Supervisor:
    """Supervises children in its nursery; obtain one from :func:`open_supervisor`."""

    def __init__(
        self,
        name: str,
        policy: RestartPolicy,
        nursery: trio.Nursery,
        on_restart: Callable[[str, BaseException], None] | None,
    ) -> None:
        self.name = name
        self.policy = policy
        self._nursery = nursery
        self._on_restart = on_restart
        self._children: dict[str, _Child] = {}
        self._total_restarts = 0
        self.escalation: SupervisorEscalation | None = None
        self._history: dict[str, ChildStatistics] = {}

    @property
    def children(self) -> tuple[str, ...]:
        """Names of the children running (or waiting to restart) now."""
        return tuple(self._children)

    def start_child(
        self,
        name: str,
        fn: Callable[..., Awaitable[object]],
        *args: Any,
        restart: Restart = Restart.TRANSIENT,
    ) -> None:
        """Start ``fn(*args)`` as child ``name`` (unique among running children)."""
        child = self._register(name, restart)
        self._nursery.start_soon(self._run_child, child, fn, args, trio.TASK_STATUS_IGNORED)

    async def start_child_ready(
        self,
        name: str,
        fn: Callable[..., Awaitable[object]],
        *args: Any,
        restart: Restart = Restart.TRANSIENT,
    ) -> Any:
        """Like :meth:`start_child` for a ``task_status`` function: returns its started value.

        Restarts call ``fn`` again with ``trio.TASK_STATUS_IGNORED``.
        """
        child = self._register(name, restart)
        return await self._nursery.start(self._run_child, child, fn, args)

    def _register(self, name: str, restart: Restart) -> _Child:
        if name in self._children:
            raise ValueError(f"supervisor {self.name!r} already runs a child named {name!r}")
        child = _Child(name, restart)
        self._children[name] = child
        return child

    def stop_child(self, name: str) -> bool:
        """Cancel child ``name`` for good (no restart); False if there is no such child."""
        child = self._children.get(name)
        if child is None:
            return False
        child.stopped = True
        child.scope.cancel()
        return True

    def cancel(self) -> None:
        """Cancel every child and the supervisor's nursery."""
        self._nursery.cancel_scope.cancel()

    async def _run_child(
        self,
        child: _Child,
        fn: Callable[..., Awaitable[object]],
        args: tuple[Any, ...],
        task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        status: trio.TaskStatus[Any] = task_status
        consecutive = 0
        try:
            while True:
                failed: Exception | None = None
                with child.scope:
                    try:
                        if status is trio.TASK_STATUS_IGNORED:
                            await fn(*args)
                        else:
                            await fn(*args, task_status=status)
                    except Exception as error:  # noqa: BLE001 - supervision is the point
                        failed = error
                status = trio.TASK_STATUS_IGNORED
                if child.stopped or child.scope.cancelled_caught:
                    return
                if failed is None:
                    if child.restart is not Restart.PERMANENT:
                        return
                    consecutive = 0
                elif child.restart is Restart.TEMPORARY:
                    child.last_error = failed
                    return
                else:
                    consecutive += 1
                    self._count_restart(child, failed)
                await trio.sleep(self.policy.backoff(max(consecutive, 1)))
                child.scope = trio.CancelScope()
        finally:
            self._children.pop(child.name, None)
            self._history[child.name] = ChildStatistics(
                child.name, child.restarts, repr(child.last_error) if child.last_error else None
            )

    def _count_restart(self, child: _Child, error: Exception) -> None:
        now = trio.current_time()
        window = child.window
        while window and now - window[0] > self.policy.within_seconds:
            window.popleft()
        child.last_error = error
        if len(window) >= self.policy.max_restarts:
            escalation = SupervisorEscalation(self.name, child.name, len(window))
            escalation.__cause__ = error
            self.escalation = escalation
            raise escalation
        window.append(now)
        child.restarts += 1
        self._total_restarts += 1
        if self._on_restart is not None:
            self._on_restart(child.name, error)

    def statistics(self) -> SupervisorStatistics:
        """A snapshot of running and finished children and the restart totals."""
        children = dict(self._history)
        for name, child in self._children.items():
            last = repr(child.last_error) if child.last_error else None
            children[name] = ChildStatistics(name, child.restarts, last)
        return SupervisorStatistics(
            self.name, tuple(children.values()), self._total_restarts, self.escalation is not None
        )


@contextlib.asynccontextmanager
async def open_supervisor(
    name: str,
    policy: RestartPolicy | None = None,
    *,
    on_restart: Callable[[str, BaseException], None] | None = None,
) -> AsyncIterator[Supervisor]:
    """Open a supervisor; the block waits for its children like a nursery does.

    Raises :class:`SupervisorEscalation` (not wrapped in a group) when a child spends the
    restart budget.
    """
    supervisor: Supervisor | None = None
    try:
        async with trio.open_nursery() as nursery:
            supervisor = Supervisor(name, policy or RestartPolicy(), nursery, on_restart)
            yield supervisor
    except BaseExceptionGroup as group:
        if supervisor is not None and supervisor.escalation is not None:
            matched, rest = group.split(SupervisorEscalation)
            if matched is not None and rest is None:
                raise supervisor.escalation from supervisor.escalation.__cause__
        raise
