"""One-for-one supervision on trio.

A :class:`Supervisor` owns a nursery; each child runs in its own cancel scope inside it. A
child that raises is restarted after an exponential backoff, alone; its siblings never notice.
Restarts are counted in a sliding window: the child that needs one restart more than
``max_restarts`` within ``within_seconds`` makes the supervisor escalate: it cancels every
child and the ``async with open_supervisor(...)`` block raises
:class:`~bobravoz.runtime.errors.SupervisorEscalation` from that child's error.

Every failure, whatever the child's :class:`Restart` kind, is logged with its traceback and
reported to the optional ``on_failure`` hook before the restart decision. A child's cancel
scope covers its runs *and* its restart backoffs, so :meth:`Supervisor.stop_child` is final
whenever it comes. Finished children leave a bounded history (``history_limit``) behind for
:meth:`Supervisor.statistics`.
"""

from __future__ import annotations

import collections
import contextlib
import enum
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, final

import msgspec
import trio

from bobravoz.runtime.errors import SupervisorEscalation

log = logging.getLogger(__name__)

#: A hook called with a child's name and the error it failed (or is restarted) with.
ChildHook = Callable[[str, BaseException], None]


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
    """A snapshot of a supervisor's children, restarts and failures.

    ``children`` holds the running children and the most recent finished ones (at most the
    supervisor's ``history_limit`` of those); ``total_restarts`` and ``total_failures`` are
    running totals over the supervisor's whole life.
    """

    name: str
    children: tuple[ChildStatistics, ...]
    total_restarts: int
    escalated: bool
    total_failures: int = 0


@final
class _Child:
    def __init__(self, name: str, restart: Restart) -> None:
        self.name = name
        self.restart = restart
        # One scope for the child's whole life, runs and backoffs alike: stop_child cancels it.
        self.scope = trio.CancelScope()
        self.restarts = 0
        self.window: collections.deque[float] = collections.deque()
        self.last_error: BaseException | None = None
        self.stopped = False

    def is_stopped(self) -> bool:
        # A call, not the attribute: awaits and hooks flip the flag under mypy's narrowing.
        return self.stopped

    def statistics(self) -> ChildStatistics:
        last = repr(self.last_error) if self.last_error is not None else None
        return ChildStatistics(self.name, self.restarts, last)


@final
class Supervisor:
    """Supervises children in its nursery; obtain one from :func:`open_supervisor`.

    ``on_failure(name, error)`` is called once per child failure (any restart kind), before
    the restart decision; ``on_restart(name, error)`` when a restart is scheduled. A hook
    that raises is logged and otherwise ignored. At most ``history_limit`` finished children
    are remembered for :meth:`statistics`, the oldest forgotten first.
    """

    def __init__(
        self,
        name: str,
        policy: RestartPolicy,
        nursery: trio.Nursery,
        on_restart: ChildHook | None = None,
        *,
        on_failure: ChildHook | None = None,
        history_limit: int = 64,
    ) -> None:
        if history_limit < 0:
            raise ValueError(f"history_limit must be >= 0, got {history_limit}")
        self.name = name
        self.policy = policy
        self._nursery = nursery
        self._on_restart = on_restart
        self._on_failure = on_failure
        self._children: dict[str, _Child] = {}
        self._total_restarts = 0
        self._failures = 0
        self.escalation: SupervisorEscalation | None = None
        self._history_limit = history_limit
        self._history: collections.OrderedDict[str, ChildStatistics] = collections.OrderedDict()

    @property
    def children(self) -> tuple[str, ...]:
        """Names of the children running (or waiting to restart) now; stopped ones excluded."""
        return tuple(self._children)

    @property
    def failures(self) -> int:
        """How many times children of this supervisor have failed (raised), in total."""
        return self._failures

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
        """Cancel child ``name`` for good (no restart); False if there is no such child.

        Final at any moment: before the child first runs, while it runs, or while it waits
        out a restart backoff. The child leaves :attr:`children` at once.
        """
        child = self._children.pop(name, None)
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
            with child.scope:
                while not child.is_stopped():  # checked before every (re)start
                    failed: Exception | None = None
                    try:
                        if status is trio.TASK_STATUS_IGNORED:
                            await fn(*args)
                        else:
                            await fn(*args, task_status=status)
                    except Exception as error:  # noqa: BLE001 - supervision is the point
                        failed = error
                    status = trio.TASK_STATUS_IGNORED
                    if failed is not None:
                        self._record_failure(child, failed)
                    if child.is_stopped():
                        return
                    if failed is None:
                        if child.restart is not Restart.PERMANENT:
                            return
                        consecutive = 0
                    elif child.restart is Restart.TEMPORARY:
                        return
                    else:
                        consecutive += 1
                        self._count_restart(child, failed)
                    # Inside child.scope: stop_child cancels the backoff too.
                    await trio.sleep(self.policy.backoff(max(consecutive, 1)))
        finally:
            if self._children.get(child.name) is child:
                del self._children[child.name]
            self._remember(child)

    def _record_failure(self, child: _Child, error: Exception) -> None:
        """Count, log and report one failure of ``child``; never raises an Exception."""
        self._failures += 1
        child.last_error = error
        log.error(
            "supervisor %r: child %r (%s) failed: %r",
            self.name,
            child.name,
            child.restart.value,
            error,
            exc_info=error,
        )
        self._call_hook("on_failure", self._on_failure, child, error)

    def _call_hook(
        self, what: str, hook: ChildHook | None, child: _Child, error: BaseException
    ) -> None:
        if hook is None:
            return
        try:
            hook(child.name, error)
        except Exception:  # a broken hook must not kill supervision
            log.exception("supervisor %r: %s hook failed for child %r", self.name, what, child.name)

    def _remember(self, child: _Child) -> None:
        history = self._history
        history.pop(child.name, None)
        if self._history_limit == 0:
            return
        history[child.name] = child.statistics()
        while len(history) > self._history_limit:
            history.popitem(last=False)

    def _count_restart(self, child: _Child, error: Exception) -> None:
        now = trio.current_time()
        window = child.window
        while window and now - window[0] > self.policy.within_seconds:
            window.popleft()
        if len(window) >= self.policy.max_restarts:
            escalation = SupervisorEscalation(self.name, child.name, len(window))
            escalation.__cause__ = error
            self.escalation = escalation
            raise escalation
        window.append(now)
        child.restarts += 1
        self._total_restarts += 1
        self._call_hook("on_restart", self._on_restart, child, error)

    def statistics(self) -> SupervisorStatistics:
        """A snapshot of running and recently finished children and the running totals."""
        children = dict(self._history)
        for name, child in self._children.items():
            children[name] = child.statistics()
        return SupervisorStatistics(
            self.name,
            tuple(children.values()),
            self._total_restarts,
            self.escalation is not None,
            self._failures,
        )


@contextlib.asynccontextmanager
async def open_supervisor(
    name: str,
    policy: RestartPolicy | None = None,
    *,
    on_restart: ChildHook | None = None,
    on_failure: ChildHook | None = None,
    history_limit: int = 64,
) -> AsyncIterator[Supervisor]:
    """Open a supervisor; the block waits for its children like a nursery does.

    ``on_failure`` is called for every child failure, ``on_restart`` for every restart
    scheduled; ``history_limit`` bounds the finished children kept for statistics. Raises
    :class:`SupervisorEscalation` (not wrapped in a group) when a child spends the restart
    budget.
    """
    if history_limit < 0:
        raise ValueError(f"history_limit must be >= 0, got {history_limit}")
    supervisor: Supervisor | None = None
    try:
        async with trio.open_nursery() as nursery:
            supervisor = Supervisor(
                name,
                policy or RestartPolicy(),
                nursery,
                on_restart,
                on_failure=on_failure,
                history_limit=history_limit,
            )
            yield supervisor
    except BaseExceptionGroup as group:
        if supervisor is not None and supervisor.escalation is not None:
            matched, rest = group.split(SupervisorEscalation)
            if matched is not None and rest is None:
                raise supervisor.escalation from supervisor.escalation.__cause__
        raise
