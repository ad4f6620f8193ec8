"""grpclib at the level of HTTP/2 DATA: batched writes and bulk reads, on asyncio's own loop.

grpclib's ``send_message`` frames one message and makes one socket write; its
``recv_message`` awaits twice per message. The benchmark's clients and its baseline relay use
the layer below instead (grpclib's protocol ``Stream``): a write hands many length-prefixed
messages to one ``send_data`` (grpclib cuts it into HTTP/2 frames as flow control allows), and
a read takes every byte grpclib has buffered for the stream at once; the caller splits the
messages (:mod:`loadtests.benchwire`). This is what ``runtime/grpc_bridge.py`` does for the
hub (``_write_client`` / ``_write_server``), written again here because importing the bridge
would install trio-asyncio's loop policy. The private attributes used are grpclib 0.4's
(pinned in pyproject.toml) and are the ones the bridge's tests pin.
"""

from __future__ import annotations

from typing import Any

import grpclib.client
import grpclib.server
from grpclib.encoding.base import CodecBase

METHOD = "/transport.v1.HubService/Process"


class RawCodec(CodecBase):  # type: ignore[misc]
    """Messages are ``bytes`` both ways, never parsed."""

    __content_subtype__ = "proto"

    def encode(self, message: Any, message_type: Any) -> bytes:
        return bytes(message)

    def decode(self, data: bytes, message_type: Any) -> Any:
        return data


def binding_headers(storyrun: str, step: str, namespace: str = "default") -> dict[str, str]:
    """The request headers that bind a stream to one step of one StoryRun."""
    return {
        "bubu-transport-protocol": "1.0.0",
        "storyrun-name": storyrun,
        "storyrun-namespace": namespace,
        "current-step-id": step,
        "connector-generation": "1",
    }


async def read_chunk(stream: Any) -> bytes:
    """Every byte grpclib has buffered for ``stream`` (a grpclib client or server stream),
    waiting for at least one; ``b""`` once the peer ended the stream.

    The first ``recv_data(1)`` waits (and acknowledges the DATA frame it takes, as grpclib
    does); the second takes exactly what is already queued, so it never waits.
    """
    h2_stream = stream._stream  # noqa: SLF001
    first = await h2_stream.recv_data(1)
    if not first:
        return b""
    buffer = h2_stream.buffer
    queued = buffer._acked_size + sum(  # noqa: SLF001
        item.data_size
        for item in buffer._unacked._queue  # noqa: SLF001
    )
    if not queued:
        return first
    return first + await h2_stream.recv_data(queued)


async def write_client(stream: grpclib.client.Stream[Any, Any], data: bytes, count: int) -> None:
    """Send ``count`` framed messages (``data``) with one grpclib data write; the bookkeeping
    mirrors grpclib's ``send_message``."""
    with stream._wrapper:  # noqa: SLF001 - maps transport errors like send_message does
        await stream._stream.send_data(data)  # noqa: SLF001
    stream._send_message_done = True  # noqa: SLF001
    stream._messages_sent += count  # noqa: SLF001
    stream._stream.connection.messages_sent += count  # noqa: SLF001


async def write_server(stream: grpclib.server.Stream[Any, Any], data: bytes, count: int) -> None:
    """Server twin of :func:`write_client` (initial metadata must have been sent)."""
    await stream._stream.send_data(data)  # noqa: SLF001
    stream._send_message_done = True  # noqa: SLF001
    stream._messages_sent += count  # noqa: SLF001
    stream._stream.connection.messages_sent += count  # noqa: SLF001
