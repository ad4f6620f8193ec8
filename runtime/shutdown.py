"""Graceful shutdown on SIGTERM and SIGINT for bobravoz processes."""

from __future__ import annotations

import logging
import signal

import trio

log = logging.getLogger(__name__)


async def cancel_on_signals(
    scope: trio.CancelScope,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Cancel ``scope`` at the first SIGTERM or SIGINT, so the process unwinds its nurseries
    (streams finished, buffers reported) and exits 0 instead of dying mid-write."""
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        task_status.started()
        async for received in signals:
            log.info("received %s, shutting down", signal.Signals(received).name)
            scope.cancel()
            return


async def set_on_signals(
    event: trio.Event,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Set ``event`` at the first SIGTERM or SIGINT (for a process that drains before it
    stops, like the hub); a second signal raises KeyboardInterrupt to stop at once."""
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        task_status.started()
        async for received in signals:
            if event.is_set():
                raise KeyboardInterrupt
            log.info("received %s, draining before shutdown", signal.Signals(received).name)
            event.set()
