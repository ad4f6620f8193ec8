"""The benchmark's baseline: a minimal grpclib relay with no actors and no validation.

It serves ``HubService.Process``; a stream whose ``current-step-id`` is ``consumer`` receives,
as ``ProcessResponse`` bytes, every ``ProcessRequest`` any other stream sends. That is the
least a hub could do, so the hub's throughput is reported as a ratio of this one's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

import grpclib.const
import grpclib.server

from bobravoz.runtime.grpc_bridge import ForwardingCodec, RawMessage

METHOD = "/transport.v1.HubService/Process"


class Relay:
    """Forwards producer messages to the connected consumer stream, as raw bytes."""

    def __init__(self) -> None:
        self.consumer: grpclib.server.Stream[Any, Any] | None = None
        self.consumer_ready = asyncio.Event()

    def __mapping__(self) -> dict[str, grpclib.const.Handler]:
        return {
            METHOD: grpclib.const.Handler(
                self.process, grpclib.const.Cardinality.STREAM_STREAM, RawMessage, RawMessage
            )
        }

    async def process(self, stream: grpclib.server.Stream[Any, Any]) -> None:
        await stream.send_initial_metadata()
        if (stream.metadata or {}).get("current-step-id") == "consumer":
            self.consumer = stream
            self.consumer_ready.set()
            async for _ in stream:
                pass
            return
        await self.consumer_ready.wait()
        consumer = self.consumer
        assert consumer is not None
        async for message in stream:
            await consumer.send_message(message)
        # returning ends the call with OK once every message was relayed


async def main(host: str, port: int) -> None:
    server = grpclib.server.Server([Relay()], codec=ForwardingCodec())
    await server.start(host, port)
    bound = server._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]  # noqa: SLF001
    print(json.dumps({"event": "ready", "listen": f"{host}:{bound}"}), flush=True)
    await server.wait_closed()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    asyncio.run(main(args.host, args.port))
