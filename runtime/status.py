"""gRPC status codes and the error a peer's non-OK status becomes, free of any gRPC library."""

from __future__ import annotations

import enum
from typing import final


class StatusCode(enum.IntEnum):
    """The gRPC status codes (numbers fixed by the gRPC specification)."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


@final
class RemoteStatusError(Exception):
    """The peer ended a call with a non-OK gRPC status; ``code`` and ``message`` say which."""

    def __init__(self, code: StatusCode, message: str) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message
