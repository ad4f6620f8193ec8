"""The connection guard's rules as plain functions of reported events and times.

Scope: :mod:`bobravoz.runtime.guard` (no I/O): connection counts, the first-request and idle
timeouts, keepalive, Go's ping policy, the rapid-reset budget, per-peer streams, and the
connection bound derived from the open-files limit; the settings' validation. The bridge
that reports the events and carries out the verdicts is covered over real sockets in
``tests/runtime/test_hostile_peers.py``.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bobravoz.runtime.envconfig import ConfigError
from bobravoz.runtime.guard import (
    DEFAULT_MAX_CONNECTIONS,
    ENHANCE_YOUR_CALM,
    NO_ERROR,
    BoundaryLimits,
    ConnectionGuard,
    ConnectionState,
    Refusal,
    connection_bound,
)
from bobravoz.runtime.hub import boundary_limits
from bobravoz.runtime.hub.main import hub_settings


def guard(max_connections: int = 100, **limits: object) -> ConnectionGuard:
    return ConnectionGuard(BoundaryLimits(**limits), max_connections=max_connections)  # type: ignore[arg-type]


def opened(
    guard: ConnectionGuard, peer: str | None = "10.0.0.1", now: float = 0.0
) -> ConnectionState:
    state = guard.open(peer, now)
    assert isinstance(state, ConnectionState)
    state.handle = object()  # set up (what the bridge does once the TLS handshake is done)
    return state


def swept(guard: ConnectionGuard, now: float) -> list[object]:
    return [
        action if not isinstance(action, Refusal) else action.reason
        for _, action in guard.sweep(now)
    ]


def test_connections_past_the_bounds_are_refused_and_counted() -> None:
    g = guard(max_connections=3, max_connections_per_peer=2)
    first, second = opened(g, "a"), opened(g, "a")
    refused = g.open("a", 0.0)
    assert isinstance(refused, Refusal)
    assert (refused.reason, refused.code) == ("max_connections_per_peer", ENHANCE_YOUR_CALM)
    third = opened(g, "b")
    refused = g.open("c", 0.0)
    assert isinstance(refused, Refusal)
    assert refused.reason == "max_connections"
    assert "3 connections" in refused.message
    assert g.refusals == {"max_connections_per_peer": 1, "max_connections": 1}
    g.close(first)
    g.close(first)  # idempotent
    assert g.connections() == 2
    assert isinstance(g.open("a", 0.0), ConnectionState)
    del second, third


def test_unix_socket_peers_are_only_held_to_the_total() -> None:
    g = guard(max_connections=5, max_connections_per_peer=1)
    for _ in range(5):
        opened(g, None)
    refused = g.open(None, 0.0)
    assert isinstance(refused, Refusal)
    assert refused.reason == "max_connections"


def test_a_connection_without_a_request_is_closed_at_the_handshake_timeout() -> None:
    g = guard(handshake_timeout=10.0, keepalive_time=0)
    quiet = opened(g)
    busy = opened(g)
    assert g.stream_requested(busy, 1.0) is None
    assert swept(g, 9.9) == []
    due = g.sweep(10.0)
    assert [(state, action.reason) for state, action in due if isinstance(action, Refusal)] == [
        (quiet, "handshake_timeout")
    ]
    assert g.refusals["handshake_timeout"] == 1


def test_a_connection_still_in_its_tls_handshake_is_left_to_asyncio() -> None:
    g = guard(handshake_timeout=1.0)
    state = g.open("a", 0.0)
    assert isinstance(state, ConnectionState)
    assert swept(g, 100.0) == []


def test_idle_connections_get_goaway_no_error_after_the_idle_timeout() -> None:
    g = guard(idle_timeout=60.0, keepalive_time=0)
    state = opened(g)
    assert g.stream_requested(state, 1.0) is None
    assert swept(g, 500.0) == []  # a stream is open: never idle
    g.stream_closed(state, 500.0)
    assert swept(g, 559.0) == []
    (action,) = [action for _, action in g.sweep(560.0)]
    assert isinstance(action, Refusal)
    assert (action.reason, action.code) == ("idle_timeout", NO_ERROR)


def test_keepalive_pings_after_silence_and_closes_without_an_answer() -> None:
    g = guard(keepalive_time=30.0, keepalive_timeout=5.0, idle_timeout=0)
    state = opened(g)
    g.stream_requested(state, 0.0)
    assert swept(g, 29.0) == []
    assert swept(g, 30.0) == ["ping"]
    assert swept(g, 34.0) == []
    state.reads += 1  # the peer answered (any frame)
    assert swept(g, 34.5) == []
    assert swept(g, 64.5) == ["ping"]
    assert swept(g, 69.5) == ["keepalive_timeout"]


def test_closing_connections_are_aborted_after_the_grace_period() -> None:
    g = guard(close_grace=5.0)
    state = opened(g)
    g.closing(state, 1.0)
    assert swept(g, 5.9) == []
    assert swept(g, 6.0) == ["abort"]


def test_go_ping_policy_without_streams() -> None:
    g = guard(max_ping_strikes=2)
    state = opened(g)
    verdicts = [g.ping_received(state, float(t), progress=0) for t in range(0, 40, 10)]
    assert verdicts[:3] == [None, None, None]  # the first is free, then two strikes
    refusal = verdicts[3]
    assert refusal is not None
    assert (refusal.reason, refusal.message, refusal.code) == (
        "too_many_pings",
        "too_many_pings",
        ENHANCE_YOUR_CALM,
    )


def test_pings_with_streams_need_min_interval_and_server_activity_forgives() -> None:
    g = guard(ping_min_interval=5.0, max_ping_strikes=2)
    state = opened(g)
    g.stream_requested(state, 0.0)
    # Every 5 s or more: never a strike.
    assert all(g.ping_received(state, t, 0) is None for t in (0.0, 5.0, 10.0, 20.0))
    # Faster: strikes, forgiven whenever the server sent something in between.
    for step in range(50):
        assert g.ping_received(state, 20.0 + step * 0.1, progress=step + 1) is None
    assert g.ping_received(state, 26.0, 50) is None
    assert g.ping_received(state, 26.1, 50) is None
    assert g.ping_received(state, 26.2, 50) is not None


@given(
    burst=st.integers(1, 50),
    rate=st.floats(0.0, 100.0),
    gaps=st.lists(st.floats(0.0, 0.5), min_size=1, max_size=300),
)
def test_the_reset_budget_admits_burst_plus_refill(
    burst: int, rate: float, gaps: list[float]
) -> None:
    g = guard(reset_burst=burst, reset_rate=rate)
    state = opened(g)
    now = 0.0
    allowed = 0
    for gap in gaps:
        now += gap
        if g.stream_reset(state, now) is not None:
            break
        allowed += 1
    else:
        return
    assert allowed >= burst  # a burst always passes
    assert allowed <= math.floor(burst + rate * now)  # never more than the refill allows
    assert g.refusals["rapid_reset"] == 1


def test_a_steady_reset_rate_within_the_refill_is_never_refused() -> None:
    g = guard(reset_burst=10, reset_rate=20.0)
    state = opened(g)
    assert all(g.stream_reset(state, i * 0.05) is None for i in range(10_000))


def test_a_burst_of_resets_is_refused() -> None:
    g = guard(reset_burst=200, reset_rate=20.0)
    state = opened(g)
    verdicts = [g.stream_reset(state, 1.0) for _ in range(201)]
    assert verdicts[:200] == [None] * 200
    refusal = verdicts[200]
    assert refusal is not None
    assert (refusal.reason, refusal.code) == ("rapid_reset", ENHANCE_YOUR_CALM)


def test_streams_per_peer_span_connections() -> None:
    g = guard(max_streams_per_peer=3)
    one, two = opened(g, "a"), opened(g, "a")
    other = opened(g, "b")
    assert [g.stream_requested(state, 0.0) for state in (one, two, one)] == [None] * 3
    refusal = g.stream_requested(two, 0.0)
    assert refusal is not None
    assert refusal.reason == "max_streams_per_peer"
    assert g.stream_requested(other, 0.0) is None
    g.stream_closed(one, 1.0)
    assert g.stream_requested(two, 1.0) is None
    g.close(two)  # its streams go with it
    assert g.stream_requested(one, 2.0) is None


def test_the_connection_bound_stays_below_the_open_files_limit() -> None:
    assert connection_bound(0, None) == DEFAULT_MAX_CONNECTIONS
    assert connection_bound(0, 256) == 192
    assert connection_bound(50, 256) == 50
    assert connection_bound(0, 1024) == 896
    assert connection_bound(0, 1 << 20) == DEFAULT_MAX_CONNECTIONS
    assert connection_bound(0, 40) == 1


@pytest.mark.parametrize(
    "changes",
    [
        {"handshake_timeout": -1.0},
        {"max_streams_per_connection": 0},
        {"stream_window": 1000},
        {"max_header_list_bytes": 100},
        {"max_recv_bytes": 0},
        {"reset_burst": -1},
    ],
)
def test_limits_are_validated(changes: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=next(iter(changes))):
        BoundaryLimits(**changes)  # type: ignore[arg-type]


def test_the_sweep_interval_follows_the_shortest_timeout() -> None:
    assert guard().sweep_interval == 1.0
    assert guard(handshake_timeout=2.0).sweep_interval == pytest.approx(0.2)
    assert guard(handshake_timeout=0.1).sweep_interval == 0.05


# -- the hub's environment -------------------------------------------------------------------


def test_the_hub_reads_its_boundary_from_the_environment() -> None:
    settings = hub_settings(
        {
            "BOBRAVOZ_HUB_MAX_CONNECTIONS": "500",
            "BOBRAVOZ_HUB_MAX_CONNECTIONS_PER_PEER": "0",
            "BOBRAVOZ_HUB_MAX_STREAMS_PER_PEER": "40",
            "BOBRAVOZ_HUB_HANDSHAKE_TIMEOUT": "2s",
            "BOBRAVOZ_HUB_IDLE_TIMEOUT": "1m30s",
            "BUBU_GRPC_KEEPALIVE_TIME": "45s",  # Go's shared name, when the hub's is unset
            "BUBU_HUB_KEEPALIVE_TIMEOUT": "7s",
            "BOBRAVOZ_HUB_RESET_BURST": "50",
            "BOBRAVOZ_HUB_RESET_RATE": "5",
            "BOBRAVOZ_HUB_MAX_HEADER_LIST_BYTES": "8192",
            "BUBU_HUB_MAX_RECV_BYTES": "1048576",
            "BUBU_GRPC_MAX_SEND_BYTES": "2097152",
            "BOBRAVOZ_HUB_MAX_METADATA_ENTRIES": "20",
            "BOBRAVOZ_HUB_MAX_METADATA_VALUE_BYTES": "512",
            "BOBRAVOZ_HUB_MAX_STREAM_DURATION": "24h",
        }
    )
    assert settings.boundary == BoundaryLimits(
        max_connections=500,
        max_connections_per_peer=0,
        max_streams_per_peer=40,
        handshake_timeout=2.0,
        idle_timeout=90.0,
        keepalive_time=45.0,
        keepalive_timeout=7.0,
        reset_burst=50,
        reset_rate=5.0,
        max_header_list_bytes=8192,
    )
    assert (settings.max_packet_bytes, settings.max_send_bytes) == (1 << 20, 2 << 20)
    assert (settings.max_metadata_entries, settings.max_metadata_value_bytes) == (20, 512)
    assert settings.max_stream_duration == 24 * 3600.0
    limits = boundary_limits(settings)
    assert (limits.max_recv_bytes, limits.max_send_bytes) == (1 << 20, 2 << 20)
    assert limits.max_streams_per_connection == settings.max_streams
    assert hub_settings({}).boundary == BoundaryLimits()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("BOBRAVOZ_HUB_HANDSHAKE_TIMEOUT", "soon"),
        ("BOBRAVOZ_HUB_MAX_CONNECTIONS", "-1"),
        ("BOBRAVOZ_HUB_MAX_HEADER_LIST_BYTES", "100"),
        ("BUBU_HUB_MAX_SEND_BYTES", "0"),
    ],
)
def test_malformed_boundary_settings_are_a_config_error_naming_them(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        hub_settings({name: value})
