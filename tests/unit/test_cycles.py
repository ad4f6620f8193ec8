"""Unit: pipeline cycles per Story concurrency mode (parallel, serial, cancelPrevious)."""

from __future__ import annotations

from functools import partial

import pytest
import trio
import trio.testing

from bobravoz.runtime.cycles import Cycle, CycleQueueFull, CycleTracker, cycle_key


def test_cycle_key_per_storyrun_and_participant() -> None:
    assert cycle_key("ns", "run", "step", "storyrun", {"participant": "p1"}) == "ns/run:step"
    assert cycle_key("ns", "run", "step", None, {}) == "ns/run:step"
    assert cycle_key("ns", "run", "step", "participant", {}) == "ns/run:step"
    assert (
        cycle_key("ns", "run", "step", "participant", {"participant": " p1 "}) == "ns/run:step:p1"
    )
    assert (
        cycle_key("ns", "run", "step", "participant", {"participant.id": "p2"}) == "ns/run:step:p2"
    )
    assert (
        cycle_key("ns", "run", "step", "participant", {"participant": "", "participant.id": "p3"})
        == "ns/run:step:p3"
    )


def test_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="concurrency mode"):
        CycleTracker("eventually")  # type: ignore[arg-type]


async def hold(
    tracker: CycleTracker,
    key: str,
    log: list[str],
    name: str,
    *,
    until: trio.Event,
    entered: trio.Event | None = None,
    cycles: dict[str, Cycle] | None = None,
) -> None:
    """Run a cycle that stays in its body until ``until`` is set; log enter/exit/cancelled."""
    async with tracker.cycle(key) as cycle:
        if cycles is not None:
            cycles[name] = cycle
        log.append(f"enter {name}")
        if entered is not None:
            entered.set()
        await until.wait()
        log.append(f"done {name}")
    log.append(f"exit {name}" + (" cancelled" if cycle.cancelled else ""))


async def test_cancel_previous_cancels_the_cycle_in_flight() -> None:
    tracker = CycleTracker("cancelPrevious")
    log: list[str] = []
    release = trio.Event()
    async with trio.open_nursery() as nursery:
        first_in = trio.Event()
        nursery.start_soon(
            partial(hold, tracker, "k", log, "a", until=trio.Event(), entered=first_in)
        )
        await first_in.wait()
        second_in = trio.Event()
        nursery.start_soon(partial(hold, tracker, "k", log, "b", until=release, entered=second_in))
        await second_in.wait()
        await trio.testing.wait_all_tasks_blocked()
        assert log == ["enter a", "enter b", "exit a cancelled"]
        release.set()
    assert log[-2:] == ["done b", "exit b"]
    assert tracker.counts["cancelled"] == 1
    assert tracker.counts["started"] == 2
    assert len(tracker) == 0


async def test_cancel_previous_leaves_other_keys_alone() -> None:
    tracker = CycleTracker("cancelPrevious")
    log: list[str] = []
    release = trio.Event()
    async with trio.open_nursery() as nursery:
        for name, key in (("a", "k1"), ("b", "k2")):
            entered = trio.Event()
            nursery.start_soon(
                partial(hold, tracker, key, log, name, until=release, entered=entered)
            )
            await entered.wait()
        assert len(tracker) == 2
        release.set()
    assert "exit a" in log
    assert "exit b" in log
    assert tracker.counts["cancelled"] == 0


async def test_outer_cancellation_passes_through_a_cycle() -> None:
    tracker = CycleTracker("cancelPrevious")
    with trio.CancelScope() as outer:
        async with tracker.cycle("k") as cycle:
            outer.cancel()
            await trio.sleep_forever()
        pytest.fail("the cycle swallowed an outer cancellation")  # pragma: no cover
    assert outer.cancelled_caught
    assert not cycle.cancelled
    assert len(tracker) == 0


async def test_an_error_in_the_body_propagates_and_cleans_up() -> None:
    for mode in ("parallel", "serial", "cancelPrevious"):
        tracker = CycleTracker(mode)
        with pytest.raises(KeyError):
            async with tracker.cycle("k"):
                raise KeyError("boom")
        assert len(tracker) == 0


async def test_cancel_by_key() -> None:
    for mode in ("serial", "cancelPrevious"):
        tracker = CycleTracker(mode)
        log: list[str] = []
        assert not tracker.cancel("k")
        async with trio.open_nursery() as nursery:
            entered = trio.Event()
            nursery.start_soon(
                partial(hold, tracker, "k", log, "a", until=trio.Event(), entered=entered)
            )
            await entered.wait()
            assert tracker.cancel("k")
            assert not tracker.cancel("k")  # already cancelled
        assert log == ["enter a", "exit a cancelled"]
        assert tracker.counts["cancelled"] == 1
        assert len(tracker) == 0


async def test_parallel_cycles_overlap_untracked() -> None:
    tracker = CycleTracker("parallel")
    log: list[str] = []
    release = trio.Event()
    async with trio.open_nursery() as nursery:
        for name in ("a", "b", "c"):
            entered = trio.Event()
            nursery.start_soon(
                partial(hold, tracker, "k", log, name, until=release, entered=entered)
            )
            await entered.wait()
        assert log == ["enter a", "enter b", "enter c"]
        assert len(tracker) == 0
        assert not tracker.cancel("k")
        release.set()
    assert sorted(log[3:]) == sorted(["done a", "done b", "done c", "exit a", "exit b", "exit c"])


async def test_serial_cycles_run_one_at_a_time_in_arrival_order() -> None:
    tracker = CycleTracker("serial")
    log: list[str] = []
    releases = {name: trio.Event() for name in "abcd"}
    async with trio.open_nursery() as nursery:
        entered = trio.Event()
        nursery.start_soon(
            partial(hold, tracker, "k", log, "a", until=releases["a"], entered=entered)
        )
        await entered.wait()
        for name in "bcd":
            nursery.start_soon(partial(hold, tracker, "k", log, name, until=releases[name]))
            await trio.testing.wait_all_tasks_blocked()
        assert log == ["enter a"]
        assert tracker.counts["waited"] == 3
        for name in "abcd":
            releases[name].set()
            await trio.testing.wait_all_tasks_blocked()
    assert log == [
        "enter a", "done a", "exit a",
        "enter b", "done b", "exit b",
        "enter c", "done c", "exit c",
        "enter d", "done d", "exit d",
    ]  # fmt: skip
    assert len(tracker) == 0


async def test_serial_waiter_cancelled_while_waiting_leaves_the_queue() -> None:
    tracker = CycleTracker("serial")
    log: list[str] = []
    release_a = trio.Event()
    async with trio.open_nursery() as nursery:
        entered = trio.Event()
        nursery.start_soon(partial(hold, tracker, "k", log, "a", until=release_a, entered=entered))
        await entered.wait()
        waiter_scope = trio.CancelScope()

        async def cancellable_waiter() -> None:
            with waiter_scope:
                await hold(tracker, "k", log, "b", until=trio.Event())
            log.append("b gave up")

        nursery.start_soon(cancellable_waiter)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(
            partial(hold, tracker, "k", log, "c", until=trio.Event())
        )  # never released
        await trio.testing.wait_all_tasks_blocked()
        waiter_scope.cancel()
        await trio.testing.wait_all_tasks_blocked()
        assert log == ["enter a", "b gave up"]
        release_a.set()
        await trio.testing.wait_all_tasks_blocked()
        assert log[-1] == "enter c"
        assert tracker.cancel("k")
    assert log[-1] == "exit c cancelled"
    assert len(tracker) == 0


async def test_serial_cancelled_waiter_alone_cleans_up() -> None:
    tracker = CycleTracker("serial")
    release = trio.Event()
    log: list[str] = []
    async with trio.open_nursery() as nursery:
        entered = trio.Event()
        nursery.start_soon(partial(hold, tracker, "k", log, "a", until=release, entered=entered))
        await entered.wait()
        with trio.CancelScope() as scope:
            scope.cancel()
            async with tracker.cycle("k"):
                pytest.fail("entered while the key was held")  # pragma: no cover
        assert scope.cancelled_caught
        release.set()
    assert len(tracker) == 0


async def test_serial_refuses_more_than_max_waiters() -> None:
    tracker = CycleTracker("serial", max_waiters=1)
    release = trio.Event()
    log: list[str] = []
    async with trio.open_nursery() as nursery:
        entered = trio.Event()
        nursery.start_soon(partial(hold, tracker, "k", log, "a", until=release, entered=entered))
        await entered.wait()
        nursery.start_soon(partial(hold, tracker, "k", log, "b", until=release))
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(CycleQueueFull):
            async with tracker.cycle("k"):
                pytest.fail("entered past the waiter limit")  # pragma: no cover
        # Another key has its own queue.
        async with tracker.cycle("other"):
            pass
        release.set()
    assert tracker.counts["rejected"] == 1
    assert log.count("exit a") == log.count("exit b") == 1
    assert len(tracker) == 0


async def test_serial_cancelled_holder_hands_over() -> None:
    tracker = CycleTracker("serial")
    log: list[str] = []
    release_b = trio.Event()
    async with trio.open_nursery() as nursery:
        entered = trio.Event()
        nursery.start_soon(
            partial(hold, tracker, "k", log, "a", until=trio.Event(), entered=entered)
        )
        await entered.wait()
        nursery.start_soon(partial(hold, tracker, "k", log, "b", until=release_b))
        await trio.testing.wait_all_tasks_blocked()
        tracker.cancel("k")
        await trio.testing.wait_all_tasks_blocked()
        assert log == ["enter a", "exit a cancelled", "enter b"]
        release_b.set()
    assert len(tracker) == 0


@pytest.mark.parametrize("mode", ["parallel", "serial", "cancelPrevious"])
async def test_ten_thousand_cycles_leave_nothing_behind(mode: str) -> None:
    tracker = CycleTracker(mode, max_waiters=10_000)  # type: ignore[arg-type]
    for index in range(10_000):
        async with tracker.cycle(f"k{index % 100}"):
            await trio.lowlevel.checkpoint()
    assert len(tracker) == 0

    async def one(index: int) -> None:
        async with tracker.cycle(f"k{index % 10}"):
            await trio.lowlevel.checkpoint()
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        for index in range(2_000):
            nursery.start_soon(one, index)
    assert len(tracker) == 0
    assert tracker.counts["started"] == 12_000
    if mode == "cancelPrevious":
        assert tracker.counts["cancelled"] > 0
    if mode == "serial":
        assert tracker.counts["waited"] > 0
