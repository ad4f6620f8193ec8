"""Connection-level limits at the transport boundary: the policy, without I/O.

A server (:func:`~bobravoz.runtime.grpc_bridge.serve_grpc`) owns one :class:`ConnectionGuard`.
The bridge tells it what happens on each connection (accepted, a request's HEADERS, a stream
ended, a stream reset by the peer, a PING, a socket read) and carries its verdicts out: a
:class:`Refusal` is answered with GOAWAY (its message as debug data) and the connection is
closed, or, for one stream, with a trailers-only gRPC status. Time comes from the caller
(``now``), so the rules are plain functions of what was reported and run under trio's
autojump clock in tests.

The rules, each refusal counted by its ``reason`` (``bobravoz_boundary_refusals_total``):

- connections: at most ``max_connections`` at once (below the open-files limit, see
  :func:`connection_bound`) and ``max_connections_per_peer`` per client address; past
  either a new connection is closed at once;
- first request: a connection that has not sent a request's HEADERS ``handshake_timeout``
  seconds after it was accepted (TLS handshake, preface and SETTINGS included) is closed;
- idle: a connection with no stream for ``idle_timeout`` seconds gets GOAWAY(NO_ERROR);
- keepalive: after ``keepalive_time`` seconds without reading anything the server pings, and
  closes the connection when nothing arrives within ``keepalive_timeout``;
- pings (Go's server policy): a PING sooner than ``ping_min_interval`` after the previous one,
  or any second PING while no stream is open, is a strike unless the server sent something
  in between; more than ``max_ping_strikes`` strikes: GOAWAY(ENHANCE_YOUR_CALM,
  ``too_many_pings``);
- rapid reset: streams the peer resets draw on a budget of ``reset_burst`` refilled at
  ``reset_rate`` a second; overdrawn: GOAWAY(ENHANCE_YOUR_CALM);
- streams per peer: at most ``max_streams_per_peer`` open across a client address's
  connections (RESOURCE_EXHAUSTED for the stream past it).
"""

from __future__ import annotations

import collections
import contextlib
import resource
from dataclasses import dataclass
from typing import Final, Literal, final

import msgspec

MIB: Final = 1024 * 1024
#: HTTP/2 error codes a GOAWAY carries (RFC 9113, section 7).
NO_ERROR: Final = 0x0
PROTOCOL_ERROR: Final = 0x1
ENHANCE_YOUR_CALM: Final = 0xB
#: Connections a server holds at most when nothing lower is configured.
DEFAULT_MAX_CONNECTIONS: Final = 10_000
#: Go's server keepalive enforcement: a ping without streams within this of the previous one
#: is a strike (grpc-go ``defaultPingTimeout``).
_NO_STREAM_PING_WINDOW: Final = 7200.0


@final
class BoundaryLimits(msgspec.Struct, frozen=True, kw_only=True):
    """Limits one server holds every connection to (seconds, bytes; 0 turns a rule off).

    The defaults suit production; :func:`~bobravoz.runtime.hub.main.hub_settings` reads the
    hub's from its environment (names in the README).
    """

    #: Connections open at once; 0: :data:`DEFAULT_MAX_CONNECTIONS`. Either way no more than
    #: the open-files limit leaves room for (:func:`connection_bound`).
    max_connections: int = 0
    #: Connections open at once from one client address (0: no separate bound). Unix-socket
    #: clients share no address and are only held to ``max_connections``.
    max_connections_per_peer: int = 512
    #: Connections the kernel queues for ``accept()`` (grpclib's default, 100, drops the SYNs
    #: of a burst of connections, which then wait a second to retry; capped by somaxconn).
    listen_backlog: int = 1024
    #: Concurrent streams one connection may open (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS).
    max_streams_per_connection: int = 100
    #: Concurrent streams across one client address's connections (0: no separate bound).
    max_streams_per_peer: int = 0
    #: Seconds from accepting a connection to its first request's HEADERS (TLS handshake,
    #: HTTP/2 preface and SETTINGS included).
    handshake_timeout: float = 10.0
    #: Seconds a connection may have no stream before GOAWAY(NO_ERROR) closes it.
    idle_timeout: float = 300.0
    #: Seconds without reading anything before the server pings the peer.
    keepalive_time: float = 300.0
    #: Seconds the peer has to answer (send anything) after a keepalive ping.
    keepalive_timeout: float = 20.0
    #: Shortest interval between a peer's PINGs while it has streams (Go: MinTime 5 s).
    ping_min_interval: float = 5.0
    #: Whether a peer may ping while it has no stream (Go: PermitWithoutStream false).
    ping_without_streams: bool = False
    #: Ping policy violations tolerated before GOAWAY(ENHANCE_YOUR_CALM) (Go: 2).
    max_ping_strikes: int = 2
    #: Streams the peer may reset at once (the budget's size; 0: no budget).
    reset_burst: int = 200
    #: Resets a second the budget refills by.
    reset_rate: float = 20.0
    #: Largest request header list (HTTP/2 SETTINGS_MAX_HEADER_LIST_SIZE, enforced from the
    #: first frame: GOAWAY(ENHANCE_YOUR_CALM) past it).
    max_header_list_bytes: int = 16 * 1024
    #: Largest gRPC message received, checked on its length prefix before it is buffered.
    max_recv_bytes: int = 16 * MIB
    #: Largest gRPC message sent; a larger one ends its stream with RESOURCE_EXHAUSTED.
    max_send_bytes: int = 16 * MIB
    #: HTTP/2 receive window of each stream: what one stream's peer may send unread.
    stream_window: int = 4 * MIB
    #: HTTP/2 receive window of each connection.
    connection_window: int = 16 * MIB
    #: Bytes a connection acknowledges as they arrive, before the stream they belong to is
    #: read: a stream whose reader lags holds its own window, not its connection's.
    read_ahead_bytes: int = 32 * MIB
    #: Bytes queued for a peer that keeps sending but stopped reading (acks, refusals pile
    #: up) before its connection is dropped; writes of data pause far below it (64 KiB).
    max_write_backlog: int = 1 * MIB
    #: Seconds a closing connection may take to flush and close before it is aborted.
    close_grace: float = 5.0

    def __post_init__(self) -> None:
        for name in (
            "max_connections",
            "max_connections_per_peer",
            "max_streams_per_peer",
            "max_ping_strikes",
            "reset_burst",
            "max_write_backlog",
            "handshake_timeout",
            "idle_timeout",
            "keepalive_time",
            "keepalive_timeout",
            "ping_min_interval",
            "reset_rate",
            "close_grace",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        if self.listen_backlog < 1:
            raise ValueError("listen_backlog must be at least 1")
        if not 1 <= self.max_streams_per_connection <= 2**31 - 1:
            raise ValueError("max_streams_per_connection must be in 1..2**31-1")
        for name in ("stream_window", "connection_window"):
            if not 65_535 <= getattr(self, name) <= 2**31 - 1:
                raise ValueError(f"{name} must be in 65535..2**31-1 (HTTP/2)")
        if not 1024 <= self.max_header_list_bytes <= 2**31 - 1:
            raise ValueError("max_header_list_bytes must be at least 1024")
        for name in ("max_recv_bytes", "max_send_bytes"):
            if not 1 <= getattr(self, name) <= 0xFFFFFFFF:
                raise ValueError(f"{name} must be in 1..2**32-1 (a gRPC length prefix)")
        if self.read_ahead_bytes < 0:
            raise ValueError("read_ahead_bytes must not be negative")


@final
@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a connection or a stream is refused: ``reason`` is the metric label, ``message``
    the GOAWAY debug data or the gRPC status message, ``code`` the HTTP/2 error code of the
    GOAWAY (:data:`NO_ERROR`, :data:`ENHANCE_YOUR_CALM`, ...)."""

    reason: str
    message: str
    code: int = NO_ERROR


#: Sweep verdicts besides a :class:`Refusal`: send a keepalive PING; drop a connection that
#: did not finish closing within the grace period.
Action = Refusal | Literal["ping", "abort"]


def open_files_limit(*, raise_soft: bool = False) -> int | None:
    """This process's open-files limit (RLIMIT_NOFILE, soft), None when unlimited or unknown.

    With ``raise_soft`` the soft limit is first raised to the hard one, as Go's runtime does
    at start-up (a server's connections are bounded below it, see :func:`connection_bound`).
    """
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if raise_soft and soft != hard:
            with contextlib.suppress(ValueError, OSError):
                resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
                soft = hard
    except (OSError, ValueError):
        return None
    return None if soft == resource.RLIM_INFINITY else soft


def connection_bound(configured: int, files_limit: int | None) -> int:
    """Connections a server may hold: ``configured`` (0: :data:`DEFAULT_MAX_CONNECTIONS`),
    and never so many that accepting one more could run out of file descriptors (an eighth of
    ``files_limit``, at least 64, stays for everything else the process opens)."""
    bound = configured or DEFAULT_MAX_CONNECTIONS
    if files_limit is not None:
        bound = min(bound, files_limit - max(64, files_limit // 8))
    return max(1, bound)


@final
class ConnectionState:
    """What the guard knows of one connection. ``handle`` is the bridge's (it carries the
    verdicts out); None until the connection is set up (TLS handshake done)."""

    __slots__ = (
        "closing_since",
        "handle",
        "idle_since",
        "last_ping_at",
        "last_read",
        "open_streams",
        "opened_at",
        "peer",
        "ping_progress",
        "ping_sent_at",
        "ping_strikes",
        "reads",
        "reads_seen",
        "requests",
        "reset_at",
        "reset_tokens",
    )

    def __init__(self, peer: str | None, now: float, reset_burst: int) -> None:
        self.peer = peer
        self.opened_at = now
        self.handle: object | None = None
        #: Request HEADERS received (admitted or not).
        self.requests = 0
        self.open_streams = 0
        self.idle_since = now
        #: Socket reads so far (bumped by the bridge; the sweep turns changes into times).
        self.reads = 0
        self.reads_seen = 0
        self.last_read = now
        self.ping_sent_at: float | None = None
        self.ping_strikes = 0
        self.last_ping_at: float | None = None
        #: What the server had sent at the peer's previous PING (data and streams).
        self.ping_progress = 0
        self.reset_tokens = float(reset_burst)
        self.reset_at = now
        self.closing_since: float | None = None


@final
@dataclass(frozen=True, slots=True)
class GuardStatistics:
    """A snapshot: connections open, the most from one address, refusals by reason."""

    connections: int
    busiest_peer: int
    refusals: dict[str, int]


@final
class ConnectionGuard:
    """The connection-level rules of one server (see the module docstring)."""

    def __init__(
        self,
        limits: BoundaryLimits,
        *,
        max_connections: int,
        refusals: collections.Counter[str] | None = None,
    ) -> None:
        self.limits = limits
        self.max_connections = max_connections
        #: Refusals by reason (a metrics family reads it; the guard only counts).
        self.refusals: collections.Counter[str] = (
            refusals if refusals is not None else collections.Counter()
        )
        self._states: set[ConnectionState] = set()
        self._per_peer: collections.Counter[str] = collections.Counter()
        self._peer_streams: collections.Counter[str] = collections.Counter()
        timeouts = [
            value
            for value in (
                limits.handshake_timeout,
                limits.idle_timeout,
                limits.keepalive_time,
                limits.keepalive_timeout,
            )
            if value > 0
        ]
        #: Seconds between two sweeps: a tenth of the shortest timeout, 50 ms to 1 s.
        self.sweep_interval = min(1.0, max(0.05, min(timeouts, default=10.0) / 10))

    # -- connections ------------------------------------------------------------------------

    def open(self, peer: str | None, now: float) -> ConnectionState | Refusal:
        """A new connection from ``peer`` (its address; None for a unix socket): its state,
        or the refusal to close it with (counted)."""
        if len(self._states) >= self.max_connections:
            return self.count(
                Refusal(
                    "max_connections",
                    f"the server holds {len(self._states)} connections, its limit",
                    ENHANCE_YOUR_CALM,
                )
            )
        per_peer = self.limits.max_connections_per_peer
        if peer is not None and per_peer and self._per_peer[peer] >= per_peer:
            return self.count(
                Refusal(
                    "max_connections_per_peer",
                    f"{peer} holds {self._per_peer[peer]} connections, the limit per client",
                    ENHANCE_YOUR_CALM,
                )
            )
        state = ConnectionState(peer, now, self.limits.reset_burst)
        self._states.add(state)
        if peer is not None:
            self._per_peer[peer] += 1
        return state

    def close(self, state: ConnectionState) -> None:
        """The connection is gone: forget it (idempotent)."""
        if state not in self._states:
            return
        self._states.discard(state)
        peer = state.peer
        if peer is not None:
            self._per_peer[peer] -= 1
            if self._per_peer[peer] <= 0:
                del self._per_peer[peer]
            if state.open_streams:
                self._peer_streams[peer] -= state.open_streams
                if self._peer_streams[peer] <= 0:
                    del self._peer_streams[peer]
        state.open_streams = 0

    def closing(self, state: ConnectionState, now: float) -> None:
        """The bridge is closing the connection: past ``close_grace`` it is aborted."""
        if state.closing_since is None:
            state.closing_since = now

    def count(self, refusal: Refusal) -> Refusal:
        """Count ``refusal`` under its reason; return it."""
        self.refusals[refusal.reason] += 1
        return refusal

    # -- streams ----------------------------------------------------------------------------

    def stream_requested(self, state: ConnectionState, now: float) -> Refusal | None:
        """A request's HEADERS arrived: None when the stream may open (it is counted open
        until :meth:`stream_closed`), else the stream's refusal (counted)."""
        state.requests += 1
        peer = state.peer
        limit = self.limits.max_streams_per_peer
        if peer is not None and limit and self._peer_streams[peer] >= limit:
            return self.count(
                Refusal(
                    "max_streams_per_peer",
                    f"{peer} has {self._peer_streams[peer]} streams open, the limit per client",
                )
            )
        state.open_streams += 1
        if peer is not None:
            self._peer_streams[peer] += 1
        return None

    def stream_closed(self, state: ConnectionState, now: float) -> None:
        """A stream :meth:`stream_requested` let open is over."""
        if state.open_streams <= 0:
            return
        state.open_streams -= 1
        if not state.open_streams:
            state.idle_since = now
        peer = state.peer
        if peer is not None and state in self._states:
            self._peer_streams[peer] -= 1
            if self._peer_streams[peer] <= 0:
                del self._peer_streams[peer]

    def stream_reset(self, state: ConnectionState, now: float) -> Refusal | None:
        """The peer reset a stream: None, or the connection's refusal when its reset budget
        is overdrawn (counted)."""
        burst = self.limits.reset_burst
        if not burst:
            return None
        tokens = state.reset_tokens + (now - state.reset_at) * self.limits.reset_rate
        state.reset_tokens = min(float(burst), tokens) - 1
        state.reset_at = now
        if state.reset_tokens >= 0:
            return None
        return self.count(
            Refusal(
                "rapid_reset",
                f"more than {burst} streams reset at a rate over "
                f"{self.limits.reset_rate:g} a second",
                ENHANCE_YOUR_CALM,
            )
        )

    # -- pings and time ---------------------------------------------------------------------

    def ping_received(self, state: ConnectionState, now: float, progress: int) -> Refusal | None:
        """The peer sent a PING; ``progress`` grows whenever the server sends data or opens a
        stream (any value that changes then). None, or ``too_many_pings`` (counted)."""
        last = state.last_ping_at
        state.last_ping_at = now
        if progress != state.ping_progress:
            state.ping_progress = progress
            state.ping_strikes = 0
            return None
        if last is not None:
            window = (
                _NO_STREAM_PING_WINDOW
                if state.open_streams == 0 and not self.limits.ping_without_streams
                else self.limits.ping_min_interval
            )
            if now - last < window:
                state.ping_strikes += 1
        if state.ping_strikes <= self.limits.max_ping_strikes:
            return None
        return self.count(Refusal("too_many_pings", "too_many_pings", ENHANCE_YOUR_CALM))

    def sweep(self, now: float) -> list[tuple[ConnectionState, Action]]:
        """What is due on every connection at ``now``: refusals (counted), keepalive pings,
        aborts of connections that did not close within the grace period."""
        limits = self.limits
        due: list[tuple[ConnectionState, Action]] = []
        for state in self._states:
            if state.handle is None:
                continue  # still in the TLS handshake: its own timeout applies
            if state.reads != state.reads_seen:
                state.reads_seen = state.reads
                state.last_read = now
                state.ping_sent_at = None
            if state.closing_since is not None:
                if now - state.closing_since >= limits.close_grace:
                    due.append((state, "abort"))
                continue
            refusal = self._due(state, now)
            if refusal is not None:
                due.append((state, self.count(refusal)))
            elif (
                limits.keepalive_time
                and state.ping_sent_at is None
                and now - state.last_read >= limits.keepalive_time
            ):
                state.ping_sent_at = now
                due.append((state, "ping"))
        return due

    def _due(self, state: ConnectionState, now: float) -> Refusal | None:
        limits = self.limits
        if not state.requests:
            if limits.handshake_timeout and now - state.opened_at >= limits.handshake_timeout:
                return Refusal(
                    "handshake_timeout",
                    f"no request within {limits.handshake_timeout:g} s of connecting",
                )
        elif (
            not state.open_streams
            and limits.idle_timeout
            and now - state.idle_since >= limits.idle_timeout
        ):
            return Refusal("idle_timeout", f"no stream for {limits.idle_timeout:g} s")
        if (
            state.ping_sent_at is not None
            and limits.keepalive_timeout
            and now - state.ping_sent_at >= limits.keepalive_timeout
        ):
            return Refusal(
                "keepalive_timeout",
                f"no answer to a keepalive ping within {limits.keepalive_timeout:g} s",
            )
        return None

    # -- reading ----------------------------------------------------------------------------

    def states(self) -> tuple[ConnectionState, ...]:
        """Every connection known now."""
        return tuple(self._states)

    def connections(self) -> int:
        """Connections open now (TLS handshakes under way included)."""
        return len(self._states)

    def statistics(self) -> GuardStatistics:
        """A snapshot of connections and refusals."""
        return GuardStatistics(
            connections=len(self._states),
            busiest_peer=max(self._per_peer.values(), default=0),
            refusals=dict(self.refusals),
        )


__all__ = [
    "DEFAULT_MAX_CONNECTIONS",
    "ENHANCE_YOUR_CALM",
    "NO_ERROR",
    "PROTOCOL_ERROR",
    "Action",
    "BoundaryLimits",
    "ConnectionGuard",
    "ConnectionState",
    "GuardStatistics",
    "Refusal",
    "connection_bound",
    "open_files_limit",
]
