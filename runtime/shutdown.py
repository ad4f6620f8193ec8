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
    second one cancels the scope :meth:`watch` was given, to stop at once, and :attr:`forced`
    says so afterwards (the process then exits 130, as for an interrupt). Made before
    ``trio.run`` and read after it: :attr:`exit_status`."""

    def __init__(self) -> None:
        self.requested = trio.Event()
        self.forced = False

    @property
    def exit_status(self) -> int:
        """130 when a second signal stopped the process at once, else 0."""
        return 130 if self.forced else 0

    async def watch(
        self,
        scope: trio.CancelScope,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Receive the signals until the second one, which cancels ``scope`` (run it in a
        nursery ``scope`` covers)."""
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
                scope.cancel()
                return
