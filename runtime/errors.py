"""Errors of the actor runtime (others reuse trio's Closed/Broken/EndOfChannel errors)."""

from __future__ import annotations

from typing import final


class BobravozError(Exception):
    """Base of bobravoz's own errors."""


@final
class SupervisorEscalation(BobravozError):
    """A child failed more often than its supervisor's restart budget allows.

    Raised from the child's last error; ``supervisor`` and ``child`` name them and
    ``restarts`` counts the restarts inside the window.
    """

    def __init__(self, supervisor: str, child: str, restarts: int) -> None:
        super().__init__(
            f"supervisor {supervisor!r}: child {child!r} failed after {restarts} restarts "
            "within the window; escalating"
        )
        self.supervisor = supervisor
        self.child = child
        self.restarts = restarts
