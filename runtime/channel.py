"""Bounded channels: capacity in messages *and* bytes, a declared policy when full, and leases.

:class:`BufferCore` is the sans-IO heart (no await): it decides what is accepted, what must
wait and what is dropped, and reports every drop. :class:`BoundedChannel` puts trio around it:
any number of producers, one consumer at a time (a restarted actor picks up the same buffer).
Policies: ``block`` (wait for room: backpressure, the default), ``drop_oldest`` (evict the
oldest until the new item fits), ``drop_newest`` (refuse the new item). An item larger than
the byte capacity can never fit and is refused as ``oversize`` under every policy (that is
loss, not a declared drop).

**Leases: hand-offs that cannot lose.** A consumer that must await after taking items (to
write them to a stream) takes them with :meth:`BoundedChannel.lease`: the items leave the
queue but stay owed. The consumer :meth:`~Lease.commit`\\ s what it handed on; whatever is
not committed when the ``with`` block ends — normally, by an exception or by cancellation —
goes back to the *front* of the channel in its original order. Leased items do not count
against the capacity (they are on their way out); a give-back may overshoot the capacity by
at most one batch, which blocked senders then wait out.

**Budgets.** Channels may share a :class:`MemoryBudget` (the hub's bound on all buffered
bytes). An item that fits its channel but not the budget is handled by the channel's policy:
``block`` waits for any channel sharing the budget to free bytes, the drop policies drop
(reason ``budget``, counted as loss: no policy of the step asked for it).

Every item that enters is accounted for:
``offered + requeued = taken + dropped + depth + in_flight``
(``dropped`` over every reason), checked by a hypothesis state machine.
"""

from __future__ import annotations

import collections
import enum
import operator
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any, Final, Generic, TypeVar, final

import msgspec
import trio

T = TypeVar("T")


class DropPolicy(enum.StrEnum):
    """What a full channel does with a new item."""

    BLOCK = "block"
    DROP_OLDEST = "drop_oldest"
    DROP_NEWEST = "drop_newest"


class DropReason(enum.StrEnum):
    """Why an item left a channel without being taken (a metric label).

    Only :data:`POLICY_REASONS` are declared drops; every other reason is loss.
    """

    DROP_OLDEST = "drop_oldest"
    DROP_NEWEST = "drop_newest"
    OVERSIZE = "oversize"
    BUDGET = "budget"
    CLOSED = "closed"


#: Reasons a declared drop policy asked for; anything else is loss.
POLICY_REASONS: frozenset[str] = frozenset({DropReason.DROP_OLDEST, DropReason.DROP_NEWEST})


def is_policy_drop(reason: str) -> bool:
    """Whether ``reason`` names a drop a declared policy asked for (not loss)."""
    return reason in POLICY_REASONS


@final
class ChannelLimits(msgspec.Struct, frozen=True, kw_only=True):
    """Capacity and policy of one channel."""

    max_messages: int = 1000
    max_bytes: int = 10 * 1024 * 1024
    policy: DropPolicy = DropPolicy.BLOCK

    def __post_init__(self) -> None:
        if self.max_messages < 1:
            raise ValueError(f"max_messages must be >= 1, got {self.max_messages}")
        if self.max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1, got {self.max_bytes}")


@final
class MemoryBudget:
    """Bytes shared by many channels (buffered plus leased), bounded by ``limit``."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"budget limit must be >= 1, got {limit}")
        self.limit = limit
        self.used = 0
        self._waiters = trio.lowlevel.ParkingLot()

    def fits(self, size: int) -> bool:
        """Whether ``size`` more bytes fit under the limit."""
        return self.used + size <= self.limit

    def release(self, size: int) -> None:
        """Give ``size`` bytes back and wake senders waiting for room."""
        self.used -= size
        if self._waiters:
            self._waiters.unpark_all()

    async def wait(self) -> None:
        """Park until some bytes are released (the caller re-checks)."""
        await self._waiters.park()


@final
class Offer(msgspec.Struct, Generic[T], frozen=True):
    """The outcome of :meth:`BufferCore.offer`.

    ``accepted``: the item is buffered. ``must_wait``: (``block`` only) it does not fit now;
    offer it again later (``budget``: it is the shared budget, not the channel, that is
    full). ``dropped``: items that left because of this offer, with reasons.
    """

    accepted: bool
    must_wait: bool = False
    budget: bool = False
    dropped: tuple[tuple[T, int, DropReason], ...] = ()


#: The outcome of most offers (immutable, so one instance serves them all).
_ACCEPTED: Final[Offer[Any]] = Offer(accepted=True)

#: The parts of an :data:`Entry`, as C-level getters for the batch paths.
_ITEM: Final = operator.itemgetter(0)
_SIZE: Final = operator.itemgetter(1)

#: One buffered item and its size in bytes.
Entry = tuple[T, int]


@final
class BufferCore(Generic[T]):
    """The FIFO and its accounting, with no I/O and no await."""

    def __init__(self, limits: ChannelLimits, budget: MemoryBudget | None = None) -> None:
        self.limits = limits
        self.budget = budget
        self._items: collections.deque[tuple[T, int]] = collections.deque()
        self.depth_bytes = 0
        self.in_flight = 0
        self.in_flight_bytes = 0
        self.offered = 0
        self.requeued = 0
        self.accepted = 0
        self.taken = 0
        self.drops: collections.Counter[str] = collections.Counter()

    @property
    def depth(self) -> int:
        """Items buffered now (leased items excluded)."""
        return len(self._items)

    def fits(self, size: int) -> bool:
        """Whether an item of ``size`` bytes fits the channel without evicting anything."""
        return (
            len(self._items) < self.limits.max_messages
            and self.depth_bytes + size <= self.limits.max_bytes
        )

    def budget_fits(self, size: int) -> bool:
        """Whether the shared memory budget has room for ``size`` more bytes."""
        return self.budget is None or self.budget.fits(size)

    def offer(self, item: T, size: int) -> Offer[T]:
        """Buffer ``item`` if the policy allows; see :class:`Offer` for the outcome."""
        self.offered += 1
        limits = self.limits
        if size > limits.max_bytes:
            self.drops[DropReason.OVERSIZE] += 1
            return Offer(accepted=False, dropped=((item, size, DropReason.OVERSIZE),))
        items = self._items
        budget = self.budget
        if (
            len(items) < limits.max_messages
            and self.depth_bytes + size <= limits.max_bytes
            and (budget is None or budget.used + size <= budget.limit)
        ):
            # the common case, inlined (``fits``, ``budget_fits``, ``_append``)
            items.append((item, size))
            self.depth_bytes += size
            self.accepted += 1
            if budget is not None:
                budget.used += size
            return _ACCEPTED
        if limits.policy is DropPolicy.BLOCK:
            self.offered -= 1  # offered again later
            return Offer(accepted=False, must_wait=True, budget=self.fits(size))
        if limits.policy is DropPolicy.DROP_NEWEST:
            reason = DropReason.DROP_NEWEST if not self.fits(size) else DropReason.BUDGET
            self.drops[reason] += 1
            return Offer(accepted=False, dropped=((item, size, reason),))
        evicted: list[tuple[T, int, DropReason]] = []
        while self._items and not (self.fits(size) and self.budget_fits(size)):
            old, old_size = self._items.popleft()
            self._release_bytes(old_size)
            self.drops[DropReason.DROP_OLDEST] += 1
            evicted.append((old, old_size, DropReason.DROP_OLDEST))
        if not self.budget_fits(size):
            self.drops[DropReason.BUDGET] += 1
            return Offer(accepted=False, dropped=(*evicted, (item, size, DropReason.BUDGET)))
        self._append(item, size)
        return Offer(accepted=True, dropped=tuple(evicted))

    def _append(self, item: T, size: int) -> None:
        self._items.append((item, size))
        self.depth_bytes += size
        self.accepted += 1
        if self.budget is not None:
            self.budget.used += size

    def _release_bytes(self, size: int) -> None:
        self.depth_bytes -= size
        if self.budget is not None:
            self.budget.release(size)

    def offer_run(self, items: list[T], sizes: list[int]) -> int:
        """Buffer the leading ``items`` (of ``sizes`` bytes) that fit as they are (no drop,
        no wait); return how many. The caller offers the rest one by one (:meth:`offer`)."""
        limits = self.limits
        budget = self.budget
        room = limits.max_messages - len(self._items)
        byte_room = limits.max_bytes - self.depth_bytes
        if budget is not None:
            byte_room = min(byte_room, budget.limit - budget.used)
        total = 0
        count = 0
        for size in sizes[:room] if room > 0 else ():
            if total + size > byte_room:
                break
            total += size
            count += 1
        if count:
            self._items.extend(zip(items[:count], sizes[:count], strict=True))
            self.depth_bytes += total
            self.offered += count
            self.accepted += count
            if budget is not None:
                budget.used += total
        return count

    def can_bypass(self, size: int) -> bool:
        """Whether an item of ``size`` bytes may go straight to the consumer: nothing is
        buffered or leased (it would overtake nothing) and it would have fitted."""
        return not self._items and not self.in_flight and size <= self.limits.max_bytes

    def bypassed(self, count: int = 1) -> None:
        """Count ``count`` items that went straight to the consumer: offered, accepted and
        taken."""
        self.offered += count
        self.accepted += count
        self.taken += count

    def take(self, max_items: int | None = None) -> list[T]:
        """Remove and return up to ``max_items`` items (all when None), oldest first."""
        return [item for item, _size in self.settle(self.lease(max_items))]

    def lease(self, max_items: int | None = None) -> list[Entry[T]]:
        """Move up to ``max_items`` entries from the queue to *in flight* (oldest first)."""
        items = self._items
        count = len(items) if max_items is None else min(max_items, len(items))
        if count == len(items):
            leased = list(items)
            items.clear()
        else:
            leased = [items.popleft() for _ in range(count)]
        size = sum(map(_SIZE, leased))
        self.depth_bytes -= size
        self.in_flight += count
        self.in_flight_bytes += size
        return leased

    def settle(self, entries: list[Entry[T]]) -> list[Entry[T]]:
        """The leased ``entries`` were handed on: they leave the channel's accounting."""
        size = sum(map(_SIZE, entries))
        self.in_flight -= len(entries)
        self.in_flight_bytes -= size
        self.taken += len(entries)
        if self.budget is not None and size:
            self.budget.release(size)
        return entries

    def restore(self, entries: Iterable[Entry[T]]) -> int:
        """Put leased ``entries`` back at the front, in their order; return how many."""
        entries = list(entries)
        size = sum(entry[1] for entry in entries)
        self._items.extendleft(reversed(entries))
        self.depth_bytes += size
        self.in_flight -= len(entries)
        self.in_flight_bytes -= size
        return len(entries)

    def requeue(self, entries: Iterable[Entry[T]]) -> int:
        """Put items that had already been settled back at the front (e.g. reclaimed from a
        stream that never wrote them); counted in ``requeued`` so that
        ``offered + requeued = taken + dropped + depth + in_flight`` holds."""
        entries = list(entries)
        size = sum(entry[1] for entry in entries)
        self._items.extendleft(reversed(entries))
        self.depth_bytes += size
        self.requeued += len(entries)
        if self.budget is not None:
            self.budget.used += size
        return len(entries)

    def clear(self, reason: str) -> list[Entry[T]]:
        """Remove everything queued, counted as dropped for ``reason``; return the entries."""
        items = list(self._items)
        self._items.clear()
        self._release_bytes(self.depth_bytes)
        self.drops[reason] += len(items)
        return items


@final
class ChannelStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """A snapshot of a channel's state and counters."""

    name: str
    depth: int
    depth_bytes: int
    in_flight: int
    in_flight_bytes: int
    max_messages: int
    max_bytes: int
    policy: DropPolicy
    offered: int
    requeued: int
    sent: int
    received: int
    dropped: dict[str, int]
    blocked_senders: int


#: Called once for every item a channel drops: (reason, item, size in bytes).
DropHook = Callable[[str, T, int], None]


@final
class Lease(Generic[T]):
    """Items taken from a channel and still owed to it (see the module docstring).

    ``items`` are the leased items in order. Use as a ``with`` block: :meth:`commit` the
    items handed on (from the front); the rest return to the channel's front on exit.
    """

    __slots__ = ("_channel", "_entries", "items")

    def __init__(self, channel: BoundedChannel[T], entries: list[Entry[T]]) -> None:
        self._channel = channel
        self._entries = entries
        self.items = list(map(_ITEM, entries))

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def size(self) -> int:
        """Bytes still owed."""
        return sum(entry[1] for entry in self._entries)

    def commit(self, count: int | None = None) -> None:
        """The first ``count`` owed items (all when None) were handed on for good."""
        entries = self._entries
        count = len(entries) if count is None else count
        self._channel._settle(entries[:count])  # noqa: SLF001 - the lease is the channel's
        del entries[:count]
        del self.items[:count]

    def give_back(self) -> int:
        """Return every item still owed to the front of the channel; return how many."""
        entries, self._entries = self._entries, []
        self.items = []
        return self._channel._restore(entries) if entries else 0  # noqa: SLF001

    def __enter__(self) -> Lease[T]:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._entries:
            self.give_back()


@final
class BoundedChannel(Generic[T]):
    """A bounded, policy-governed channel (see the module docstring). No task is started."""

    def __init__(
        self,
        limits: ChannelLimits,
        *,
        name: str,
        on_drop: DropHook[T] | None = None,
        budget: MemoryBudget | None = None,
    ) -> None:
        self.name = name
        self._core: BufferCore[T] = BufferCore(limits, budget)
        self._on_drop = on_drop
        self._closed = False
        self._senders = trio.lowlevel.ParkingLot()  # waiting for room
        self._receivers = trio.lowlevel.ParkingLot()  # waiting for items
        self._emptied = trio.lowlevel.ParkingLot()
        #: Set by the consumer while it can take items directly (see :meth:`send_nowait`):
        #: it takes the leading items it can and returns how many.
        self.handoff: Callable[[list[T]], int] | None = None

    @property
    def limits(self) -> ChannelLimits:
        """The channel's capacity and policy."""
        return self._core.limits

    @property
    def depth(self) -> int:
        """Items buffered now (cheaper than :meth:`statistics` on hot paths)."""
        return self._core.depth

    @property
    def in_flight(self) -> int:
        """Items leased and not yet committed or given back."""
        return self._core.in_flight

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def send_run_nowait(self, items: list[T], sizes: list[int]) -> int:
        """Offer the leading ``items`` (of ``sizes`` bytes) in one call: each goes straight to
        an idle consumer (see :meth:`send_nowait`) or into the buffer while it fits as it is;
        returns how many were taken. The caller offers the rest with :meth:`send_nowait`
        (which drops by policy or raises ``trio.WouldBlock``). Raises
        ``trio.ClosedResourceError`` after :meth:`close`."""
        if self._closed:
            raise trio.ClosedResourceError(f"channel {self.name} is closed")
        if self._senders:
            return 0  # senders wait for room: the one-by-one path keeps them first
        core = self._core
        taken = 0
        handoff = self.handoff
        if handoff is not None and core.can_bypass(0):
            fitting = 0  # an item over the channel's byte limit is the buffer's to refuse
            limit = core.limits.max_bytes
            while fitting < len(items) and sizes[fitting] <= limit:
                fitting += 1
            if fitting:
                taken = handoff(items if fitting == len(items) else items[:fitting])
                core.bypassed(taken)
            if taken == len(items):
                return taken
        buffered = core.offer_run(items[taken:], sizes[taken:])
        if buffered:
            self._accepted()
        return taken + buffered

    def accepts_now(self, size: int) -> bool:
        """Whether :meth:`send_nowait` of an item of ``size`` bytes would not raise
        ``trio.WouldBlock`` (a drop policy never makes a sender wait)."""
        if self._closed or self._core.limits.policy is not DropPolicy.BLOCK:
            return True
        core = self._core
        return not self._senders and core.fits(size) and core.budget_fits(size)

    def _report(self, dropped: tuple[tuple[T, int, DropReason], ...]) -> None:
        if self._on_drop is not None:
            for item, size, reason in dropped:
                self._on_drop(reason, item, size)

    def _accepted(self) -> None:
        if self._receivers:
            self._receivers.unpark()

    def send_nowait(self, item: T, size: int) -> bool:
        """Offer ``item`` now: True if buffered, False if dropped (by policy or as loss).

        Raises ``trio.WouldBlock`` under ``block`` when it does not fit (or other senders are
        already waiting: FIFO fairness), ``trio.ClosedResourceError`` after :meth:`close`.
        When nothing is buffered, leased or waiting, the :attr:`handoff` (if any) may take
        the item straight to the consumer: it is counted as offered and taken at once.
        """
        if self._closed:
            raise trio.ClosedResourceError(f"channel {self.name} is closed")
        if self._senders:
            if self._core.limits.policy is DropPolicy.BLOCK:
                raise trio.WouldBlock
        elif self.handoff is not None and self._core.can_bypass(size) and self.handoff([item]):
            self._core.bypassed()
            return True
        offer = self._core.offer(item, size)
        if offer.dropped:
            self._report(offer.dropped)
        if offer.must_wait:
            raise trio.WouldBlock
        if offer.accepted:
            self._accepted()
        return offer.accepted

    async def send(self, item: T, size: int) -> bool:
        """Offer ``item``, waiting for room under ``block``: True if buffered, False if dropped.

        Cancel-atomic: either the item was offered (and the call returns) or, cancelled while
        waiting, nothing was left behind.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            accepted = self.send_nowait(item, size)
        except trio.WouldBlock:
            pass
        else:
            await trio.lowlevel.cancel_shielded_checkpoint()
            return accepted
        while True:
            await self.wait_room(size)
            try:
                return self.send_nowait_after_wait(item, size)
            except trio.WouldBlock:
                continue

    async def wait_room(self, size: int) -> None:
        """Wait until an item of ``size`` bytes would be accepted now (nothing is offered).

        Raises ``trio.ClosedResourceError`` if the channel closes meanwhile.
        """
        core = self._core
        while True:
            if self._closed:
                raise trio.ClosedResourceError(f"channel {self.name} is closed")
            if core.limits.policy is not DropPolicy.BLOCK or size > core.limits.max_bytes:
                await trio.lowlevel.checkpoint()
                return
            if core.fits(size):
                if core.budget_fits(size):
                    await trio.lowlevel.checkpoint()
                    return
                assert core.budget is not None
                await core.budget.wait()
            else:
                await self._senders.park()

    def send_nowait_after_wait(self, item: T, size: int) -> bool:
        """Offer ``item`` right after :meth:`wait_room` (skips the FIFO-fairness check)."""
        if self._closed:
            raise trio.ClosedResourceError(f"channel {self.name} is closed")
        offer = self._core.offer(item, size)
        if offer.dropped:
            self._report(offer.dropped)
        if offer.must_wait:
            # Someone else took the room between the wake-up and now: queue ourselves again.
            raise trio.WouldBlock
        if offer.accepted:
            self._accepted()
        if self._senders and self._core.fits(0):
            self._senders.unpark()
        return offer.accepted

    def _room_made(self) -> None:
        if self._senders:
            self._senders.unpark()
        if self._core.depth == 0 and self._emptied:
            self._emptied.unpark_all()

    def receive_nowait(self) -> T:
        """Take the oldest item; ``trio.WouldBlock`` when empty, ``trio.EndOfChannel`` when
        closed and drained."""
        if self._core.depth:
            item = self._core.take(1)[0]
            self._room_made()
            return item
        if self._closed:
            raise trio.EndOfChannel
        raise trio.WouldBlock

    async def receive(self) -> T:
        """Wait for and take the oldest item (``trio.EndOfChannel`` once closed and drained)."""
        return (await self.receive_batch(1))[0]

    async def _wait_items(self) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        while not self._core.depth:
            if self._closed:
                raise trio.EndOfChannel
            await self._receivers.park()

    async def receive_batch(self, max_items: int = 256) -> list[T]:
        """Wait for at least one item, then take all that are ready (at most ``max_items``).

        For consumers that hand items on without awaiting; one that awaits after taking
        uses :meth:`lease` instead.
        """
        await self._wait_items()
        items = self._core.take(max_items)
        self._after_take()
        await trio.lowlevel.cancel_shielded_checkpoint()
        return items

    async def lease(self, max_items: int = 256) -> Lease[T]:
        """Wait for at least one item, then lease all that are ready (at most ``max_items``).

        Cancellation while waiting takes nothing. Use the result as a ``with`` block.
        """
        await self._wait_items()
        return self.lease_nowait(max_items)

    def lease_nowait(self, max_items: int = 256) -> Lease[T]:
        """Lease what is ready now (possibly nothing)."""
        lease = Lease(self, self._core.lease(max_items))
        if lease.items:
            self._after_take()
        return lease

    def _after_take(self) -> None:
        self._room_made()
        if self._core.depth and self._receivers:
            self._receivers.unpark()

    def _settle(self, entries: list[Entry[T]]) -> None:
        self._core.settle(entries)

    def _restore(self, entries: list[Entry[T]]) -> int:
        count = self._core.restore(entries)
        self._accepted()
        return count

    def requeue(self, items: Iterable[tuple[T, int]]) -> int:
        """Put items already handed on (and given back by a stream that never wrote them) at
        the front, in their order; return how many."""
        count = self._core.requeue(items)
        if count:
            self._accepted()
        return count

    def close(self) -> None:
        """No more sends: blocked senders get ``ClosedResourceError``; receivers drain, then
        get ``EndOfChannel``."""
        self._closed = True
        self._senders.unpark_all()
        self._receivers.unpark_all()
        budget = self._core.budget
        if budget is not None:
            budget.release(0)

    def discard(self, reason: str = DropReason.CLOSED) -> int:
        """Drop everything buffered, each reported with ``reason``; return how many."""
        items = self._core.clear(reason)
        if self._on_drop is not None:
            for item, size in items:
                self._on_drop(reason, item, size)
        self._room_made()
        return len(items)

    async def wait_empty(self) -> None:
        """Return once nothing is buffered."""
        while self._core.depth:
            await self._emptied.park()
        await trio.lowlevel.checkpoint()

    def statistics(self) -> ChannelStatistics:
        """A frozen snapshot of depth, limits and counters."""
        core = self._core
        return ChannelStatistics(
            name=self.name,
            depth=core.depth,
            depth_bytes=core.depth_bytes,
            in_flight=core.in_flight,
            in_flight_bytes=core.in_flight_bytes,
            max_messages=core.limits.max_messages,
            max_bytes=core.limits.max_bytes,
            policy=core.limits.policy,
            offered=core.offered,
            requeued=core.requeued,
            sent=core.accepted,
            received=core.taken,
            dropped=dict(core.drops),
            blocked_senders=len(self._senders),
        )
