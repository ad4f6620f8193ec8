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
