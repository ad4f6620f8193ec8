"""gRPC status codes and the error a peer's non-OK status becomes, free of any gRPC library."""

from __future__ import annotations

from typing import final

from bobravoz.protocol.status import StatusCode

__all__ = ["RemoteStatusError", "StatusCode"]


@final
class RemoteStatusError(Exception):
    """The peer ended a call with a non-OK gRPC status; ``code`` and ``message`` say which."""

    def __init__(self, code: StatusCode, message: str) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message
