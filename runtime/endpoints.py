"""Endpoint strings (``host:port``, bare port, ``unix:///path``) parsed into one typed value."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from typing import final

DEFAULT_HOST = "127.0.0.1"


@final
@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where a gRPC server listens or a client dials: TCP ``host``/``port`` or a unix socket."""

    host: str = DEFAULT_HOST
    port: int = 0
    unix_path: str | None = None

    def __str__(self) -> str:
        if self.unix_path is not None:
            return f"unix://{self.unix_path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def is_local(self) -> bool:
        """True for unix sockets and loopback hosts (where plaintext is acceptable)."""
        if self.unix_path is not None:
            return True
        return self.host in {"localhost", "::1"} or self.host.startswith("127.")


def prepare_unix_socket(path: str) -> None:
    """Create the socket's folder and remove a stale socket at ``path``.

    A regular file (not a socket) at ``path`` is an error, never silently deleted.
    """
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, mode=0o755, exist_ok=True)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise ValueError(f"{path} exists and is not a unix socket")
    os.unlink(path)


def parse_endpoint(text: str, *, allow_port_zero: bool = False) -> Endpoint:
    """Parse ``unix:///abs/path``, ``host:port``, ``:port`` or a bare ``port``.

    An empty host means 127.0.0.1. Raises ``ValueError`` naming what is wrong.
    """
    value = text.strip()
    if not value:
        raise ValueError("endpoint is empty")
    if value.startswith("unix://"):
        path = value[len("unix://") :]
        if not path.startswith("/"):
            raise ValueError(f"unix endpoint {text!r} needs an absolute path (unix:///path)")
        return Endpoint(unix_path=path)
    host, sep, port_text = value.rpartition(":")
    if not sep:
        host, port_text = "", value
    host = host.strip("[]") or DEFAULT_HOST
    if any(char.isspace() or char in "[]" for char in host):
        raise ValueError(f"endpoint {text!r}: host {host!r} holds whitespace or brackets")
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"endpoint {text!r}: port {port_text!r} is not a number") from None
    low = 0 if allow_port_zero else 1
    if not low <= port <= 65535:
        raise ValueError(f"endpoint {text!r}: port {port} is outside {low}..65535")
    return Endpoint(host=host, port=port)
