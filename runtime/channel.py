"""Bounded channels: capacity in messages *and* bytes, with a declared policy when full.

:class:`BufferCore` is the sans-IO heart (no await): it decides what is accepted, what must
wait and what is dropped, and reports every drop. :class:`BoundedChannel` puts trio around it:
any number of producers, one consumer at a time (a restarted actor picks up the same buffer).
Policies: ``block`` (wait for room: backpressure, the default), ``drop_oldest`` (evict the
oldest until the new item fits), ``drop_newest`` (refuse the new item). An item larger than
the byte capacity can never fit and is dropped as ``oversize`` under every policy.
"""

from __future__ import annotations

import collections
import enum
from collections.abc import Callable
from typing import Generic, TypeVar, final

import msgspec
import trio

T = TypeVar("T")


class DropPolicy(enum.StrEnum):
    """What a full channel does with a new item."""

    BLOCK = "block"
    DROP_OLDEST = "drop_oldest"
    DROP_NEWEST = "drop_newest"


class DropReason(enum.StrEnum):
    """Why an item left a channel without being received (a metric label)."""

    DROP_OLDEST = "drop_oldest"
    DROP_NEWEST = "drop_newest"
    OVERSIZE = "oversize"
    CLOSED = "closed"


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
class Offer(msgspec.Struct, Generic[T], frozen=True):
    """The outcome of :meth:`BufferCore.offer`.

    ``accepted``: the item is buffered. ``must_wait``: (``block`` only) it does not fit now;
    offer it again later. ``dropped``: items that left because of this offer, with reasons.
    """

    accepted: bool
    must_wait: bool = False
    dropped: tuple[tuple[T, int, DropReason], ...] = ()


@final
class BufferCore(Generic[T]):
    """The FIFO and its accounting, with no I/O and no await."""

    def __init__(self, limits: ChannelLimits) -> None:
        self.limits = limits
        self._items: collections.deque[tuple[T, int]] = collections.deque()
        self.depth_bytes = 0
        self.accepted = 0
        self.taken = 0
        self.drops: collections.Counter[DropReason] = collections.Counter()

    @property
    def depth(self) -> int:
        """Items buffered now."""
        return len(self._items)

    def fits(self, size: int) -> bool:
        """Whether an item of ``size`` bytes fits without evicting anything."""
        return (
            len(self._items) < self.limits.max_messages
            and self.depth_bytes + size <= self.limits.max_bytes
        )

    def offer(self, item: T, size: int) -> Offer[T]:
        """Buffer ``item`` if the policy allows; see :class:`Offer` for the outcome."""
        limits = self.limits
        if size > limits.max_bytes:
            self.drops[DropReason.OVERSIZE] += 1
            return Offer(accepted=False, dropped=((item, size, DropReason.OVERSIZE),))
        if self.fits(size):
            self._append(item, size)
            return Offer(accepted=True)
        if limits.policy is DropPolicy.BLOCK:
            return Offer(accepted=False, must_wait=True)
        if limits.policy is DropPolicy.DROP_NEWEST:
            self.drops[DropReason.DROP_NEWEST] += 1
            return Offer(accepted=False, dropped=((item, size, DropReason.DROP_NEWEST),))
        evicted: list[tuple[T, int, DropReason]] = []
        while not self.fits(size):
            old, old_size = self._items.popleft()
            self.depth_bytes -= old_size
            self.drops[DropReason.DROP_OLDEST] += 1
            evicted.append((old, old_size, DropReason.DROP_OLDEST))
        self._append(item, size)
        return Offer(accepted=True, dropped=tuple(evicted))

    def _append(self, item: T, size: int) -> None:
        self._items.append((item, size))
        self.depth_bytes += size
        self.accepted += 1

    def take(self, max_items: int | None = None) -> list[T]:
        """Remove and return up to ``max_items`` items (all when None), oldest first."""
        count = len(self._items) if max_items is None else min(max_items, len(self._items))
        taken: list[T] = []
        for _ in range(count):
            item, size = self._items.popleft()
            self.depth_bytes -= size
            taken.append(item)
        self.taken += count
        return taken

    def clear(self) -> list[tuple[T, int]]:
        """Remove everything, returning (item, size) pairs (the caller reports them)."""
        items = list(self._items)
        self._items.clear()
        self.depth_bytes = 0
        return items


@final
class ChannelStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """A snapshot of a channel's state and counters."""

    name: str
    depth: int
    depth_bytes: int
    max_messages: int
    max_bytes: int
    policy: DropPolicy
    sent: int
    received: int
    dropped: dict[str, int]
    blocked_senders: int


#: Called once for every item a channel drops: (reason, item, size in bytes).
DropHook = Callable[[DropReason, T, int], None]


@final
class BoundedChannel(Generic[T]):
    """A bounded, policy-governed channel (see the module docstring). No task is started."""

    def __init__(
        self,
        limits: ChannelLimits,
        *,
        name: str,
        on_drop: Callable[[DropReason, T, int], None] | None = None,
    ) -> None:
        self.name = name
        self._core: BufferCore[T] = BufferCore(limits)
        self._on_drop = on_drop
        self._closed = False
        self._senders = trio.lowlevel.ParkingLot()  # waiting for room
        self._receivers = trio.lowlevel.ParkingLot()  # waiting for items
        self._emptied = trio.lowlevel.ParkingLot()

    @property
    def limits(self) -> ChannelLimits:
        """The channel's capacity and policy."""
        return self._core.limits

    @property
    def depth(self) -> int:
        """Items buffered now (cheaper than :meth:`statistics` on hot paths)."""
        return self._core.depth

    def _report(self, dropped: tuple[tuple[T, int, DropReason], ...]) -> None:
        if self._on_drop is not None:
            for item, size, reason in dropped:
                self._on_drop(reason, item, size)

    def _accepted(self) -> None:
        if self._receivers:
            self._receivers.unpark()

    def send_nowait(self, item: T, size: int) -> bool:
        """Offer ``item`` now: True if buffered, False if dropped by policy.

        Raises ``trio.WouldBlock`` under ``block`` when it does not fit (or other senders are
        already waiting: FIFO fairness), ``trio.ClosedResourceError`` after :meth:`close`.
        """
        if self._closed:
            raise trio.ClosedResourceError(f"channel {self.name} is closed")
        if self._senders and self._core.limits.policy is DropPolicy.BLOCK:
            raise trio.WouldBlock
        offer = self._core.offer(item, size)
        self._report(offer.dropped)
        if offer.must_wait:
            raise trio.WouldBlock
        if offer.accepted:
            self._accepted()
        return offer.accepted

    async def send(self, item: T, size: int) -> bool:
        """Offer ``item``, waiting for room under ``block``: True if buffered, False if dropped.

        Waiting is a cancellable checkpoint; a cancelled send leaves nothing behind.
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
            await self._senders.park()
            if self._closed:
                raise trio.ClosedResourceError(f"channel {self.name} is closed")
            offer = self._core.offer(item, size)
            self._report(offer.dropped)
            if offer.must_wait:
                continue
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

    async def receive_batch(self, max_items: int = 256) -> list[T]:
        """Wait for at least one item, then take all that are ready (at most ``max_items``)."""
        await trio.lowlevel.checkpoint_if_cancelled()
        while not self._core.depth:
            if self._closed:
                raise trio.EndOfChannel
            await self._receivers.park()
        items = self._core.take(max_items)
        self._room_made()
        if self._core.depth and self._receivers:
            self._receivers.unpark()
        await trio.lowlevel.cancel_shielded_checkpoint()
        return items

    def close(self) -> None:
        """No more sends: blocked senders get ``ClosedResourceError``; receivers drain, then
        get ``EndOfChannel``."""
        self._closed = True
        self._senders.unpark_all()
        self._receivers.unpark_all()

    def discard(self) -> int:
        """Drop everything buffered (reason ``closed``, each reported); return how many."""
        items = self._core.clear()
        self._core.drops[DropReason.CLOSED] += len(items)
        self._report(tuple((item, size, DropReason.CLOSED) for item, size in items))
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
            max_messages=core.limits.max_messages,
            max_bytes=core.limits.max_bytes,
            policy=core.limits.policy,
            sent=core.accepted,
            received=core.taken,
            dropped={str(reason): count for reason, count in core.drops.items()},
            blocked_senders=len(self._senders),
        )
