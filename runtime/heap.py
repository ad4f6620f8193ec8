"""Garbage-collector settings for long-running bobravoz processes.

After start-up, everything allocated so far (modules, configuration, servers) lives as long as
the process: :func:`settle_heap` moves it out of the collector's reach (``gc.freeze``) so a
full collection no longer walks it, and raises the young-generation threshold so collections
run less often on the per-packet path (which allocates no reference cycles of its own).
The message codecs are built first, so they are part of what is frozen.
"""

from __future__ import annotations

import gc
from typing import Final

from bobravoz.protocol.warmup import warm_messages

#: Allocations (minus deallocations) between young-generation collections (CPython: 700).
YOUNG_THRESHOLD: Final = 10_000


def settle_heap() -> None:
    """Warm the message codecs (:func:`~bobravoz.protocol.warmup.warm_messages`), collect
    once, freeze what survived start-up, and make collections rarer."""
    warm_messages()
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
