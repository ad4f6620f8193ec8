"""The list → watch → relist loop, done the way the official client leaves to its users.

List, remember the list's ``resourceVersion``, watch from it with bookmarks (every event,
bookmarks included, moves the version forward), re-watch from the last version when the
server ends a watch, relist from scratch on 410 Gone, and reconnect with exponential backoff
when the connection fails. The blocking client runs in a worker thread per watch request;
each object seen is handed to ``on_object`` in trio.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, final

import trio

from bobravoz.controllers.kube import ApiError, Kind, Kube

log = logging.getLogger(__name__)

#: Called with (event type, object) for every object listed or watched.
OnObject = Callable[[str, dict[str, Any]], None]


@final
@dataclass
class WatchStatistics:
    """How a watch loop has fared (read by metrics and tests)."""

    lists: int = 0
    watches: int = 0
    relists_after_gone: int = 0
    reconnects: int = 0
    events: int = 0
    bookmarks: int = 0
    last_version: str = ""
    errors: list[str] = field(default_factory=list)


def _stream(
    kube: Kube, kind: Kind, version: str, timeout: int, on_object: OnObject, stats: WatchStatistics
) -> str:
    """One watch request, in a worker thread; returns the last version seen."""
    for event in kube.watch(kind, version, timeout):
        obj = event.get("object") or event.get("raw_object") or {}
        if not isinstance(obj, dict):
            continue
        version = str(obj.get("metadata", {}).get("resourceVersion") or version)
        if event["type"] == "BOOKMARK":
            stats.bookmarks += 1
        else:
            stats.events += 1
            trio.from_thread.run_sync(on_object, event["type"], obj)
        stats.last_version = version
    return version


async def watch_forever(
    kube: Kube,
    kind: Kind,
    on_object: OnObject,
    *,
    stats: WatchStatistics | None = None,
    timeout_seconds: int = 60,
    backoff_initial: float = 0.2,
    backoff_max: float = 30.0,
    task_status: trio.TaskStatus[WatchStatistics] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Keep ``on_object`` fed with every object of ``kind`` until cancelled (module docstring).

    ``task_status.started`` fires after the first complete list.
    """
    stats = stats or WatchStatistics()
    version: str | None = None
    backoff = backoff_initial
    started = False
    while True:
        try:
            if version is None:
                items, listed = await trio.to_thread.run_sync(kube.list, kind)
                stats.lists += 1
                for item in items:
                    on_object("ADDED", item)
                stats.last_version = version = listed
                if not started:
                    started = True
                    task_status.started(stats)
            stats.watches += 1
            from_version: str = version
            version = await trio.to_thread.run_sync(
                _stream,
                kube,
                kind,
                from_version,
                timeout_seconds,
                on_object,
                stats,
                abandon_on_cancel=True,
            )
            backoff = backoff_initial
        except ApiError as error:
            if error.status == 410:
                log.info("watch of %s expired (410 Gone); relisting", kind.plural)
                stats.relists_after_gone += 1
                version = None
                continue
            stats.errors.append(str(error))
            await _pause(stats, backoff)
            backoff = min(backoff * 2, backoff_max)
        except Exception as error:  # noqa: BLE001 - urllib3/socket errors: reconnect
            stats.errors.append(repr(error))
            log.info("watch of %s failed (%r); reconnecting", kind.plural, error)
            await _pause(stats, backoff)
            backoff = min(backoff * 2, backoff_max)


async def _pause(stats: WatchStatistics, backoff: float) -> None:
    stats.reconnects += 1
    await trio.sleep(backoff * random.uniform(1.0, 1.3))
