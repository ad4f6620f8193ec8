"""What an engram's SDK lost: counted, logged and reported.

The transport counts what it loses (``bobravoz_packets_lost_total``); the first and last hops
are the SDK's own. Coming in: a packet that does not decode, a chunk the joiner refuses, a
chunked payload whose chunks stop coming, what was received and still waiting for a handler
that was stopped (not returned by itself). Going out: what the handler emitted and the SDK
never wrote to the connector (the engram was stopped, or gave up reconnecting). Each is logged
when it happens, counted by reason, and reported once at the end as a ``losses`` line, which
``bobravoz up`` adds to the run's loss.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Final, final

from bobravoz.sdk.report import report

log = logging.getLogger("bobravoz.sdk")

#: Reasons (the unit is what the handler would have been given: a packet, or a whole payload
#: for the chunk reasons). ``chunk_<reason>`` adds each joiner error (``runtime.chunks``).
UNDECODABLE: Final = "undecodable"
CHUNK_SET_EXPIRED: Final = "chunk_set_expired"
CHUNK_SET_INCOMPLETE: Final = "chunk_set_incomplete"
UNSENT: Final = "unsent"
UNHANDLED: Final = "unhandled"


@final
class SdkLosses:
    """Packets this engram's SDK lost, by reason: received from its connector and never
    handed to its handler, or emitted by its handler and never written to the connector. One
    per engram run, shared by its connections; it only grows."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def count(self, reason: str, what: str, number: int = 1) -> None:
        """Count ``number`` under ``reason`` and log ``what`` as a warning (never silent)."""
        if number <= 0:
            return
        self.counts[reason] += number
        log.warning("%s: lost in the SDK (%s: %d so far)", what, reason, self.counts[reason])

    @property
    def total(self) -> int:
        """Everything counted, all reasons together."""
        return sum(self.counts.values())

    def report(self, step: str) -> None:
        """Print the ``losses`` report line (``bobravoz up`` reads it) when anything was
        lost; nothing otherwise."""
        if self.counts:
            report("losses", step=step, lost=self.total, reasons=dict(sorted(self.counts.items())))
