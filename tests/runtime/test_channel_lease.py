"""Leases, give-backs, requeues and shared memory budgets of bounded channels.

Scope: :class:`~bobravoz.runtime.channel.BufferCore` driven by a hypothesis state machine
(offer under every policy, lease, commit, give back, requeue, clear; one or two cores, with or
without a shared :class:`~bobravoz.runtime.channel.MemoryBudget`) checked against a reference
FIFO model, and :class:`~bobravoz.runtime.channel.BoundedChannel` under trio: leases ended by
cancellation or exceptions, cancelled blocked senders, senders blocked on a shared budget, and
policy drops under a full budget.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field

import pytest
import trio
import trio.testing
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from bobravoz.runtime.channel import (
    POLICY_REASONS,
    BoundedChannel,
    BufferCore,
    ChannelLimits,
    DropPolicy,
    DropReason,
    MemoryBudget,
    is_policy_drop,
)

Entry = tuple[int, int]

# --------------------------------------------------------------------------------------------
# The sans-IO core against a reference model
# --------------------------------------------------------------------------------------------

limits_strategy = st.builds(
    ChannelLimits,
    max_messages=st.integers(1, 5),
    max_bytes=st.integers(1, 20),
    policy=st.sampled_from(list(DropPolicy)),
)


@dataclass
class CoreModel:
    """What one core must hold: the queue in order, the outstanding leases, settled entries."""

    core: BufferCore[int]
    queue: collections.deque[Entry] = field(default_factory=collections.deque)
    leases: list[list[Entry]] = field(default_factory=list)
    settled: list[Entry] = field(default_factory=list)

    def queued_bytes(self) -> int:
        return sum(size for _, size in self.queue)

    def leased_bytes(self) -> int:
        return sum(size for lease in self.leases for _, size in lease)

    def leased_count(self) -> int:
        return sum(len(lease) for lease in self.leases)


class LeaseMachine(RuleBasedStateMachine):
    """Every item is queued, leased, taken or dropped; order and bytes always match the model."""

    def __init__(self) -> None:
        super().__init__()
        self.models: list[CoreModel] = []
        self.budget: MemoryBudget | None = None
        self.next_item = 0
        self.ever_leased: set[int] = set()

    @initialize(
        limits=st.lists(limits_strategy, min_size=1, max_size=2),
        budget_limit=st.none() | st.integers(1, 30),
    )
    def setup(self, limits: list[ChannelLimits], budget_limit: int | None) -> None:
        self.budget = None if budget_limit is None else MemoryBudget(budget_limit)
        self.models = [CoreModel(BufferCore(limit, self.budget)) for limit in limits]

    def _model(self, index: int) -> CoreModel:
        return self.models[index % len(self.models)]

    def _budget_used(self) -> int:
        return sum(model.queued_bytes() + model.leased_bytes() for model in self.models)

    # -- rules -------------------------------------------------------------------------------

    @rule(index=st.integers(0, 1), size=st.integers(0, 12))
    def offer(self, index: int, size: int) -> None:
        model = self._model(index)
        core, limits, budget = model.core, model.core.limits, self.budget
        item = self.next_item
        self.next_item += 1

        queue = collections.deque(model.queue)  # the queue after this offer
        released = 0  # bytes this offer evicts

        def fits(new: int) -> bool:
            return (
                len(queue) < limits.max_messages
                and sum(entry[1] for entry in queue) + new <= limits.max_bytes
            )

        def budget_fits(new: int) -> bool:
            return budget is None or self._budget_used() - released + new <= budget.limit

        dropped: list[tuple[int, int, str]] = []
        accepted = waits = False
        if size > limits.max_bytes:
            dropped.append((item, size, DropReason.OVERSIZE))
        elif fits(size) and budget_fits(size):
            accepted = True
        elif limits.policy is DropPolicy.BLOCK:
            waits = True
        elif limits.policy is DropPolicy.DROP_NEWEST:
            reason = DropReason.DROP_NEWEST if not fits(size) else DropReason.BUDGET
            dropped.append((item, size, reason))
        else:
            while queue and not (fits(size) and budget_fits(size)):
                old, old_size = queue.popleft()
                released += old_size
                dropped.append((old, old_size, DropReason.DROP_OLDEST))
            if budget_fits(size):
                accepted = True
            else:
                dropped.append((item, size, DropReason.BUDGET))

        offered_before = core.offered
        outcome = core.offer(item, size)
        assert outcome.accepted == accepted
        assert outcome.must_wait == waits
        assert [(i, s, str(r)) for i, s, r in outcome.dropped] == dropped
        if waits:
            assert core.offered == offered_before  # it is offered again later
            assert outcome.budget == fits(size)  # it is the budget, not the channel
        else:
            assert core.offered == offered_before + 1
        if accepted:
            queue.append((item, size))
        model.queue = queue

    @rule(index=st.integers(0, 1), count=st.none() | st.integers(0, 4))
    def lease(self, index: int, count: int | None) -> None:
        model = self._model(index)
        leased = model.core.lease(count)
        wanted = len(model.queue) if count is None else min(count, len(model.queue))
        expected = [model.queue.popleft() for _ in range(wanted)]
        assert leased == expected  # FIFO: the oldest entries, in order
        self.ever_leased.update(item for item, _ in leased)
        if leased:
            model.leases.append(list(leased))

    @precondition(lambda self: any(model.leases for model in self.models))
    @rule(pick=st.integers(0, 20), count=st.integers(0, 4))
    def commit(self, pick: int, count: int) -> None:
        model, lease_index = self._pick_lease(pick)
        lease = model.leases[lease_index]
        handed, rest = lease[:count], lease[count:]
        assert model.core.settle(handed) == handed
        model.settled.extend(handed)
        if rest:
            model.leases[lease_index] = rest
        else:
            del model.leases[lease_index]

    @precondition(lambda self: any(model.leases for model in self.models))
    @rule(pick=st.integers(0, 20))
    def give_back(self, pick: int) -> None:
        model, lease_index = self._pick_lease(pick)
        lease = model.leases.pop(lease_index)
        assert model.core.restore(lease) == len(lease)
        model.queue.extendleft(reversed(lease))

    @precondition(lambda self: any(model.settled for model in self.models))
    @rule(pick=st.integers(0, 20), count=st.integers(1, 4))
    def requeue(self, pick: int, count: int) -> None:
        candidates = [model for model in self.models if model.settled]
        model = candidates[pick % len(candidates)]
        # The most recently settled entries, as a stream that never wrote them gives them back.
        chunk = model.settled[-count:]
        del model.settled[-count:]
        assert model.core.requeue(chunk) == len(chunk)
        model.queue.extendleft(reversed(chunk))

    @rule(index=st.integers(0, 1), reason=st.sampled_from(["closed", "superseded"]))
    def clear(self, index: int, reason: str) -> None:
        model = self._model(index)
        before = model.core.drops[reason]
        assert model.core.clear(reason) == list(model.queue)
        assert model.core.drops[reason] == before + len(model.queue)
        model.queue.clear()

    def _pick_lease(self, pick: int) -> tuple[CoreModel, int]:
        owners = [(model, i) for model in self.models for i in range(len(model.leases))]
        return owners[pick % len(owners)]

    # -- invariants --------------------------------------------------------------------------

    @invariant()
    def every_item_is_accounted_for(self) -> None:
        for model in self.models:
            core = model.core
            assert core.offered + core.requeued == (
                core.taken + sum(core.drops.values()) + core.depth + core.in_flight
            )
            assert core.in_flight == model.leased_count()
            assert core.in_flight_bytes == model.leased_bytes()
            assert core.taken == len(model.settled) + core.requeued

    @invariant()
    def depth_bytes_is_the_sum_of_queued_sizes(self) -> None:
        for model in self.models:
            queued = list(model.core._items)  # noqa: SLF001 - the queue itself is the subject
            assert model.core.depth == len(queued)
            assert model.core.depth_bytes == sum(size for _, size in queued)

    @invariant()
    def budget_counts_queued_and_leased_bytes_of_every_core(self) -> None:
        if self.budget is None:
            return
        assert self.budget.used == sum(
            model.core.depth_bytes + model.core.in_flight_bytes for model in self.models
        )
        assert self.budget.used == self._budget_used()

    @invariant()
    def queue_order_matches_the_model(self) -> None:
        # Accepted items in acceptance order; given-back and requeued ones at the front in
        # their original order.
        for model in self.models:
            assert list(model.core._items) == list(model.queue)  # noqa: SLF001

    @invariant()
    def fresh_items_wait_behind_returned_ones_in_acceptance_order(self) -> None:
        # Independent of the model: never-leased items form the tail of the queue, in the
        # order they were offered; everything given back or requeued is ahead of them.
        for model in self.models:
            items = [item for item, _ in model.core._items]  # noqa: SLF001
            fresh = [item for item in items if item not in self.ever_leased]
            assert items[len(items) - len(fresh) :] == fresh
            assert fresh == sorted(fresh)


TestLeaseMachine = LeaseMachine.TestCase
TestLeaseMachine.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)


def test_budget_reasons_are_loss_and_policy_reasons_are_declared() -> None:
    assert not is_policy_drop(DropReason.BUDGET)
    assert not is_policy_drop(DropReason.OVERSIZE)
    assert is_policy_drop(DropReason.DROP_OLDEST)
    assert is_policy_drop(DropReason.DROP_NEWEST)
    assert frozenset({"drop_oldest", "drop_newest"}) == POLICY_REASONS


# --------------------------------------------------------------------------------------------
# BoundedChannel under trio
# --------------------------------------------------------------------------------------------


def make(
    policy: DropPolicy = DropPolicy.BLOCK,
    *,
    messages: int = 10,
    size: int = 1000,
    budget: MemoryBudget | None = None,
    name: str = "test",
) -> tuple[BoundedChannel[int], list[tuple[str, int, int]]]:
    drops: list[tuple[str, int, int]] = []
    channel: BoundedChannel[int] = BoundedChannel(
        ChannelLimits(max_messages=messages, max_bytes=size, policy=policy),
        name=name,
        on_drop=lambda reason, item, item_size: drops.append((reason, item, item_size)),
        budget=budget,
    )
    return channel, drops


def drain(channel: BoundedChannel[int]) -> list[int]:
    items: list[int] = []
    while channel.depth:
        items.append(channel.receive_nowait())
    return items


async def test_cancelled_lease_block_gives_everything_back_in_order(
    autojump_clock: trio.abc.Clock,
) -> None:
    channel, drops = make()
    for item in range(5):
        channel.send_nowait(item, 1)
    handed_on = trio.Event()  # never set: the "stream" never takes the batch
    with trio.move_on_after(5) as scope:
        with await channel.lease(3) as lease:
            assert lease.items == [0, 1, 2]
            assert channel.depth == 2
            assert channel.in_flight == 3
            channel.send_nowait(5, 1)  # arrives while the lease is out
            await handed_on.wait()
    assert scope.cancelled_caught
    assert channel.in_flight == 0
    assert drain(channel) == [0, 1, 2, 3, 4, 5]
    stats = channel.statistics()
    assert stats.received == 6
    assert stats.offered + stats.requeued == stats.received + sum(stats.dropped.values())
    assert drops == []


async def test_lease_block_ended_by_an_exception_gives_everything_back() -> None:
    channel, _ = make()
    for item in range(4):
        channel.send_nowait(item, 2)

    async def failing_consumer() -> None:
        with await channel.lease() as lease:
            assert lease.items == [0, 1, 2, 3]
            assert lease.size == 8
            await trio.lowlevel.checkpoint()
            raise RuntimeError("stream broke")

    with pytest.raises(RuntimeError, match="stream broke"):
        await failing_consumer()
    assert channel.in_flight == 0
    assert channel.statistics().depth_bytes == 8
    assert drain(channel) == [0, 1, 2, 3]


async def test_cancel_scope_around_the_lease_gives_back_before_later_items() -> None:
    channel, _ = make()
    for item in range(3):
        channel.send_nowait(item, 1)
    with trio.CancelScope() as scope, await channel.lease() as lease:
        channel.send_nowait(3, 1)
        channel.send_nowait(4, 1)
        scope.cancel()
        await trio.lowlevel.checkpoint()
        pytest.fail("the checkpoint should have raised Cancelled")
    assert scope.cancelled_caught
    assert len(lease) == 0
    assert drain(channel) == [0, 1, 2, 3, 4]


async def test_partial_commit_gives_back_only_the_rest(autojump_clock: trio.abc.Clock) -> None:
    channel, _ = make()
    for item in range(6):
        channel.send_nowait(item, 1)
    with trio.move_on_after(1):
        with await channel.lease(4) as lease:
            lease.commit(2)
            assert lease.items == [2, 3]
            assert len(lease) == 2
            assert channel.in_flight == 2
            channel.send_nowait(6, 1)
            await trio.sleep_forever()  # cancelled by the deadline, like a stalled write
    stats = channel.statistics()
    assert stats.received == 2
    assert stats.in_flight == 0
    assert drain(channel) == [2, 3, 4, 5, 6]
    stats = channel.statistics()
    assert stats.offered + stats.requeued == stats.received + sum(stats.dropped.values())


async def test_full_commit_leaves_nothing_to_give_back() -> None:
    channel, _ = make()
    for item in range(3):
        channel.send_nowait(item, 1)

    async def consumer_failing_after_the_hand_off() -> None:
        with await channel.lease() as lease:
            lease.commit()
            raise RuntimeError("after the hand-off")

    with pytest.raises(RuntimeError, match="after the hand-off"):
        await consumer_failing_after_the_hand_off()
    assert channel.depth == 0
    assert channel.in_flight == 0
    assert channel.statistics().received == 3


async def test_give_back_wakes_a_waiting_receiver() -> None:
    channel, _ = make()
    channel.send_nowait(1, 1)
    got: list[int] = []
    with trio.fail_after(10):
        lease = await channel.lease()
        async with trio.open_nursery() as nursery:

            async def receiver() -> None:
                got.extend(await channel.receive_batch())

            nursery.start_soon(receiver)
            await trio.testing.wait_all_tasks_blocked()
            assert got == []
            assert lease.give_back() == 1
    assert got == [1]


async def test_cancelled_blocked_sender_leaves_nothing_behind() -> None:
    channel, drops = make(messages=2)
    assert await channel.send(1, 1)
    assert await channel.send(2, 1)
    before = channel.statistics()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            cancel = trio.CancelScope()

            async def blocked_sender() -> None:
                with cancel:
                    await channel.send(3, 1)
                    pytest.fail("the channel was full")

            nursery.start_soon(blocked_sender)
            await trio.testing.wait_all_tasks_blocked()
            assert channel.statistics().blocked_senders == 1
            cancel.cancel()
    after = channel.statistics()
    assert after.blocked_senders == 0
    assert after.depth == before.depth == 2
    assert after.offered == before.offered == 2
    assert after.sent == before.sent
    assert drain(channel) == [1, 2]
    assert drops == []


async def test_cancelled_sender_blocked_on_the_budget_leaves_nothing_behind(
    autojump_clock: trio.abc.Clock,
) -> None:
    budget = MemoryBudget(10)
    full, _ = make(budget=budget, name="full")
    other, drops = make(budget=budget, name="other")
    full.send_nowait(1, 10)
    before = other.statistics()
    with trio.move_on_after(1) as scope:
        await other.send(2, 1)
    assert scope.cancelled_caught
    after = other.statistics()
    assert (after.depth, after.offered, after.depth_bytes) == (0, before.offered, 0)
    assert budget.used == 10
    assert drops == []


async def test_sender_blocked_on_a_shared_budget_wakes_when_another_channel_frees_bytes() -> None:
    budget = MemoryBudget(10)
    first, _ = make(budget=budget, name="first")
    second, _ = make(budget=budget, name="second")
    for item in range(5):
        first.send_nowait(item, 2)
    assert budget.used == 10
    sent = trio.Event()

    async def blocked_sender() -> None:
        assert await second.send(100, 3)
        sent.set()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(blocked_sender)
            await trio.testing.wait_all_tasks_blocked()
            assert not sent.is_set()
            # Leasing does not free budget bytes (leased items are still owed) ...
            lease = first.lease_nowait(2)
            await trio.testing.wait_all_tasks_blocked()
            assert not sent.is_set()
            assert budget.used == 10
            # ... committing them does: 4 bytes freed, 3 needed.
            lease.commit()
            await sent.wait()
    assert budget.used == 9
    assert drain(second) == [100]
    assert budget.used == 6


async def test_sender_blocked_on_a_shared_budget_wakes_when_another_channel_discards() -> None:
    budget = MemoryBudget(4)
    first, first_drops = make(budget=budget, name="first")
    second, _ = make(budget=budget, name="second")
    first.send_nowait(1, 4)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(second.send, 2, 4)
            await trio.testing.wait_all_tasks_blocked()
            assert second.depth == 0
            assert first.discard() == 1
    assert first_drops == [(DropReason.CLOSED, 1, 4)]
    assert drain(second) == [2]
    assert budget.used == 0


async def test_drop_newest_under_a_full_budget_drops_with_reason_budget() -> None:
    budget = MemoryBudget(10)
    hog, _ = make(budget=budget, name="hog")
    channel, drops = make(DropPolicy.DROP_NEWEST, budget=budget)
    hog.send_nowait(0, 9)
    assert await channel.send(1, 1)
    assert not await channel.send(2, 1)  # the channel has room, the budget has not
    assert drops == [(DropReason.BUDGET, 2, 1)]
    assert channel.statistics().dropped == {"budget": 1}
    assert not is_policy_drop(drops[0][0])
    assert drain(channel) == [1]
    assert budget.used == 9


async def test_drop_newest_when_the_channel_is_full_is_a_declared_drop() -> None:
    budget = MemoryBudget(100)
    channel, drops = make(DropPolicy.DROP_NEWEST, messages=1, budget=budget)
    assert await channel.send(1, 1)
    assert not await channel.send(2, 1)
    assert drops == [(DropReason.DROP_NEWEST, 2, 1)]
    assert is_policy_drop(drops[0][0])


async def test_drop_oldest_under_a_full_budget_evicts_its_own_oldest() -> None:
    budget = MemoryBudget(10)
    hog, hog_drops = make(budget=budget, name="hog")
    channel, drops = make(DropPolicy.DROP_OLDEST, budget=budget)
    hog.send_nowait(0, 8)
    assert await channel.send(1, 1)
    assert await channel.send(2, 1)
    assert await channel.send(3, 1)  # 8 + 2 + 1 > 10: the oldest goes
    assert drops == [(DropReason.DROP_OLDEST, 1, 1)]
    assert drain(channel) == [2, 3]
    assert hog_drops == []
    assert budget.used == 8


async def test_drop_oldest_that_cannot_make_room_drops_the_new_item_for_budget() -> None:
    budget = MemoryBudget(10)
    hog, _ = make(budget=budget, name="hog")
    channel, drops = make(DropPolicy.DROP_OLDEST, budget=budget)
    hog.send_nowait(0, 8)
    assert await channel.send(1, 1)
    assert await channel.send(2, 1)
    assert not await channel.send(3, 3)  # even an empty channel leaves only 2 bytes
    assert drops == [
        (DropReason.DROP_OLDEST, 1, 1),
        (DropReason.DROP_OLDEST, 2, 1),
        (DropReason.BUDGET, 3, 3),
    ]
    stats = channel.statistics()
    assert stats.dropped == {"drop_oldest": 2, "budget": 1}
    assert stats.offered == stats.received + sum(stats.dropped.values()) + stats.depth
    assert budget.used == 8


@pytest.mark.parametrize("budget_limit", [None, 20])
def test_a_run_takes_the_leading_items_that_fit_as_they_are(budget_limit: int | None) -> None:
    """``send_run_nowait`` buffers what fits by count, bytes and the shared budget, stops at
    the first that does not (never dropping, never waiting), counts like single offers."""
    budget = MemoryBudget(budget_limit) if budget_limit else None
    channel, drops = make(DropPolicy.DROP_OLDEST, messages=4, size=30, budget=budget)
    channel.send_nowait(100, 5)
    taken = channel.send_run_nowait([1, 2, 3, 4, 5], [10, 10, 10, 1, 1])
    # count allows 3 more, bytes 25 more (the budget only 15 more): two fit (or one)
    expected = 1 if budget_limit else 2
    assert taken == expected
    assert drops == []
    stats = channel.statistics()
    assert stats.offered == stats.sent == 1 + expected
    assert drain(channel) == [100, 1, 2][: 1 + expected]


async def test_a_run_goes_to_an_idle_consumer_first_and_never_past_waiting_senders() -> None:
    channel, _ = make(DropPolicy.BLOCK, messages=2)
    handed: list[int] = []

    def take(items: list[int]) -> int:
        room = 2 - len(handed)
        handed.extend(items[:room])
        return min(room, len(items))

    channel.handoff = take
    assert channel.send_run_nowait([1, 2, 3, 4, 5], [1] * 5) == 4  # two handed, two buffered
    assert handed == [1, 2]
    assert drain(channel) == [3, 4]
    channel.handoff = None
    channel.send_nowait(6, 1)
    channel.send_nowait(7, 1)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(channel.send, 8, 1)
        await trio.testing.wait_all_tasks_blocked()
        assert channel.send_run_nowait([9], [1]) == 0  # a sender waits: it goes first
        assert channel.receive_nowait() == 6
    assert drain(channel) == [7, 8]
    channel.close()
    with pytest.raises(trio.ClosedResourceError):
        channel.send_run_nowait([10], [1])
