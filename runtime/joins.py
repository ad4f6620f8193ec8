"""The fan-in join cache: collect the contributions of a step's upstreams per correlation key.

A step with several ``needs`` receives one packet from each upstream for the same join key
(metadata ``bubu.join.key``, else ``bubu.envelope.message_id``). :class:`JoinCache` records
each upstream's value under the key and hands back the whole set once the step's ``fanIn``
mode is satisfied. Nothing leaves the cache silently: an entry leaves it joined (from
:meth:`JoinCache.offer`), expired (:meth:`JoinCache.expire`, or :meth:`JoinCache.offer`'s
``expired``), evicted for room (:meth:`JoinCache.offer`'s ``evicted``) or cleared
(:meth:`JoinCache.clear`), and each way is counted in :attr:`JoinCache.counts`.

The cache is sans-IO: it reads time from the ``clock`` it is given and never waits; the caller
arms a timer at :meth:`JoinCache.next_deadline` and calls :meth:`JoinCache.expire`.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, Generic, Literal, TypeVar, final, get_args

__all__ = [
    "DEFAULT_JOIN_MAX_ENTRIES",
    "DEFAULT_JOIN_TTL",
    "JoinCache",
    "JoinMode",
    "JoinPolicy",
    "Joined",
    "OfferResult",
]

T = TypeVar("T")

#: ``fanIn.mode``: wait for every need, for any one, or for ``quorum`` of them.
JoinMode = Literal["all", "any", "quorum"]

#: Seconds an entry waits for its parts when ``fanIn.timeoutSeconds`` is not set
#: (``BUBU_HUB_JOIN_CACHE_TTL``).
DEFAULT_JOIN_TTL: Final = 120.0
#: Entries a cache holds when ``fanIn.maxEntries`` is not set
#: (``BUBU_HUB_JOIN_CACHE_MAX_ENTRIES``).
DEFAULT_JOIN_MAX_ENTRIES: Final = 1000

_MODES: Final = frozenset(get_args(JoinMode))


@final
@dataclass(frozen=True, slots=True)
class JoinPolicy:
    """A step's ``fanIn`` settings, with the process defaults that fill what is unset.

    ``timeout`` (seconds) and ``max_entries`` that are None or not positive fall back to
    ``default_ttl`` and ``default_max_entries`` (the hub passes its environment's values).
    An effective TTL that is not positive means entries never expire.
    """

    mode: JoinMode = "all"
    quorum: int | None = None
    timeout: float | None = None
    max_entries: int | None = None
    default_ttl: float = DEFAULT_JOIN_TTL
    default_max_entries: int = DEFAULT_JOIN_MAX_ENTRIES

    def __post_init__(self) -> None:
        if self.mode not in _MODES:
            raise ValueError(f"fanIn mode {self.mode!r}: one of all, any, quorum")
        if self.capacity < 1:
            raise ValueError(f"join cache capacity {self.capacity}: must be at least 1")

    @property
    def ttl(self) -> float | None:
        """Seconds an entry may wait after its first part, or None for no limit."""
        ttl = self.timeout if self.timeout is not None and self.timeout > 0 else self.default_ttl
        return ttl if ttl > 0 else None

    @property
    def capacity(self) -> int:
        """The most entries the cache holds at once."""
        if self.max_entries is not None and self.max_entries > 0:
            return self.max_entries
        return self.default_max_entries

    def required(self, needs: int) -> int:
        """How many of ``needs`` distinct upstreams complete a join.

        ``all``: every one; ``any``: one; ``quorum``: ``quorum``, where a quorum that is unset
        or not positive means all, and one above ``needs`` is capped at ``needs`` (it could
        never be reached otherwise).
        """
        if self.mode == "any":
            return min(1, needs)
        if self.mode == "quorum" and self.quorum is not None and self.quorum > 0:
            return min(self.quorum, needs)
        return needs


@final
@dataclass(frozen=True, slots=True)
class Joined(Generic[T]):
    """One join key's contributions as they left the cache.

    ``parts`` maps upstream step to its latest value. ``complete`` is True when the policy's
    mode was satisfied (every join returned by :meth:`JoinCache.offer`) and False for an
    entry that expired, was evicted or was cleared before that.
    """

    key: str
    parts: dict[str, T]
    complete: bool
    needs: tuple[str, ...]

    @property
    def missing(self) -> tuple[str, ...]:
        """The needs that contributed nothing, in ``needs`` order."""
        return tuple(need for need in self.needs if need not in self.parts)


@final
@dataclass(frozen=True, slots=True)
class OfferResult(Generic[T]):
    """What one :meth:`JoinCache.offer` produced.

    ``joined``: the completed join, if this contribution completed one. ``evicted``: entries
    pushed out (oldest first) to make room for this key. ``expired``: entries past their TTL
    that the offer collected first. The last two are partial joins (``complete`` False).
    """

    joined: Joined[T] | None = None
    evicted: tuple[Joined[T], ...] = ()
    expired: tuple[Joined[T], ...] = ()


@dataclass(slots=True)
class _Entry(Generic[T]):
    needs: tuple[str, ...]
    deadline: float | None
    parts: dict[str, T] = field(default_factory=dict)


@final
class JoinCache(Generic[T]):
    """Fan-in joins in progress for one policy, bounded by ``policy.capacity`` entries of at
    most ``len(needs)`` parts each.

    ``counts`` (by reason, for metrics): ``joined``, ``expired``, ``evicted``, ``cleared``,
    ``replaced`` (an upstream contributed again; its latest value is kept) and ``ignored``
    (the upstream is not one of the needs; nothing is stored).
    """

    def __init__(self, policy: JoinPolicy, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.policy: Final = policy
        self.counts: Counter[str] = Counter()
        self._clock = clock
        # Insertion order is first-part order, which (one TTL for all) is deadline order.
        self._entries: dict[str, _Entry[T]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def offer(self, key: str, upstream: str, needs: tuple[str, ...], value: T) -> OfferResult[T]:
        """Record ``upstream``'s ``value`` for ``key`` and return what that caused.

        ``needs`` are the target step's upstreams; an entry keeps the ``needs`` it was created
        with. Entries past their TTL are expired first, so a late part never joins stale ones.
        When the parts now satisfy the mode, the entry is removed and returned as ``joined``
        (``complete`` True). A new key in a full cache evicts the oldest entry first.
        Raises ``ValueError`` when ``needs`` is empty.
        """
        if not needs:
            raise ValueError("a join needs at least one upstream")
        now = self._clock()
        expired = tuple(self._expire(now))
        if upstream not in needs:
            self.counts["ignored"] += 1
            return OfferResult(expired=expired)
        entry = self._entries.get(key)
        if entry is None:
            entry = _Entry(needs=needs, deadline=self._deadline(now))
            if self.policy.required(len(set(needs))) <= 1:
                entry.parts[upstream] = value
                return OfferResult(joined=self._complete(key, entry), expired=expired)
            evicted = self._make_room()
            self._entries[key] = entry
        else:
            evicted = ()
            if upstream not in entry.needs:
                self.counts["ignored"] += 1
                return OfferResult(expired=expired)
        if upstream in entry.parts:
            self.counts["replaced"] += 1
        entry.parts[upstream] = value
        joined = None
        if len(entry.parts) >= self.policy.required(len(set(entry.needs))):
            del self._entries[key]
            joined = self._complete(key, entry)
        return OfferResult(joined=joined, evicted=evicted, expired=expired)

    def expire(self, now: float | None = None) -> list[Joined[T]]:
        """Remove and return (oldest first) every entry whose TTL, counted from its first
        part, has passed at ``now`` (default: the clock's time)."""
        return self._expire(self._clock() if now is None else now)

    @property
    def waiting(self) -> int:
        """Parts waiting in the cache now, over every entry."""
        return sum(len(entry.parts) for entry in self._entries.values())

    def next_deadline(self) -> float | None:
        """The clock time at which the oldest entry expires; None when none can."""
        for entry in self._entries.values():
            return entry.deadline
        return None

    def clear(self) -> list[Joined[T]]:
        """Remove and return every entry (oldest first), e.g. when the StoryRun ends."""
        left = [self._partial(key, entry) for key, entry in self._entries.items()]
        self._entries.clear()
        self.counts["cleared"] += len(left)
        return left

    def _deadline(self, now: float) -> float | None:
        ttl = self.policy.ttl
        return None if ttl is None else now + ttl

    def _expire(self, now: float) -> list[Joined[T]]:
        gone: list[Joined[T]] = []
        while self._entries:
            key, entry = next(iter(self._entries.items()))
            if entry.deadline is None or entry.deadline > now:
                break
            del self._entries[key]
            gone.append(self._partial(key, entry))
        self.counts["expired"] += len(gone)
        return gone

    def _make_room(self) -> tuple[Joined[T], ...]:
        evicted: list[Joined[T]] = []
        while len(self._entries) >= self.policy.capacity:
            key, entry = next(iter(self._entries.items()))
            del self._entries[key]
            evicted.append(self._partial(key, entry))
        self.counts["evicted"] += len(evicted)
        return tuple(evicted)

    def _complete(self, key: str, entry: _Entry[T]) -> Joined[T]:
        self.counts["joined"] += 1
        return Joined(key=key, parts=entry.parts, complete=True, needs=entry.needs)

    @staticmethod
    def _partial(key: str, entry: _Entry[T]) -> Joined[T]:
        return Joined(key=key, parts=entry.parts, complete=False, needs=entry.needs)
