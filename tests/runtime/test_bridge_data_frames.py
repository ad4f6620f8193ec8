"""The bridge's DATA frame fast path (:func:`bobravoz.runtime.grpc_bridge._queue_data_frame`)
against h2's own ``send_data``, on pure h2 connections (no I/O).

Scope: for a stream that can send, the fast path produces the same bytes and charges the
same flow-control windows as h2; in every other case (half-closed or closed stream, a window
or the peer's frame size too small, a closing connection) it declines and changes nothing;
the peer's h2 reads what it wrote as the data it is.
"""

from __future__ import annotations

import h2.config
import h2.connection
import h2.events
import h2.settings
from hypothesis import given
from hypothesis import strategies as st

from bobravoz.runtime.grpc_bridge import _queue_data_frame

REQUEST = [(":method", "POST"), (":path", "/x"), (":scheme", "http"), (":authority", "a")]


def connected(*, window: int = 65535) -> tuple[h2.connection.H2Connection, ...]:
    """A client and a server connection that exchanged prefaces, with stream 1 open."""
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    server = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    client.initiate_connection()
    server.initiate_connection()
    server.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window})
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    server.receive_data(client.data_to_send())
    client.send_headers(1, REQUEST)
    server.receive_data(client.data_to_send())
    server.send_headers(1, [(":status", "200")])
    client.receive_data(server.data_to_send())
    client.data_to_send()
    server.data_to_send()
    return client, server


def windows(connection: h2.connection.H2Connection, stream_id: int) -> tuple[int, int]:
    return connection.outbound_flow_control_window, connection.local_flow_control_window(stream_id)


@given(
    chunks=st.lists(st.binary(max_size=3000), min_size=1, max_size=6),
    from_server=st.booleans(),
    half_closed_remote=st.booleans(),
)
def test_the_fast_path_writes_what_h2_writes(
    chunks: list[bytes], from_server: bool, half_closed_remote: bool
) -> None:
    fast_client, fast_server = connected()
    slow_client, slow_server = connected()
    if half_closed_remote:  # the client ended its side: the server still sends
        for client, server in ((fast_client, fast_server), (slow_client, slow_server)):
            client.end_stream(1)
            server.receive_data(client.data_to_send())
    if not from_server and half_closed_remote:
        from_server = True  # a half-closed client no longer sends (tested below)
    fast = fast_server if from_server else fast_client
    slow = slow_server if from_server else slow_client
    for chunk in chunks:
        assert _queue_data_frame(fast, 1, chunk)
        slow.send_data(1, chunk)
        assert windows(fast, 1) == windows(slow, 1)
    sent = fast.data_to_send()
    assert sent == slow.data_to_send()
    peer = fast_client if from_server else fast_server
    events = peer.receive_data(sent)
    received = b"".join(e.data for e in events if isinstance(e, h2.events.DataReceived))
    assert received == b"".join(chunks)


def test_the_fast_path_declines_what_h2_decides() -> None:
    client, server = connected(window=100)
    before = windows(client, 1)
    assert not _queue_data_frame(client, 1, bytes(101))  # over the stream's window
    assert not _queue_data_frame(client, 3, b"x")  # no such stream
    assert windows(client, 1) == before
    assert client.data_to_send() == b""
    client.end_stream(1)  # half-closed (local): h2 would refuse to send
    client.data_to_send()
    assert not _queue_data_frame(client, 1, b"x")
    assert not _queue_data_frame(server, 1, bytes(server.max_outbound_frame_size + 1))
    server.close_connection()
    server.data_to_send()
    assert not _queue_data_frame(server, 1, b"x")  # the connection is closed
    assert server.data_to_send() == b""
