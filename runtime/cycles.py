"""Pipeline cycles per Story ``spec.concurrency``: how a packet's processing overlaps the
previous one's for the same key.

``mode``:

* ``parallel`` (the default) — cycles overlap; nothing is tracked.
* ``serial`` — a cycle waits until every earlier cycle for its key has exited, first come
  first served, with at most ``max_waiters`` waiting per key.
* ``cancelPrevious`` — a new cycle cancels the one in flight for its key (whose body sees
  ``trio.Cancelled`` at its next checkpoint; its ``async with`` block then ends quietly) and
  starts at once.

``scope`` picks the key (:func:`cycle_key`): ``storyrun`` tracks per StoryRun and step,
``participant`` per participant as well. A key's bookkeeping is removed when its last cycle
exits, so the tracker does not grow with the number of cycles.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Final, Literal, final, get_args

import trio

__all__ = [
    "DEFAULT_MAX_WAITERS",
    "ConcurrencyMode",
    "ConcurrencyScope",
    "Cycle",
    "CycleQueueFull",
    "CycleTracker",
    "cycle_key",
]

#: ``spec.concurrency.mode``.
ConcurrencyMode = Literal["parallel", "serial", "cancelPrevious"]
#: ``spec.concurrency.scope``.
ConcurrencyScope = Literal["storyrun", "participant"]

#: Cycles that may wait per key in ``serial`` mode before more are refused.
DEFAULT_MAX_WAITERS: Final = 1024

_MODES: Final = frozenset(get_args(ConcurrencyMode))


def cycle_key(
    storyrun_ns: str,
    storyrun: str,
    step: str,
    scope: ConcurrencyScope | str | None,
    metadata: Mapping[str, str],
) -> str:
    """``<ns>/<storyrun>:<step>``, plus ``:<participant>`` when ``scope`` is
    ``participant`` and metadata ``participant`` (else ``participant.id``) is not blank."""
    key = f"{storyrun_ns}/{storyrun}:{step}"
    if scope == "participant":
        participant = (
            metadata.get("participant", "").strip() or metadata.get("participant.id", "").strip()
        )
        if participant:
            key = f"{key}:{participant}"
    return key


class CycleQueueFull(Exception):
    """A ``serial`` cycle was refused: ``max_waiters`` cycles already wait for its key."""


@final
@dataclass(eq=False, slots=True)
class Cycle:
    """One processing cycle; its body runs inside :attr:`cancel_scope`."""

    key: str
    cancel_scope: trio.CancelScope = field(default_factory=trio.CancelScope)

    def cancel(self) -> None:
        """Cancel the body (it sees ``trio.Cancelled`` at its next checkpoint)."""
        self.cancel_scope.cancel()

    @property
    def cancelled(self) -> bool:
        """True once the cycle was cancelled (superseded or by :meth:`CycleTracker.cancel`)."""
        return self.cancel_scope.cancel_called


@dataclass(eq=False, slots=True)
class _Slot:
    """A key's state: the cycle in flight and, in serial mode, the FIFO lock and the number
    of cycles holding or waiting for it."""

    current: Cycle | None = None
    lock: trio.Lock = field(default_factory=trio.Lock)
    users: int = 0


@final
class CycleTracker:
    """Cycles per key under one concurrency ``mode``.

    ``counts`` (for metrics): ``started``, ``cancelled`` (superseded in ``cancelPrevious`` or
    cancelled by :meth:`cancel`), ``waited`` (a serial cycle had to queue) and ``rejected``
    (:class:`CycleQueueFull`).
    """

    def __init__(self, mode: ConcurrencyMode, *, max_waiters: int = DEFAULT_MAX_WAITERS) -> None:
        if mode not in _MODES:
            raise ValueError(f"concurrency mode {mode!r}: one of parallel, serial, cancelPrevious")
        if max_waiters < 0:
            raise ValueError(f"max_waiters {max_waiters}: must not be negative")
        self.mode: Final = mode
        self.max_waiters: Final = max_waiters
        self.counts: Counter[str] = Counter()
        self._slots: dict[str, _Slot] = {}

    def __len__(self) -> int:
        """Keys with a cycle in flight or waiting."""
        return len(self._slots)

    @asynccontextmanager
    async def cycle(self, key: str) -> AsyncIterator[Cycle]:
        """Run the ``async with`` body as a cycle for ``key``.

        The body runs inside the yielded :class:`Cycle`'s cancel scope; when that scope is
        cancelled (a newer cycle in ``cancelPrevious``, or :meth:`cancel`) the block ends
        without raising and :attr:`Cycle.cancelled` is True. In ``serial`` mode entering may
        wait for earlier cycles (if the waiting task is cancelled, it leaves the queue and
        the others keep their turns) or raise :class:`CycleQueueFull`.
        """
        cycle = Cycle(key)
        if self.mode == "parallel":
            self.counts["started"] += 1
            with cycle.cancel_scope:
                yield cycle
        elif self.mode == "cancelPrevious":
            slot = self._slots.get(key)
            if slot is None:
                slot = self._slots[key] = _Slot()
            elif slot.current is not None and not slot.current.cancelled:
                slot.current.cancel()
                self.counts["cancelled"] += 1
            slot.current = cycle
            self.counts["started"] += 1
            try:
                with cycle.cancel_scope:
                    yield cycle
            finally:
                if slot.current is cycle:
                    del self._slots[key]
        else:
            slot = self._join_queue(key)
            try:
                if slot.lock.locked():
                    self.counts["waited"] += 1
                await slot.lock.acquire()
                try:
                    slot.current = cycle
                    self.counts["started"] += 1
                    with cycle.cancel_scope:
                        yield cycle
                finally:
                    slot.current = None
                    slot.lock.release()
            finally:
                slot.users -= 1
                if slot.users == 0:
                    del self._slots[key]

    def cancel(self, key: str) -> bool:
        """Cancel the cycle in flight for ``key``; True when there was one. Cycles waiting
        their turn (``serial``) are not affected. Untracked in ``parallel`` mode."""
        slot = self._slots.get(key)
        if slot is None or slot.current is None or slot.current.cancelled:
            return False
        slot.current.cancel()
        self.counts["cancelled"] += 1
        return True

    def _join_queue(self, key: str) -> _Slot:
        """The key's slot with one more user, or :class:`CycleQueueFull`."""
        slot = self._slots.get(key)
        if slot is None:
            slot = self._slots[key] = _Slot()
        elif slot.users - (1 if slot.lock.locked() else 0) >= self.max_waiters:
            self.counts["rejected"] += 1
            raise CycleQueueFull(
                f"{self.max_waiters} cycles already wait for {key!r} (serial concurrency)"
            )
        slot.users += 1
        return slot
