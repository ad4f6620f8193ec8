"""Unit: the fan-in join cache (modes, replacement, TTL, capacity, accounting)."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bobravoz.runtime.joins import (
    DEFAULT_JOIN_MAX_ENTRIES,
    DEFAULT_JOIN_TTL,
    JoinCache,
    JoinPolicy,
)

NEEDS = ("a", "b", "c")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(policy: JoinPolicy) -> tuple[JoinCache[int], FakeClock]:
    clock = FakeClock()
    return JoinCache(policy, clock=clock), clock


def test_all_mode_waits_for_every_need() -> None:
    cache, _ = make(JoinPolicy())
    assert cache.offer("k", "a", NEEDS, 1).joined is None
    assert cache.offer("k", "b", NEEDS, 2).joined is None
    assert len(cache) == 1
    joined = cache.offer("k", "c", NEEDS, 3).joined
    assert joined is not None
    assert joined.key == "k"
    assert joined.parts == {"a": 1, "b": 2, "c": 3}
    assert joined.complete
    assert joined.missing == ()
    assert len(cache) == 0
    assert cache.counts["joined"] == 1


def test_any_mode_joins_on_the_first_part_without_storing() -> None:
    cache, _ = make(JoinPolicy(mode="any"))
    joined = cache.offer("k", "b", NEEDS, 7).joined
    assert joined is not None
    assert joined.parts == {"b": 7}
    assert joined.missing == ("a", "c")
    assert len(cache) == 0


def test_quorum_mode_joins_at_quorum() -> None:
    cache, _ = make(JoinPolicy(mode="quorum", quorum=2))
    assert cache.offer("k", "a", NEEDS, 1).joined is None
    joined = cache.offer("k", "c", NEEDS, 3).joined
    assert joined is not None
    assert joined.parts == {"a": 1, "c": 3}
    assert joined.missing == ("b",)


@pytest.mark.parametrize("quorum", [None, 0, -1])
def test_quorum_not_positive_means_all(quorum: int | None) -> None:
    cache, _ = make(JoinPolicy(mode="quorum", quorum=quorum))
    assert cache.offer("k", "a", NEEDS, 1).joined is None
    assert cache.offer("k", "b", NEEDS, 2).joined is None
    assert cache.offer("k", "c", NEEDS, 3).joined is not None


def test_quorum_above_needs_is_capped_at_all() -> None:
    cache, _ = make(JoinPolicy(mode="quorum", quorum=5))
    cache.offer("k", "a", ("a", "b"), 1)
    assert cache.offer("k", "b", ("a", "b"), 2).joined is not None


def test_a_repeated_upstream_replaces_its_part() -> None:
    cache, _ = make(JoinPolicy())
    cache.offer("k", "a", ("a", "b"), 1)
    cache.offer("k", "a", ("a", "b"), 10)
    assert cache.counts["replaced"] == 1
    joined = cache.offer("k", "b", ("a", "b"), 2).joined
    assert joined is not None
    assert joined.parts == {"a": 10, "b": 2}


def test_an_upstream_outside_needs_is_ignored() -> None:
    cache, _ = make(JoinPolicy())
    result = cache.offer("k", "x", ("a", "b"), 1)
    assert result.joined is None
    assert len(cache) == 0
    cache.offer("k", "a", ("a", "b"), 1)
    # The entry keeps the needs it was created with.
    assert cache.offer("k", "z", ("a", "z"), 2).joined is None
    assert cache.counts["ignored"] == 2
    assert len(cache) == 1


def test_empty_needs_are_refused() -> None:
    cache, _ = make(JoinPolicy())
    with pytest.raises(ValueError, match="at least one"):
        cache.offer("k", "a", (), 1)


def test_keys_are_independent() -> None:
    cache, _ = make(JoinPolicy())
    cache.offer("k1", "a", ("a", "b"), 1)
    cache.offer("k2", "b", ("a", "b"), 2)
    assert len(cache) == 2
    joined = cache.offer("k2", "a", ("a", "b"), 3).joined
    assert joined is not None
    assert joined.parts == {"b": 2, "a": 3}
    assert "k1" in cache
    assert "k2" not in cache


def test_expiry_counts_from_the_first_part() -> None:
    cache, clock = make(JoinPolicy(timeout=5))
    cache.offer("k", "a", NEEDS, 1)
    assert cache.next_deadline() == 1005.0
    clock.now = 1004.0
    cache.offer("k", "b", NEEDS, 2)  # a later part does not extend the deadline
    assert cache.next_deadline() == 1005.0
    assert cache.expire() == []
    gone = cache.expire(1005.0)
    assert [(j.key, j.parts, j.complete) for j in gone] == [("k", {"a": 1, "b": 2}, False)]
    assert gone[0].missing == ("c",)
    assert len(cache) == 0
    assert cache.next_deadline() is None
    assert cache.counts["expired"] == 1


def test_offer_expires_due_entries_before_recording() -> None:
    cache, clock = make(JoinPolicy(timeout=5))
    cache.offer("old", "a", ("a", "b"), 1)
    cache.offer("k", "a", ("a", "b"), 1)
    clock.now = 1010.0
    result = cache.offer("k", "b", ("a", "b"), 2)
    # The stale part of "k" expired: the late part starts a fresh entry instead of joining.
    assert result.joined is None
    assert [j.key for j in result.expired] == ["old", "k"]
    assert len(cache) == 1


def test_expire_returns_only_due_entries_oldest_first() -> None:
    cache, clock = make(JoinPolicy(timeout=10))
    cache.offer("k1", "a", NEEDS, 1)
    clock.now += 3
    cache.offer("k2", "a", NEEDS, 1)
    clock.now += 3
    cache.offer("k3", "a", NEEDS, 1)
    assert [j.key for j in cache.expire(1013.0)] == ["k1", "k2"]
    assert cache.next_deadline() == 1016.0


@pytest.mark.parametrize("timeout", [None, 0, -3])
def test_unset_timeout_uses_the_default_ttl(timeout: float | None) -> None:
    policy = JoinPolicy(timeout=timeout, default_ttl=30)
    assert policy.ttl == 30
    cache, _ = make(policy)
    cache.offer("k", "a", NEEDS, 1)
    assert cache.next_deadline() == 1030.0


def test_defaults() -> None:
    policy = JoinPolicy()
    assert policy.ttl == DEFAULT_JOIN_TTL == 120.0
    assert policy.capacity == DEFAULT_JOIN_MAX_ENTRIES == 1000
    assert JoinPolicy(max_entries=0, default_max_entries=7).capacity == 7
    assert JoinPolicy(max_entries=3).capacity == 3


def test_a_default_ttl_not_positive_never_expires() -> None:
    cache, clock = make(JoinPolicy(default_ttl=0))
    cache.offer("k", "a", NEEDS, 1)
    assert cache.next_deadline() is None
    clock.now += 1e9
    assert cache.expire() == []
    assert len(cache) == 1


def test_a_full_cache_evicts_the_oldest_entry_and_says_so() -> None:
    cache, clock = make(JoinPolicy(max_entries=2))
    cache.offer("k1", "a", NEEDS, 1)
    clock.now += 1
    cache.offer("k2", "a", NEEDS, 2)
    cache.offer("k1", "b", NEEDS, 3)  # an update does not make k1 younger
    result = cache.offer("k3", "a", NEEDS, 4)
    assert [(j.key, j.parts, j.complete) for j in result.evicted] == [
        ("k1", {"a": 1, "b": 3}, False)
    ]
    assert len(cache) == 2
    assert cache.counts["evicted"] == 1
    # Parts of existing keys never evict.
    assert cache.offer("k2", "b", NEEDS, 5).evicted == ()


def test_clear_returns_every_partial() -> None:
    cache, _ = make(JoinPolicy())
    cache.offer("k1", "a", NEEDS, 1)
    cache.offer("k2", "b", NEEDS, 2)
    assert [j.key for j in cache.clear()] == ["k1", "k2"]
    assert len(cache) == 0
    assert cache.counts["cleared"] == 2


def test_policy_validation() -> None:
    with pytest.raises(ValueError, match="fanIn mode"):
        JoinPolicy(mode="most")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="capacity"):
        JoinPolicy(default_max_entries=0)


offers = st.lists(
    st.tuples(
        st.sampled_from(["k0", "k1", "k2", "k3", "k4", "k5"]),
        st.sampled_from(["a", "b", "c", "x"]),
        st.floats(min_value=0, max_value=4),  # seconds that pass before the offer
        st.booleans(),  # call expire() before the offer
    ),
    max_size=60,
)


@settings(max_examples=200)
@given(
    ops=offers,
    mode=st.sampled_from(["all", "any", "quorum"]),
    quorum=st.integers(min_value=0, max_value=4),
    capacity=st.integers(min_value=1, max_value=4),
)
def test_every_entry_is_accounted_for(
    ops: list[tuple[str, str, float, bool]], mode: str, quorum: int, capacity: int
) -> None:
    policy = JoinPolicy(mode=mode, quorum=quorum, timeout=5, max_entries=capacity)  # type: ignore[arg-type]
    cache, clock = make(policy)
    opened = Counter[str]()  # entries begun per key (a part for a key with no entry)
    closed = Counter[str]()  # entries that left, per key
    for key, upstream, elapsed, expire_first in ops:
        clock.now += elapsed
        if expire_first:
            for gone in cache.expire():
                assert not gone.complete
                closed[gone.key] += 1
        fresh = upstream in NEEDS and key not in cache
        result = cache.offer(key, upstream, NEEDS, 1)
        left = [*result.expired, *result.evicted]
        assert all(not j.complete for j in left)
        for gone in left:
            closed[gone.key] += 1
        if fresh or any(j.key == key for j in result.expired):
            opened[key] += upstream in NEEDS
        if result.joined is not None:
            assert result.joined.complete
            assert result.joined.key == key
            assert len(result.joined.parts) >= policy.required(len(NEEDS))
            closed[key] += 1
        assert len(cache) <= capacity
    for key in opened | closed:
        assert opened[key] == closed[key] + (key in cache)
    counts = cache.counts
    assert counts["joined"] + counts["expired"] + counts["evicted"] + len(cache) == sum(
        opened.values()
    )
