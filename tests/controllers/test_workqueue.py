"""The reconcile work queue: de-duplication, no concurrent processing of a key, backoff."""

from __future__ import annotations

import itertools

import trio
import trio.testing

from bobravoz.controllers.workqueue import WorkQueue


async def test_duplicates_collapse_and_order_is_kept() -> None:
    queue = WorkQueue()
    for key in ("a", "b", "a", "c", "b"):
        queue.add(key)
    assert [await queue.get() for _ in range(3)] == ["a", "b", "c"]
    assert queue.statistics().depth == 0


async def test_a_key_added_while_processing_comes_back_once_after() -> None:
    queue = WorkQueue()
    queue.add("a")
    key = await queue.get()
    queue.add("a")
    queue.add("a")
    assert queue.statistics().depth == 0  # not handed out twice at once
    queue.done(key)
    assert await queue.get() == "a"
    queue.done("a")
    assert queue.statistics().depth == 0


async def test_failures_back_off_exponentially_and_forget_resets(
    autojump_clock: trio.abc.Clock,
) -> None:
    queue = WorkQueue(base_delay=1.0, max_delay=4.0)
    seen: list[float] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(queue.run_timers)
        queue.add("k")
        for _ in range(5):
            key = await queue.get()
            seen.append(trio.current_time())
            queue.done(key)
            queue.retry(key)
        queue.forget("k")
        assert queue.retry("k") == 1.0
        nursery.cancel_scope.cancel()
    gaps = [round(b - a, 6) for a, b in itertools.pairwise(seen)]
    assert gaps == [1.0, 2.0, 4.0, 4.0]


async def test_add_after_and_close(autojump_clock: trio.abc.Clock) -> None:
    queue = WorkQueue()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(queue.run_timers)
        queue.add_after("later", 10)
        queue.add_after("later", 3)  # the earlier schedule wins
        start = trio.current_time()
        assert await queue.get() == "later"
        assert trio.current_time() - start == 3
        queue.done("later")
        queue.close()
        try:
            await queue.get()
        except trio.EndOfChannel:
            pass
        else:
            raise AssertionError("a closed queue must end")
        nursery.cancel_scope.cancel()
