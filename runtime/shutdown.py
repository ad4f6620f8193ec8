"""Graceful shutdown on SIGTERM and SIGINT for bobravoz processes."""

from __future__ import annotations

import logging
import signal
from typing import final

import trio

log = logging.getLogger(__name__)

#: The signals that stop a bobravoz process (Kubernetes sends SIGTERM; a terminal SIGINT).
STOP_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT)


async def cancel_on_signals(
    scope: trio.CancelScope,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Cancel ``scope`` at the first SIGTERM or SIGINT, so the process unwinds its nurseries
    (streams finished, buffers reported) and exits 0 instead of dying mid-write."""
    with trio.open_signal_receiver(*STOP_SIGNALS) as signals:
        task_status.started()
        async for received in signals:
            log.info("received %s, shutting down", signal.Signals(received).name)
            scope.cancel()
            return


@final
class TwoStageStop:
    """Stop in two stages: the first SIGTERM or SIGINT asks the process to drain
    (:attr:`requested` is set: stop taking new work, finish and hand on what it holds); a
    second one cancels :attr:`scope` to stop at once, and :attr:`forced` says so afterwards
    (the process then exits 130, as for an interrupt)."""

    def __init__(self, scope: trio.CancelScope) -> None:
        self.scope = scope
        self.requested = trio.Event()
        self.forced = False

    async def watch(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Receive the signals until the second one (run it in the nursery ``scope`` covers)."""
        with trio.open_signal_receiver(*STOP_SIGNALS) as signals:
            task_status.started()
            async for received in signals:
                name = signal.Signals(received).name
                if not self.requested.is_set():
                    log.info("received %s, draining before shutdown", name)
                    self.requested.set()
                    continue
                log.warning("received %s again: stopping at once, without draining", name)
                self.forced = True
                self.scope.cancel()
                return
