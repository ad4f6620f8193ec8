"""Unit tests: one-for-one supervision, restart budgets, backoff and escalation (autojump clock)."""

from __future__ import annotations

import itertools
import logging

import pytest
import trio
import trio.testing

from bobravoz.runtime.errors import SupervisorEscalation
from bobravoz.runtime.supervisor import Restart, RestartPolicy, open_supervisor

LOGGER = "bobravoz.runtime.supervisor"
TIMEOUT = 60  # guards every wait so a regression fails instead of hanging
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


async def test_a_temporary_failure_is_logged_and_reported_and_supervision_goes_on(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger=LOGGER)
    reported: list[tuple[str, BaseException]] = []
    failed = trio.Event()
    later_ran = trio.Event()
    error = Boom("temporary trouble")

    def on_failure(name: str, exc: BaseException) -> None:
        reported.append((name, exc))
        failed.set()

    async def crash() -> None:
        raise error

    async def later() -> None:
        later_ran.set()

    async with open_supervisor("s", FAST, on_failure=on_failure) as supervisor:
        supervisor.start_child("sibling", trio.sleep_forever)
        supervisor.start_child("temp", crash, restart=Restart.TEMPORARY)
        with trio.fail_after(TIMEOUT):
            await failed.wait()
        await trio.testing.wait_all_tasks_blocked()
        assert reported == [("temp", error)]
        assert supervisor.children == ("sibling",)
        supervisor.start_child("later", later)
        with trio.fail_after(TIMEOUT):
            await later_ran.wait()
        assert supervisor.failures == 1
        supervisor.cancel()

    records = [r for r in caplog.records if r.name == LOGGER and r.levelno == logging.ERROR]
    assert len(records) == 1
    assert "temp" in records[0].getMessage()
    assert records[0].exc_info is not None
    assert records[0].exc_info[1] is error
    stats = supervisor.statistics()
    assert stats.total_failures == 1
    assert stats.total_restarts == 0
    assert not stats.escalated


async def test_transient_failures_report_each_failure_before_each_restart(
    autojump_clock: trio.abc.Clock,
) -> None:
    events: list[tuple[str, str, BaseException]] = []
    raised: list[BaseException] = []

    async def flaky() -> None:
        if len(raised) < 3:
            raised.append(Boom(f"failure {len(raised)}"))
            raise raised[-1]

    async with open_supervisor(
        "s",
        FAST,
        on_failure=lambda name, exc: events.append(("failure", name, exc)),
        on_restart=lambda name, exc: events.append(("restart", name, exc)),
    ) as supervisor:
        supervisor.start_child("flaky", flaky, restart=Restart.TRANSIENT)

    expected = [(kind, "flaky", exc) for exc in raised for kind in ("failure", "restart")]
    assert len(raised) == 3
    assert events == expected
    stats = supervisor.statistics()
    assert (stats.total_failures, stats.total_restarts) == (3, 3)


async def test_the_failure_that_escalates_is_reported_but_not_restarted(
    autojump_clock: trio.abc.Clock,
) -> None:
    failures: list[str] = []
    restarts: list[str] = []

    async def always_fails() -> None:
        raise Boom

    with pytest.raises(SupervisorEscalation):
        async with open_supervisor(
            "s",
            FAST,
            on_failure=lambda name, exc: failures.append(name),
            on_restart=lambda name, exc: restarts.append(name),
        ) as supervisor:
            supervisor.start_child("bad", always_fails)
    assert failures == ["bad"] * 4  # max_restarts + 1: the last one spends the budget
    assert restarts == ["bad"] * 3
    assert supervisor.failures == 4


async def test_stop_child_during_the_restart_backoff_is_final(
    autojump_clock: trio.abc.Clock,
) -> None:
    slow = RestartPolicy(max_restarts=3, within_seconds=60, backoff_initial=10, backoff_max=10)
    runs = 0
    in_backoff = trio.Event()

    async def fails_once() -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            raise Boom

    async def outlives_the_backoff() -> None:
        await trio.sleep(30)

    async with open_supervisor(
        "s", slow, on_restart=lambda name, exc: in_backoff.set()
    ) as supervisor:
        supervisor.start_child("sibling", outlives_the_backoff)
        supervisor.start_child("flaky", fails_once, restart=Restart.TRANSIENT)
        with trio.fail_after(TIMEOUT):
            await in_backoff.wait()
        assert runs == 1
        assert supervisor.stop_child("flaky")
        assert "flaky" not in supervisor.children
        assert "sibling" in supervisor.children
        assert not supervisor.stop_child("flaky")
    assert trio.current_time() >= 30  # well past the 10 s backoff
    assert runs == 1
    assert supervisor.children == ()
    [flaky] = [c for c in supervisor.statistics().children if c.name == "flaky"]
    assert flaky.restarts == 1


async def test_stop_child_before_it_ever_ran_is_honoured(autojump_clock: trio.abc.Clock) -> None:
    runs = 0

    async def worker() -> None:
        nonlocal runs
        runs += 1

    async def outlives_the_backoff() -> None:
        await trio.sleep(30)

    async with open_supervisor("s", FAST) as supervisor:
        supervisor.start_child("sibling", outlives_the_backoff)
        supervisor.start_child("worker", worker, restart=Restart.PERMANENT)
        assert supervisor.stop_child("worker")  # no checkpoint since start_child
        assert supervisor.children == ("sibling",)
    assert runs == 0


async def test_the_finished_children_history_is_bounded() -> None:
    finished: list[str] = []

    async def done(name: str) -> None:
        finished.append(name)

    async with open_supervisor("s", FAST) as supervisor:
        for index in range(1_000):
            supervisor.start_child(f"c{index}", done, f"c{index}", restart=Restart.TEMPORARY)
    assert len(finished) == 1_000
    assert supervisor.children == ()
    assert len(supervisor.statistics().children) <= 64

    finished.clear()
    async with open_supervisor("s", FAST, history_limit=10) as supervisor:
        for index in range(1_000):
            supervisor.start_child(f"c{index}", done, f"c{index}", restart=Restart.TEMPORARY)
    names = [child.name for child in supervisor.statistics().children]
    assert names == finished[-10:]  # the earliest finished were evicted first


async def test_bounded_history_keeps_running_children_and_running_totals(
    autojump_clock: trio.abc.Clock,
) -> None:
    release = trio.Event()
    all_done = trio.Event()
    runs: dict[int, int] = {}

    async def fails_once(index: int) -> None:
        runs[index] = runs.get(index, 0) + 1
        if runs[index] == 1:
            raise Boom
        if sum(runs.values()) == 200:
            all_done.set()

    async def held() -> None:
        await release.wait()

    async with open_supervisor("s", FAST, history_limit=5) as supervisor:
        supervisor.start_child("held", held)
        for index in range(100):
            supervisor.start_child(f"c{index}", fails_once, index)
        with trio.fail_after(TIMEOUT):
            await all_done.wait()
        await trio.testing.wait_all_tasks_blocked()
        assert supervisor.children == ("held",)
        stats = supervisor.statistics()
        assert len(stats.children) == 6
        assert "held" in {child.name for child in stats.children}
        assert stats.total_restarts == 100
        assert stats.total_failures == 100
        release.set()
    assert len(supervisor.statistics().children) == 5


async def test_a_raising_hook_never_breaks_supervision(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger=LOGGER)
    runs = {"flaky": 0, "temp": 0}
    sibling_done = False

    def broken_hook(name: str, exc: BaseException) -> None:
        raise RuntimeError("hook is broken")

    async def flaky(name: str) -> None:
        runs[name] += 1
        if runs[name] < 3:
            raise Boom

    async def sibling() -> None:
        nonlocal sibling_done
        await trio.sleep(5)
        sibling_done = True

    async with open_supervisor(
        "s", FAST, on_failure=broken_hook, on_restart=broken_hook
    ) as supervisor:
        supervisor.start_child("sibling", sibling)
        supervisor.start_child("flaky", flaky, "flaky")
        supervisor.start_child("temp", flaky, "temp", restart=Restart.TEMPORARY)
    assert sibling_done
    assert runs == {"flaky": 3, "temp": 1}  # flaky: 2 failures, then success
    stats = supervisor.statistics()
    assert not stats.escalated
    assert stats.total_failures == 3
    assert stats.total_restarts == 2
    hook_errors = [r for r in caplog.records if "hook failed" in r.getMessage()]
    assert len(hook_errors) == 5  # 3 on_failure + 2 on_restart
    assert all(
        r.exc_info is not None and isinstance(r.exc_info[1], RuntimeError) for r in hook_errors
    )
