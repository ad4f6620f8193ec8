"""A de-duplicating, rate-limited work queue of object keys for reconcilers.

A key added while it is already queued is queued once; a key added while it is being
processed is queued again after processing ends (never processed twice at once). Failed keys
come back after a per-key exponential backoff; :meth:`WorkQueue.add_after` schedules a key
(the reconcile's ``requeue_after``). All timing uses trio's clock.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import final

import trio


@final
@dataclass(frozen=True, slots=True)
class QueueStatistics:
    """Queue depth and counters."""

    depth: int
    processing: int
    delayed: int
    added: int
    retries: int


@final
class WorkQueue:
    """Keys to reconcile; see the module docstring. No task starts in ``__init__``."""

    def __init__(self, *, base_delay: float = 0.05, max_delay: float = 30.0) -> None:
        self._queue: collections.deque[str] = collections.deque()
        self._queued: set[str] = set()
        self._processing: set[str] = set()
        self._dirty: set[str] = set()
        self._failures: collections.Counter[str] = collections.Counter()
        self._delayed: dict[str, float] = {}
        self._lot = trio.lowlevel.ParkingLot()
        self._timers_changed = trio.Event()
        self._closed = False
        self.base_delay = base_delay
        self.max_delay = max_delay
        self._added = 0
        self._retries = 0

    def add(self, key: str) -> None:
        """Queue ``key`` now (at most once; again after the current processing if busy)."""
        self._added += 1
        if key in self._processing:
            self._dirty.add(key)
            return
        if key in self._queued:
            return
        self._queued.add(key)
        self._queue.append(key)
        self._lot.unpark()

    def add_after(self, key: str, delay: float) -> None:
        """Queue ``key`` after ``delay`` seconds (an earlier schedule wins)."""
        when = trio.current_time() + max(0.0, delay)
        if key not in self._delayed or when < self._delayed[key]:
            self._delayed[key] = when
            self._timers_changed.set()

    def retry(self, key: str) -> float:
        """Schedule a failed ``key`` with its exponential backoff; return the delay."""
        self._failures[key] += 1
        self._retries += 1
        delay = float(min(self.max_delay, self.base_delay * 2 ** (self._failures[key] - 1)))
        self.add_after(key, delay)
        return delay

    def forget(self, key: str) -> None:
        """Reset ``key``'s failure backoff (after a successful reconcile)."""
        self._failures.pop(key, None)

    async def get(self) -> str:
        """Wait for the next key and mark it in processing; ``trio.EndOfChannel`` when closed."""
        while not self._queue:
            if self._closed:
                raise trio.EndOfChannel
            await self._lot.park()
        key = self._queue.popleft()
        self._queued.discard(key)
        self._processing.add(key)
        return key

    def done(self, key: str) -> None:
        """Mark ``key`` processed; re-queue it if it was added meanwhile."""
        self._processing.discard(key)
        if key in self._dirty:
            self._dirty.discard(key)
            self.add(key)

    def close(self) -> None:
        """Stop handing out keys (workers drain and then see the end)."""
        self._closed = True
        self._lot.unpark_all()

    async def run_timers(self) -> None:
        """Move delayed keys into the queue when due; runs until cancelled."""
        while True:
            now = trio.current_time()
            for key, when in sorted(self._delayed.items(), key=lambda item: item[1]):
                if when <= now:
                    del self._delayed[key]
                    self.add(key)
            self._timers_changed = trio.Event()
            next_due = min(self._delayed.values(), default=None)
            with trio.move_on_at(next_due if next_due is not None else float("inf")):
                await self._timers_changed.wait()

    def statistics(self) -> QueueStatistics:
        """A snapshot of the queue."""
        return QueueStatistics(
            len(self._queue), len(self._processing), len(self._delayed), self._added, self._retries
        )
