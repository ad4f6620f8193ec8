"""Unit tests: one-for-one supervision, restart budgets, backoff and escalation (autojump clock)."""

from __future__ import annotations

import itertools

import pytest
import trio
import trio.testing

from bobravoz.runtime.errors import SupervisorEscalation
from bobravoz.runtime.supervisor import Restart, RestartPolicy, open_supervisor

FAST = RestartPolicy(max_restarts=3, within_seconds=10, backoff_initial=0.1, backoff_max=0.5)


class Boom(Exception):
    pass


def test_policy_backoff_doubles_and_caps() -> None:
    assert [FAST.backoff(n) for n in (1, 2, 3, 4, 5)] == [0.1, 0.2, 0.4, 0.5, 0.5]
    with pytest.raises(ValueError, match="max_restarts"):
        RestartPolicy(max_restarts=-1)
    with pytest.raises(ValueError, match="backoff"):
        RestartPolicy(backoff_initial=2, backoff_max=1)


async def test_a_crashed_child_restarts_after_backoff(autojump_clock: trio.abc.Clock) -> None:
    starts: list[float] = []
    restarted: list[str] = []

    async def flaky() -> None:
        starts.append(trio.current_time())
        if len(starts) < 4:
            raise Boom

    async with open_supervisor(
        "s", FAST, on_restart=lambda name, error: restarted.append(name)
    ) as supervisor:
        supervisor.start_child("flaky", flaky)
    gaps = [round(b - a, 6) for a, b in itertools.pairwise(starts)]
    assert gaps == [0.1, 0.2, 0.4]
    assert restarted == ["flaky"] * 3
    stats = supervisor.statistics()
    assert stats.total_restarts == 3
    assert not stats.escalated


async def test_transient_normal_exit_is_not_restarted() -> None:
    runs = 0

    async def once() -> None:
        nonlocal runs
        runs += 1

    async with open_supervisor("s", FAST) as supervisor:
        supervisor.start_child("once", once, restart=Restart.TRANSIENT)
    assert runs == 1


async def test_permanent_child_is_restarted_after_normal_exit(
    autojump_clock: trio.abc.Clock,
) -> None:
    runs = 0

    async def worker() -> None:
        nonlocal runs
        runs += 1
        if runs == 3:
            supervisor.stop_child("worker")

    async with open_supervisor("s", FAST) as supervisor:
        supervisor.start_child("worker", worker, restart=Restart.PERMANENT)
    assert runs == 3


async def test_temporary_child_is_never_restarted() -> None:
    runs = 0

    async def crash() -> None:
        nonlocal runs
        runs += 1
        raise Boom

    async with open_supervisor("s", FAST) as supervisor:
        supervisor.start_child("crash", crash, restart=Restart.TEMPORARY)
    assert runs == 1
    assert "Boom" in (supervisor.statistics().children[0].last_error or "")


async def test_budget_spent_escalates_cancels_siblings_and_chains_the_cause(
    autojump_clock: trio.abc.Clock,
) -> None:
    sibling_cancelled = False

    async def sibling() -> None:
        nonlocal sibling_cancelled
        try:
            await trio.sleep_forever()
        finally:
            sibling_cancelled = True

    async def always_fails() -> None:
        raise Boom("still broken")

    async def supervise() -> None:
        async with open_supervisor("s", FAST) as supervisor:
            supervisor.start_child("sibling", sibling)
            supervisor.start_child("bad", always_fails)

    with pytest.raises(SupervisorEscalation) as caught:
        await supervise()
    assert caught.value.child == "bad"
    assert caught.value.restarts == 3
    assert isinstance(caught.value.__cause__, Boom)
    assert sibling_cancelled


async def test_restarts_spread_beyond_the_window_never_escalate(
    autojump_clock: trio.abc.Clock,
) -> None:
    policy = RestartPolicy(max_restarts=1, within_seconds=1, backoff_initial=0, backoff_max=0)
    runs = 0

    async def slow_failure() -> None:
        nonlocal runs
        runs += 1
        await trio.sleep(2)  # longer than the window between failures
        if runs < 6:
            raise Boom

    async with open_supervisor("s", policy) as supervisor:
        supervisor.start_child("slow", slow_failure)
    assert runs == 6


async def test_a_crashing_child_never_disturbs_a_sibling(autojump_clock: trio.abc.Clock) -> None:
    ticks = 0

    async def steady() -> None:
        nonlocal ticks
        for _ in range(50):
            await trio.sleep(0.1)
            ticks += 1

    async def crashes_twice() -> None:
        if supervisor.statistics().total_restarts < 2:
            await trio.sleep(0.5)
            raise Boom

    async with open_supervisor("s", FAST) as supervisor:
        supervisor.start_child("steady", steady)
        supervisor.start_child("crashy", crashes_twice)
    assert ticks == 50


async def test_start_child_ready_returns_the_started_value() -> None:
    async def server(*, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started(42)
        await trio.sleep_forever()

    async with open_supervisor("s", FAST) as supervisor:
        assert await supervisor.start_child_ready("server", server) == 42
        assert supervisor.children == ("server",)
        supervisor.cancel()


async def test_duplicate_names_are_refused() -> None:
    async with open_supervisor("s", FAST) as supervisor:
        supervisor.start_child("x", trio.sleep_forever)
        with pytest.raises(ValueError, match="already runs"):
            supervisor.start_child("x", trio.sleep_forever)
        supervisor.cancel()


async def test_stop_child_cancels_only_that_child() -> None:
    finished: list[str] = []

    async def forever(name: str) -> None:
        try:
            await trio.sleep_forever()
        finally:
            finished.append(name)

    async with open_supervisor("s", FAST) as supervisor:
        supervisor.start_child("a", forever, "a")
        supervisor.start_child("b", forever, "b")
        await trio.testing.wait_all_tasks_blocked()
        assert supervisor.stop_child("a")
        assert not supervisor.stop_child("missing")
        await trio.testing.wait_all_tasks_blocked()
        assert finished == ["a"]
        assert supervisor.children == ("b",)
        supervisor.cancel()
    assert sorted(finished) == ["a", "b"]


async def test_cancelling_the_supervisor_leaves_no_task_behind() -> None:
    async with open_supervisor("s", FAST) as supervisor:
        for index in range(5):
            supervisor.start_child(f"c{index}", trio.sleep_forever)
        await trio.testing.wait_all_tasks_blocked()
        supervisor.cancel()
    assert supervisor.children == ()
