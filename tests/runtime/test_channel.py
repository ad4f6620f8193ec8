"""Unit and property tests: bounded channels (policies, byte limits, close, batches, cancel)."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from bobravoz.runtime.channel import (
    BoundedChannel,
    BufferCore,
    ChannelLimits,
    DropPolicy,
    DropReason,
)


def make(
    policy: DropPolicy, messages: int = 3, size: int = 1000
) -> tuple[BoundedChannel[int], list[tuple[DropReason, int]]]:
    drops: list[tuple[DropReason, int]] = []
    channel: BoundedChannel[int] = BoundedChannel(
        ChannelLimits(max_messages=messages, max_bytes=size, policy=policy),
        name="test",
        on_drop=lambda reason, item, _size: drops.append((reason, item)),
    )
    return channel, drops


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError, match="max_messages"):
        ChannelLimits(max_messages=0)
    with pytest.raises(ValueError, match="max_bytes"):
        ChannelLimits(max_bytes=0)


async def test_block_policy_waits_for_room_then_proceeds() -> None:
    channel, drops = make(DropPolicy.BLOCK, messages=2)
    assert await channel.send(1, 1)
    assert await channel.send(2, 1)
    sent_third = trio.Event()

    async def third() -> None:
        await channel.send(3, 1)
        sent_third.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(third)
        await trio.testing.wait_all_tasks_blocked()
        assert not sent_third.is_set()
        assert channel.statistics().blocked_senders == 1
        assert await channel.receive() == 1
        await sent_third.wait()
    assert await channel.receive_batch() == [2, 3]
    assert drops == []


async def test_drop_oldest_evicts_and_counts() -> None:
    channel, drops = make(DropPolicy.DROP_OLDEST, messages=2)
    for item in (1, 2, 3, 4):
        assert await channel.send(item, 1)
    assert await channel.receive_batch() == [3, 4]
    assert drops == [(DropReason.DROP_OLDEST, 1), (DropReason.DROP_OLDEST, 2)]
    assert channel.statistics().dropped == {"drop_oldest": 2}


async def test_drop_newest_refuses_the_incoming_item() -> None:
    channel, drops = make(DropPolicy.DROP_NEWEST, messages=2)
    assert await channel.send(1, 1)
    assert await channel.send(2, 1)
    assert not await channel.send(3, 1)
    assert await channel.receive_batch() == [1, 2]
    assert drops == [(DropReason.DROP_NEWEST, 3)]


async def test_byte_limit_applies_before_message_limit() -> None:
    channel, drops = make(DropPolicy.DROP_OLDEST, messages=100, size=10)
    assert await channel.send(1, 6)
    assert await channel.send(2, 6)  # 12 bytes > 10: evicts item 1
    assert channel.statistics().depth_bytes == 6
    assert await channel.receive_batch() == [2]
    assert drops == [(DropReason.DROP_OLDEST, 1)]


async def test_block_policy_waits_on_bytes_too() -> None:
    channel, _ = make(DropPolicy.BLOCK, messages=100, size=10)
    assert await channel.send(1, 8)
    with pytest.raises(trio.WouldBlock):
        channel.send_nowait(2, 8)
    assert channel.receive_nowait() == 1
    assert channel.send_nowait(2, 8)


@pytest.mark.parametrize("policy", list(DropPolicy))
async def test_oversize_items_are_dropped_under_every_policy(policy: DropPolicy) -> None:
    channel, drops = make(policy, size=10)
    assert not await channel.send(1, 11)
    assert drops == [(DropReason.OVERSIZE, 1)]
    assert channel.statistics().depth == 0


async def test_close_wakes_blocked_senders_and_receivers_drain() -> None:
    channel, _ = make(DropPolicy.BLOCK, messages=1)
    await channel.send(1, 1)
    errors: list[BaseException] = []

    async def blocked() -> None:
        try:
            await channel.send(2, 1)
        except trio.ClosedResourceError as error:
            errors.append(error)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(blocked)
        await trio.testing.wait_all_tasks_blocked()
        channel.close()
    assert len(errors) == 1
    assert await channel.receive() == 1
    with pytest.raises(trio.EndOfChannel):
        await channel.receive()
    with pytest.raises(trio.ClosedResourceError):
        channel.send_nowait(3, 1)


async def test_receive_batch_returns_everything_ready_up_to_max() -> None:
    channel, _ = make(DropPolicy.BLOCK, messages=10)
    for item in range(5):
        await channel.send(item, 1)
    assert await channel.receive_batch(3) == [0, 1, 2]
    assert await channel.receive_batch(10) == [3, 4]


async def test_a_waiting_receiver_gets_items_sent_later() -> None:
    channel, _ = make(DropPolicy.BLOCK)
    got: list[list[int]] = []

    async def receiver() -> None:
        got.append(await channel.receive_batch())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(receiver)
        await trio.testing.wait_all_tasks_blocked()
        channel.send_nowait(7, 1)
    assert got == [[7]]


async def test_discard_reports_every_buffered_item() -> None:
    channel, drops = make(DropPolicy.BLOCK, messages=5)
    for item in range(3):
        await channel.send(item, 1)
    assert channel.discard() == 3
    assert drops == [(DropReason.CLOSED, 0), (DropReason.CLOSED, 1), (DropReason.CLOSED, 2)]
    assert channel.statistics().depth == 0


async def test_cancelled_blocked_send_leaves_no_trace() -> None:
    channel, drops = make(DropPolicy.BLOCK, messages=1)
    await channel.send(1, 1)
    with trio.move_on_after(0.01):
        await channel.send(2, 1)
    assert channel.statistics().blocked_senders == 0
    assert await channel.receive_batch() == [1]
    assert channel.statistics().sent == 1
    assert drops == []


async def test_buffer_survives_a_restarted_consumer() -> None:
    channel, _ = make(DropPolicy.BLOCK, messages=10)
    for item in range(4):
        await channel.send(item, 1)
    with trio.CancelScope() as scope:
        scope.cancel()
        await channel.receive_batch()
    assert await channel.receive_batch() == [0, 1, 2, 3]


async def test_wait_empty_returns_after_drain() -> None:
    channel, _ = make(DropPolicy.BLOCK)
    await channel.send(1, 1)
    drained = trio.Event()

    async def waiter() -> None:
        await channel.wait_empty()
        drained.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        assert not drained.is_set()
        channel.receive_nowait()
    assert drained.is_set()


class BufferModel(RuleBasedStateMachine):
    """Every offered item is buffered, taken, or reported dropped; limits always hold."""

    def __init__(self) -> None:
        super().__init__()
        self.core: BufferCore[int] | None = None
        self.next_item = 0
        self.offered: list[int] = []
        self.taken: list[int] = []
        self.dropped: list[int] = []
        self.waiting: list[int] = []

    @rule(
        policy=st.sampled_from(list(DropPolicy)),
        messages=st.integers(1, 6),
        size=st.integers(1, 60),
    )
    def configure(self, policy: DropPolicy, messages: int, size: int) -> None:
        if self.core is None:
            self.core = BufferCore(
                ChannelLimits(max_messages=messages, max_bytes=size, policy=policy)
            )

    @rule(size=st.integers(0, 80))
    def offer(self, size: int) -> None:
        if self.core is None:
            return
        item = self.next_item
        self.next_item += 1
        self.offered.append(item)
        outcome = self.core.offer(item, size)
        self.dropped.extend(dropped for dropped, _, _ in outcome.dropped)
        if outcome.must_wait:
            assert self.core.limits.policy is DropPolicy.BLOCK
            assert not outcome.dropped
            self.waiting.append(item)

    @rule(count=st.integers(1, 4))
    def take(self, count: int) -> None:
        if self.core is not None:
            self.taken.extend(self.core.take(count))

    @invariant()
    def limits_hold_and_nothing_vanishes(self) -> None:
        core = self.core
        if core is None:
            return
        assert core.depth <= core.limits.max_messages
        assert core.depth_bytes <= core.limits.max_bytes
        buffered = [item for item, _ in core._items]  # noqa: SLF001
        accounted = sorted(buffered + self.taken + self.dropped + self.waiting)
        assert accounted == sorted(self.offered)
        passed = self.taken + buffered
        assert passed == sorted(passed)  # FIFO


TestBufferModel = BufferModel.TestCase
TestBufferModel.settings = settings(max_examples=150, stateful_step_count=30, deadline=None)
